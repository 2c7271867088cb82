"""The variational auto-encoder as a Keras model with its own train_step.

Inputs are flat vectors [..., D] in [0, 1]. A training batch may be a single
minibatch [M, D] or a block [K, M, D] of K minibatches: `train_step` then
applies K SGD updates inside one compiled call, which removes the per-step
dispatch overhead that dominates small-MLP training on CPU without changing
the sequence of updates.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_tf import estimators, networks
from vae_tf.config import ModelConfig

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="vae_tf")
class VAE(keras.Model):
  """AEVB with a diagonal-Gaussian q(z|x), an MLP p(x|z) and prior N(0, I)."""

  # Whether training batches must come with the training-set index of each
  # example (`vae_tf.data.pipeline.training_blocks(with_indices=True)`).
  needs_example_indices = False

  def __init__(self, config: ModelConfig, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    self.seed = seed
    self.encoder = networks.make_encoder(config)
    self.decoder = networks.make_decoder(config)
    self.estimator = estimators.ESTIMATORS[config.estimator]
    self.train_seed = keras.random.SeedGenerator(seed, name="train_seed")
    self.eval_seed = keras.random.SeedGenerator(self._eval_seed_start, name="eval_seed")
    # One running mean per term the estimator returns (elbo, reconstruction,
    # kl and, for IWAE, iwae_bound).
    self.term_trackers = [keras.metrics.Mean(name=name)
                          for name in estimators.TERM_NAMES[config.estimator]]
    self.encoder.build((None, config.event_size))
    self.decoder.build((None, config.latent_dim))
    self.built = True

  @property
  def _eval_seed_start(self) -> int:
    return self.seed + 1

  @property
  def prior(self) -> tfd.Distribution:
    zeros = tf.zeros([self.config.latent_dim])
    return tfd.Independent(tfd.Normal(zeros, 1.0), reinterpreted_batch_ndims=1)

  def encode(self, x) -> tfd.Distribution:
    return self.encoder(x)

  def decode(self, z) -> tfd.Distribution:
    return self.decoder(z)

  def elbo_terms(self, x, seed) -> estimators.ElboTerms | estimators.IwaeTerms:
    """Per-example ELBO, E log p(x|z), KL (and IWAE bound) for flat inputs x [batch, D]."""
    return self.estimator(x, self.encoder(x), self.decoder, self.prior,
                          self.config.num_samples, seed)

  @staticmethod
  def _next_seed(generator: keras.random.SeedGenerator) -> tf.Tensor:
    # TFP takes stateless seeds as int32 pairs; Keras keeps int64 state.
    return tf.cast(generator.next(), tf.int32)

  def reset_eval_seed(self) -> None:
    """Restarts the evaluation draws, so an evaluation depends on the weights alone."""
    # A SeedGenerator's state starts at [seed, 0] and counts up in slot 1.
    state = self.eval_seed.state
    state.assign(tf.constant([self._eval_seed_start, 0], dtype=state.dtype))

  def call(self, x, training=False):
    return self.elbo_terms(x, self._next_seed(self.eval_seed))._asdict()

  @property
  def metrics(self):
    return list(self.term_trackers)

  def _parameter_penalty(self):
    squares = [tf.reduce_sum(tf.square(v)) for v in self.trainable_variables]
    return 0.5 * self.config.weight_decay * tf.add_n(squares)

  def _sgd_update(self, x, seed) -> tf.Tensor:
    """One SGD update on minibatch x [M, D]; returns the metrics' values [3]."""
    x = tf.cast(x, tf.float32)
    with tf.GradientTape() as tape:
      terms = self.elbo_terms(x, seed)
      loss = -tf.reduce_mean(estimators.objective(terms))
      if self.config.weight_decay:
        loss += self._parameter_penalty()
      # The optimizer sums gradients over replicas; each contributes its
      # share of the global minibatch's mean.
      loss /= tf.distribute.get_strategy().num_replicas_in_sync
    variables = self.trainable_variables
    self.optimizer.apply(tape.gradient(loss, variables), variables)
    return tf.stack([tf.reduce_mean(t) for t in terms])

  def train_step(self, data):
    # `data` is x, or (x, example_indices) for a model that keeps state per
    # training example (`needs_example_indices`); each is a block [K, M, ...]
    # or, without the K axis, a single minibatch.
    block = tf.nest.map_structure(tf.convert_to_tensor, data)
    if tf.nest.flatten(block)[0].shape.rank == 2:
      block = tf.nest.map_structure(lambda t: t[tf.newaxis], block)
    num_updates = tf.shape(tf.nest.flatten(block)[0])[0]
    seed = self._next_seed(self.train_seed)

    def body(i, totals):
      update_seed = tf.random.experimental.stateless_fold_in(seed, i)
      minibatch = tf.nest.map_structure(lambda t: t[i], block)
      return i + 1, totals + self._sgd_update(minibatch, update_seed)

    totals = (tf.constant(0), tf.zeros([len(self.metrics)]))
    if tf.distribute.has_strategy():
      # A distributed optimizer step synchronises replicas through a
      # merge_call, which TF forbids inside a while_loop; distributed
      # training feeds single minibatches (`vae_tf.distribute`).
      if tf.nest.flatten(block)[0].shape[0] != 1:
        raise ValueError("distributed training takes one minibatch per step")
      totals = body(*totals)
    else:
      totals = tf.while_loop(lambda i, _: i < num_updates, body, totals)
    weight = tf.cast(num_updates, tf.float32)
    for tracker, total in zip(self.metrics, tf.unstack(totals[1])):
      tracker.update_state(total / weight, sample_weight=weight)
    return self._logs()

  def test_step(self, data):
    x = tf.convert_to_tensor(data, tf.float32)
    terms = self.elbo_terms(x, self._next_seed(self.eval_seed))
    for tracker, values in zip(self.metrics, terms):
      tracker.update_state(values)
    return self._logs()

  def _logs(self) -> dict[str, tf.Tensor]:
    logs = {m.name: m.result() for m in self.metrics}
    strategy = tf.distribute.get_strategy()
    if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()):
      # Keras 3.15 averages logs over workers with reduce(MEAN, axis=0),
      # which fails on scalars (keras-team/keras#20585): give it vectors.
      logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras 3.15's `fit` under MultiWorkerMirroredStrategy builds the model
    # from a first batch averaged across workers, which fails on per-replica
    # data (keras-team/keras#20585) and would consume that batch. Every
    # variable already exists (see __init__), so there is nothing to build.
    del iterator, data_batch

  def get_config(self):
    return {"config": self.config.to_dict(), "seed": self.seed, "name": self.name}

  @classmethod
  def from_config(cls, config):
    return cls(ModelConfig.from_dict(config.pop("config")), **config)
