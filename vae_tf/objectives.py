"""The training objectives: SGVB estimators A and B of the ELBO, and the IWAE bound.

Each estimator takes draws z ~ q(z|x) and returns per-example terms:
  A (Kingma & Welling eq. 6): elbo = mean_L [log p(x|z) + log p(z) - log q(z|x)];
  B (eq. 7): elbo = -KL(q(z|x) || p(z)) + mean_L log p(x|z), the KL in closed
     form (Appendix B), which usually has lower variance;
  iwae (Burda et al. 2015, eq. 8): iwae_bound = log mean_k w_k with the
     importance weights w_k = p(x, z_k) / q(z_k|x). It is >= the ELBO, equals
     estimator A at k = 1 and tightens toward log p(x) as k grows. Its terms
     also carry A's ELBO of the same k draws, so curves stay comparable.
`kl` is the Monte Carlo estimate log q(z|x) - log p(z) where it is not exact.

`log_importance_weights` is the one place the log-weights are written: the
IWAE bound, `vae_tf.evaluation`'s IS log p(x) and the exported `score`
signature all call it.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from vae_tf import sampling

tfd = tfp.distributions

Decoder = Callable[[tf.Tensor], tfd.Distribution]


class ElboTerms(NamedTuple):
  elbo: tf.Tensor  # [batch]
  reconstruction: tf.Tensor  # [batch], E_q log p(x|z)
  kl: tf.Tensor  # [batch]


class IwaeTerms(NamedTuple):
  elbo: tf.Tensor  # [batch], estimator A on the k draws
  reconstruction: tf.Tensor
  kl: tf.Tensor
  iwae_bound: tf.Tensor  # [batch], the objective


def training_objective(terms: ElboTerms | IwaeTerms) -> tf.Tensor:
  """The per-example bound that training ascends."""
  return terms.iwae_bound if isinstance(terms, IwaeTerms) else terms.elbo


def log_weight_terms(x, z, posterior: tfd.Distribution, decoder: Decoder,
                     prior: tfd.Distribution) -> tuple[tf.Tensor, tf.Tensor]:
  """log p(x|z) and log q(z|x) - log p(z) for draws z [K, batch, latent]: [K, batch] each."""
  return decoder(z).log_prob(x), posterior.log_prob(z) - prior.log_prob(z)


def log_importance_weights(x, z, posterior: tfd.Distribution, decoder: Decoder,
                           prior: tfd.Distribution) -> tf.Tensor:
  """log w = log p(x|z) + log p(z) - log q(z|x) for draws z [K, batch, latent]: [K, batch]."""
  reconstruction, log_ratio = log_weight_terms(x, z, posterior, decoder, prior)
  return reconstruction - log_ratio


def sgvb_a(x, posterior: tfd.Distribution, decoder: Decoder, prior: tfd.Distribution,
           num_samples: int, seed) -> ElboTerms:
  z = sampling.draw(posterior, seed, [num_samples])  # [L, batch, latent]
  reconstruction, kl = (tf.reduce_mean(t, axis=0)
                        for t in log_weight_terms(x, z, posterior, decoder, prior))
  return ElboTerms(reconstruction - kl, reconstruction, kl)


def sgvb_b(x, posterior: tfd.Distribution, decoder: Decoder, prior: tfd.Distribution,
           num_samples: int, seed) -> ElboTerms:
  z = sampling.draw(posterior, seed, [num_samples])
  reconstruction = tf.reduce_mean(decoder(z).log_prob(x), axis=0)
  kl = tfd.kl_divergence(posterior, prior)
  return ElboTerms(reconstruction - kl, reconstruction, kl)


def iwae(x, posterior: tfd.Distribution, decoder: Decoder, prior: tfd.Distribution,
         num_samples: int, seed) -> IwaeTerms:
  z = sampling.draw(posterior, seed, [num_samples])  # [k, batch, latent]
  reconstruction, log_ratio = log_weight_terms(x, z, posterior, decoder, prior)
  log_weights = reconstruction - log_ratio
  bound = tf.reduce_logsumexp(log_weights, axis=0) - math.log(num_samples)
  reconstruction, kl = tf.reduce_mean(reconstruction, axis=0), tf.reduce_mean(log_ratio, axis=0)
  return IwaeTerms(reconstruction - kl, reconstruction, kl, bound)


ESTIMATORS = {"A": sgvb_a, "B": sgvb_b, "iwae": iwae}
# The per-example terms each estimator returns, named as the model logs them.
TERM_NAMES = {"A": ElboTerms._fields, "B": ElboTerms._fields, "iwae": IwaeTerms._fields}
