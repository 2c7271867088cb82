"""What AEVB, wake-sleep and Monte Carlo EM share: p(z) p(x|z) and the loop that fits it.

The three learners (`vae_tf.learners`) fit the same generative model, the
prior p(z) = N(0, I) and an MLP decoder p(x|z); they differ in how one
minibatch updates it. `Learner` holds the common part: the decoder, the
prior, the random-seed streams, the fused `train_step` and the workarounds
that Keras needs under multi-worker training. A subclass supplies the update
of one minibatch (`_sgd_update`) and the metrics it reports.
`AmortizedLearner` adds a recognition model q(z|x) and the ELBO it gives:
AEVB and wake-sleep have one; Monte Carlo EM does not.

Inputs are flat vectors [..., D] in [0, 1]. A training batch may be a single
minibatch [M, D] or a block [K, M, D] of K minibatches: `train_step` then
applies K updates inside one compiled call, which removes the per-step
dispatch overhead that dominates small-MLP training on CPU without changing
the sequence of updates.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vae_tf import networks, objectives, sampling
from vae_tf.config import ModelConfig, TrainConfig

tfd = tfp.distributions


class Learner(keras.Model):
  """A generative model p(z) p(x|z), fitted one minibatch at a time by `_sgd_update`."""

  # Whether training batches must come with the training-set index of each
  # example (`vae_tf.data.pipeline.training_blocks(with_indices=True)`).
  needs_example_indices = False

  def __init__(self, config: ModelConfig, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    self.seed = seed
    self._build_networks(config)
    self.train_seed = keras.random.SeedGenerator(seed, name="train_seed")
    self.eval_seed = keras.random.SeedGenerator(self._eval_seed_start, name="eval_seed")
    self.built = True

  @classmethod
  def for_training(cls, config: ModelConfig, train: TrainConfig) -> Learner:
    """The untrained model that `train` fits."""
    return cls(config, seed=train.seed)

  def _build_networks(self, config: ModelConfig) -> None:
    # Built here, so every variable exists before the first batch (see
    # `_maybe_symbolic_build`).
    self.decoder = networks.make_decoder(config)
    self.decoder.build((None, config.latent_dim))

  @property
  def _eval_seed_start(self) -> int:
    return self.seed + 1

  @property
  def prior(self) -> tfd.Distribution:
    zeros = tf.zeros([self.config.latent_dim])
    return tfd.Independent(tfd.Normal(zeros, 1.0), reinterpreted_batch_ndims=1)

  def decode(self, z) -> tfd.Distribution:
    return self.decoder(z)

  @staticmethod
  def _next_seed(generator: keras.random.SeedGenerator) -> tf.Tensor:
    # TFP takes stateless seeds as int32 pairs; Keras keeps int64 state.
    return tf.cast(generator.next(), tf.int32)

  def reset_eval_seed(self) -> None:
    """Restarts the evaluation draws, so an evaluation depends on the weights alone."""
    # A SeedGenerator's state starts at [seed, 0] and counts up in slot 1.
    state = self.eval_seed.state
    state.assign(tf.constant([self._eval_seed_start, 0], dtype=state.dtype))

  @property
  def metrics(self) -> list[keras.metrics.Metric]:
    """The running means `train_step` logs, one per value `_sgd_update` returns."""
    raise NotImplementedError

  def _sgd_update(self, minibatch, seed) -> tf.Tensor:
    """One update on `minibatch` (x [M, D], or (x, indices [M]) with
    `needs_example_indices`); returns the values of `metrics` [len(metrics)]."""
    raise NotImplementedError

  def _parameter_penalty(self):
    squares = [tf.reduce_sum(tf.square(v)) for v in self.trainable_variables]
    return 0.5 * self.config.weight_decay * tf.add_n(squares)

  @property
  def _traced_for_xla(self) -> bool:
    """Whether the step being traced now is one that `fit` compiles with XLA."""
    return self.jit_compile is True and not tf.executing_eagerly()

  def train_step(self, data):
    with sampling.compiled_by_xla(self._traced_for_xla):
      return self._train_step(data)

  def _train_step(self, data):
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
    # Keras's own would look for a compiled loss; say what is missing instead.
    raise ValueError(f"{type(self).__name__} has no recognition model, hence no ELBO to "
                     "validate on: train it without validation data")

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


class AmortizedLearner(Learner):
  """A learner with a recognition model q(z|x), a diagonal Gaussian, and so an ELBO.

  Its metrics are the ELBO's terms as the configured estimator
  (`vae_tf.objectives`) computes them: elbo, reconstruction, kl and, for
  IWAE, iwae_bound. Validation in `fit` and `call` report the same terms.
  """

  def __init__(self, config: ModelConfig, seed: int = 0, **kwargs):
    super().__init__(config, seed=seed, **kwargs)
    self.estimator = objectives.ESTIMATORS[config.estimator]
    self.term_trackers = [keras.metrics.Mean(name=name)
                          for name in objectives.TERM_NAMES[config.estimator]]

  def _build_networks(self, config: ModelConfig) -> None:
    # The encoder first: the optimizer checkpoints its slot variables by
    # position, in the order of the model's layers, and the decoder's initial
    # weights follow the encoder's in the seeded random stream.
    self.encoder = networks.make_encoder(config)
    self.encoder.build((None, config.event_size))
    super()._build_networks(config)

  def encode(self, x) -> tfd.Distribution:
    return self.encoder(x)

  def elbo_terms(self, x, seed) -> objectives.ElboTerms | objectives.IwaeTerms:
    """Per-example ELBO, E log p(x|z), KL (and IWAE bound) for flat inputs x [batch, D]."""
    return self.estimator(x, self.encoder(x), self.decoder, self.prior,
                          self.config.num_samples, seed)

  def call(self, x, training=False):
    return self.elbo_terms(x, self._next_seed(self.eval_seed))._asdict()

  @property
  def metrics(self):
    return list(self.term_trackers)

  def test_step(self, data):
    x = tf.convert_to_tensor(data, tf.float32)
    with sampling.compiled_by_xla(self._traced_for_xla):
      terms = self.elbo_terms(x, self._next_seed(self.eval_seed))
    for tracker, values in zip(self.metrics, terms):
      tracker.update_state(values)
    return self._logs()
