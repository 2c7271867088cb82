"""The two SGVB estimators of the evidence lower bound (paper section 2.3).

Both return per-example terms averaged over L samples z ~ q(z|x):
  A (eq. 6): elbo = log p(x|z) + log p(z) - log q(z|x), all Monte Carlo;
  B (eq. 7): elbo = -KL(q(z|x) || p(z)) + log p(x|z), KL in closed form
             (Appendix B), which usually has lower variance.
`kl` is the Monte Carlo estimate log q(z|x) - log p(z) under A.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

Decoder = Callable[[tf.Tensor], tfd.Distribution]


class ElboTerms(NamedTuple):
  elbo: tf.Tensor  # [batch]
  reconstruction: tf.Tensor  # [batch], E_q log p(x|z)
  kl: tf.Tensor  # [batch]


def sgvb_a(x, posterior: tfd.Distribution, decoder: Decoder, prior: tfd.Distribution,
           num_samples: int, seed) -> ElboTerms:
  z = posterior.sample(num_samples, seed=seed)  # [L, batch, latent]
  reconstruction = tf.reduce_mean(decoder(z).log_prob(x), axis=0)
  kl = tf.reduce_mean(posterior.log_prob(z) - prior.log_prob(z), axis=0)
  return ElboTerms(reconstruction - kl, reconstruction, kl)


def sgvb_b(x, posterior: tfd.Distribution, decoder: Decoder, prior: tfd.Distribution,
           num_samples: int, seed) -> ElboTerms:
  z = posterior.sample(num_samples, seed=seed)
  reconstruction = tf.reduce_mean(decoder(z).log_prob(x), axis=0)
  kl = tfd.kl_divergence(posterior, prior)
  return ElboTerms(reconstruction - kl, reconstruction, kl)


ESTIMATORS = {"A": sgvb_a, "B": sgvb_b}
