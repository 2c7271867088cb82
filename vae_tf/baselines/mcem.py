"""Monte Carlo EM, the paper's second baseline (Kingma & Welling 2013, Appendix E).

MCEM fits the generative model p(x|z) p(z) alone, with no recognition model.
Its E-step draws z ~ p(z|x) ∝ p(x|z) p(z) by Hamiltonian Monte Carlo; its
M-step ascends log p(x, z) at those draws in the generative weights, plus the
same N(0, I) parameter prior (weight decay) as AEVB. As in Appendix E, each
sampling round is one HMC transition of 10 leapfrog steps, whose step size
TFP's `SimpleStepSizeAdaptation` steers toward 90% acceptance, followed by 5
weight updates with the acquired sample.

Before the first counted round the chains warm up (Appendix E describes
none; without it the first rounds run at the initial step size, far from its
target): HMC transitions at the initial weights, adapting the step size four
times as fast as the rounds do, until the chains' mean acceptance is within
0.02 of 90% (at least 10, at most 100 transitions). No weight moves during
the warm-up, so it is not charged as examples seen; `warmup_transitions` and
`warmup_acceptance` record what it took and reached. The first M-steps then
sharpen the posteriors, so the acceptance dips again until the rounds'
adaptation catches up (tests/vae_tf/baselines/test_mcem.py measures both).

Chains persist: every training example keeps its own z from round to round,
in `latent_chains`, indexed by its position in the training set, so a chain
picks up where its example's last round left it. This per-example state is
why MCEM is not an on-line algorithm. One step size, shared by all chains,
carries over between rounds and keeps adapting, because the target p(z|x)
moves with every M-step.

`MonteCarloEM` is a `Learner` with no recognition model, so it has no
`encode` and no ELBO: train it without validation data and score it with
`vae_tf.evaluation.hmc_marginal_log_likelihood`. It shares the other
learners' training loop (fused blocks, seeds, metric trackers, checkpoints):
one minibatch of `train_step` is one sampling round, so
`optimizer.iterations` counts rounds.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_tf import hmc, networks
from vae_tf.config import ModelConfig, TrainConfig
from vae_tf.learner_base import Learner

WEIGHT_UPDATES_PER_ROUND = 5
INITIAL_STEP_SIZE = 0.1
WARMUP_ADAPTATION_RATE = 4 * hmc.ADAPTATION_RATE
WARMUP_MIN_TRANSITIONS = 10
WARMUP_MAX_TRANSITIONS = 100
WARMUP_TOLERANCE = 0.02


@keras.saving.register_keras_serializable(package="vae_tf")
class MonteCarloEM(Learner):
  """MCEM on the VAE's generative network, one persistent HMC chain per training example."""

  needs_example_indices = True

  def __init__(self, config: ModelConfig, num_train_examples: int, seed: int = 0, **kwargs):
    super().__init__(config, seed=seed, **kwargs)
    self.num_train_examples = num_train_examples
    # Created outside the model's name scope, so their paths (the checkpoint
    # keys of `vae_tf.training`) do not depend on the model's unique name.
    self.latent_chains = keras.Variable(
        keras.initializers.RandomNormal(stddev=1.0, seed=seed),  # prior draws
        shape=(num_train_examples, config.latent_dim), trainable=False, name="latent_chains")
    self.step_size = keras.Variable(INITIAL_STEP_SIZE, trainable=False, name="hmc_step_size")
    self.warmup_transitions = keras.Variable(0, dtype="int32", trainable=False,
                                             name="warmup_transitions")
    self.warmup_acceptance = keras.Variable(0.0, trainable=False, name="warmup_acceptance")
    self.log_joint_tracker = keras.metrics.Mean(name="log_joint")
    self.acceptance_tracker = keras.metrics.Mean(name="acceptance")
    self.step_size_tracker = keras.metrics.Mean(name="step_size")

  @classmethod
  def for_training(cls, config: ModelConfig, train: TrainConfig) -> MonteCarloEM:
    return cls(config, train.train_examples, seed=train.seed)

  def _build_networks(self, config: ModelConfig) -> None:
    # The learners with an encoder create it first, and each initializer
    # takes the next seed of the run's random stream. Creating one here too,
    # never built or kept, starts all three learners from the same p(x|z)
    # at the same seed.
    networks.make_encoder(config)
    super()._build_networks(config)

  @property
  def metrics(self):
    return [self.log_joint_tracker, self.acceptance_tracker, self.step_size_tracker]

  def _warm_up(self, x, indices, seed) -> tf.Tensor:
    """Transitions at fixed weights until the acceptance is near its target;
    returns how many it took."""

    def transition(i, z, step_size, used_step_size, acceptance):
      kernel = hmc.adaptive_hmc(lambda z: hmc.log_joint(self, x, z), step_size,
                                num_adaptation_steps=1, adaptation_rate=WARMUP_ADAPTATION_RATE)
      z, results = kernel.one_step(z, kernel.bootstrap_results(z),
                                   seed=tf.random.experimental.stateless_fold_in(seed, i))
      return (i + 1, z, results.new_step_size, step_size,
              tf.reduce_mean(hmc.acceptance_probability(results)))

    def adapting(i, z, step_size, used_step_size, acceptance):
      off_target = tf.abs(acceptance - hmc.TARGET_ACCEPT_PROB) > WARMUP_TOLERANCE
      return (i < WARMUP_MIN_TRANSITIONS) | ((i < WARMUP_MAX_TRANSITIONS) & off_target)

    step_size = tf.convert_to_tensor(self.step_size)
    transitions, z, _, used_step_size, acceptance = tf.while_loop(
        adapting, transition,
        (tf.constant(0), tf.gather(self.latent_chains, indices), step_size, step_size,
         tf.constant(0.0)))
    self.latent_chains.assign(
        tf.tensor_scatter_nd_update(self.latent_chains, indices[:, tf.newaxis], z))
    # The step size that reached the acceptance, not the one adapted after it.
    self.step_size.assign(used_step_size)
    self.warmup_transitions.assign(transitions)
    self.warmup_acceptance.assign(acceptance)
    return transitions

  def sampler_report(self) -> dict[str, float | int]:
    """The step size and how the warm-up ended, for learning curves."""
    return {"hmc_step_size": float(self.step_size.numpy()),
            "warmup_transitions": int(self.warmup_transitions.numpy()),
            "warmup_acceptance": round(float(self.warmup_acceptance.numpy()), 4)}

  def _sgd_update(self, minibatch, seed) -> tf.Tensor:
    """One sampling round on the examples of `minibatch` = (x [M, D], indices [M]).

    Returns the mean log p(x, z) at the round's draws (before the weight
    updates), the mean HMC acceptance probability and the step size used.
    """
    x, indices = minibatch
    x = tf.cast(x, tf.float32)
    warmup_seed, seed = tf.unstack(tf.random.experimental.stateless_split(seed))
    tf.cond(tf.equal(self.warmup_transitions, 0),
            lambda: self._warm_up(x, indices, warmup_seed), lambda: tf.constant(0))
    step_size = tf.convert_to_tensor(self.step_size)
    # A fresh kernel each round, started at the stored step size: its one
    # transition adapts, so the step size keeps adapting across rounds.
    kernel = hmc.adaptive_hmc(lambda z: hmc.log_joint(self, x, z), step_size,
                              num_adaptation_steps=1)
    z = tf.gather(self.latent_chains, indices)
    z, results = kernel.one_step(z, kernel.bootstrap_results(z), seed=seed)
    self.step_size.assign(results.new_step_size)
    self.latent_chains.assign(
        tf.tensor_scatter_nd_update(self.latent_chains, indices[:, tf.newaxis], z))

    generative = self.trainable_variables
    for _ in range(WEIGHT_UPDATES_PER_ROUND):
      with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(hmc.log_joint(self, x, z))
        if self.config.weight_decay:
          loss += self._parameter_penalty()
      self.optimizer.apply(tape.gradient(loss, generative), generative)
    # `iterations` counts rounds, as the data stream and checkpoints of
    # `vae_tf.training` count minibatches. Adagrad and SGD do not read it
    # (Adam's bias correction would see rounds, not updates).
    self.optimizer.iterations.assign_sub(WEIGHT_UPDATES_PER_ROUND - 1)

    log_joint = results.inner_results.accepted_results.target_log_prob
    return tf.stack([tf.reduce_mean(log_joint),
                     tf.reduce_mean(hmc.acceptance_probability(results)), step_size])

  def get_config(self):
    return {**super().get_config(), "num_train_examples": self.num_train_examples}
