"""The variational auto-encoder, trained by AEVB (Kingma & Welling 2013, Algorithm 1).

`VAE` is the `AmortizedLearner` whose update ascends the estimated bound
itself: each minibatch takes one gradient step on the configured estimator
(`vae_tf.objectives`: SGVB A or B, or the IWAE bound) in the weights of both
networks together, plus the N(0, I) parameter prior as weight decay.
Everything else (the networks, the fused `train_step`, evaluation, saving)
is shared with the baselines in `vae_tf.learner_base`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_tf import objectives
from vae_tf.learner_base import AmortizedLearner


@keras.saving.register_keras_serializable(package="vae_tf")
class VAE(AmortizedLearner):
  """AEVB with a diagonal-Gaussian q(z|x), an MLP p(x|z) and prior N(0, I)."""

  def _sgd_update(self, x, seed) -> tf.Tensor:
    """One SGD update on minibatch x [M, D]; returns the metrics' values."""
    x = tf.cast(x, tf.float32)
    with tf.GradientTape() as tape:
      terms = self.elbo_terms(x, seed)
      loss = -tf.reduce_mean(objectives.training_objective(terms))
      if self.config.weight_decay:
        loss += self._parameter_penalty()
      # The optimizer sums gradients over replicas; each contributes its
      # share of the global minibatch's mean.
      loss /= tf.distribute.get_strategy().num_replicas_in_sync
    variables = self.trainable_variables
    self.optimizer.apply(tape.gradient(loss, variables), variables)
    return tf.stack([tf.reduce_mean(t) for t in terms])
