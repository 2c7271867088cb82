"""The wake-sleep algorithm (Hinton et al., 1995), the paper's first baseline.

Wake-sleep fits the same model as the VAE: recognition network q(z|x),
generative network p(x|z) and prior N(0, I). Only the update differs. Every
minibatch x takes one step on two objectives, each for one network:
  wake:  z ~ q(z|x), ascend log p(x|z) + log p(z) in the generative weights;
  sleep: z ~ p(z), x ~ p(x|z), ascend log q(z|x) in the recognition weights.
Neither is the ELBO, so it is reported alongside, computed exactly as the VAE
computes it (same estimator, same metric names), on the minibatch before the
update: the two learning curves are then directly comparable. The wake phase
reads it off its own draws (its log p(x|z) is the ELBO's reconstruction
term), so reporting it costs no extra pass through the networks.

`WakeSleep` is the VAE's sibling (both are `AmortizedLearner`s) and differs
from it in the update only: everything else (fused [K, M, D] blocks in
`train_step`, `test_step`, `encode`, `decode`, `prior`, `elbo_terms`,
saving) is shared, so the data pipeline, `fit` and `vae_tf.evaluation` work
on it unchanged.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_tf import objectives, sampling
from vae_tf.learner_base import AmortizedLearner


def _squared_norm(variables) -> tf.Tensor:
  return tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])


@keras.saving.register_keras_serializable(package="vae_tf")
class WakeSleep(AmortizedLearner):
  """Wake-sleep on the VAE's networks; the update of one minibatch is `_sgd_update`."""

  def _penalty(self, variables) -> tf.Tensor:
    # The VAE's N(0, I) parameter prior, split by network: the sum of the
    # two phases' penalties is the VAE's `_parameter_penalty`.
    return 0.5 * self.config.weight_decay * _squared_norm(variables)

  def wake_loss(self, x, seed) -> tuple[tf.Tensor, objectives.ElboTerms]:
    """-E_q log p(x|z) per example (+ weight decay) for the generative weights,
    and the ELBO's terms at the same draws.

    E_q log p(z), the rest of -E_q log p(x, z), is left out: with the prior
    fixed, its gradient in the generative weights is zero.
    """
    # q only proposes the z's here; no gradient reaches the recognition net.
    terms = self.estimator(x, self.encoder(x), lambda z: self.decoder(tf.stop_gradient(z)),
                           self.prior, self.config.num_samples, seed)
    loss = (-tf.reduce_mean(terms.reconstruction)
            + self._penalty(self.decoder.trainable_variables))
    return loss, terms

  def sleep_loss(self, batch_size, seed) -> tf.Tensor:
    """-log q(z|x) per example on dreams (z, x) ~ p (+ weight decay), for the recognition weights."""
    z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed))
    z = sampling.draw(self.prior, z_seed, [batch_size])
    # Dreamt data are targets, not functions of the generative weights.
    x = tf.stop_gradient(sampling.draw(self.decode(z), x_seed))
    return (-tf.reduce_mean(self.encode(x).log_prob(z))
            + self._penalty(self.encoder.trainable_variables))

  def _sgd_update(self, x, seed) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    wake_seed, sleep_seed = tf.unstack(tf.random.experimental.stateless_split(seed))
    generative = self.decoder.trainable_variables
    recognition = self.encoder.trainable_variables
    with tf.GradientTape() as tape:
      wake, terms = self.wake_loss(x, wake_seed)
    wake_gradients = tape.gradient(wake, generative)
    with tf.GradientTape() as tape:
      sleep = self.sleep_loss(tf.shape(x)[0], sleep_seed)
    sleep_gradients = tape.gradient(sleep, recognition)
    # One optimizer step for both phases, so `iterations` counts minibatches
    # as it does for the VAE.
    self.optimizer.apply(wake_gradients + sleep_gradients, generative + recognition)
    return tf.stack([tf.reduce_mean(t) for t in terms])
