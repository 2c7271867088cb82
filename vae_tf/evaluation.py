"""Held-out evaluation: the ELBO and two estimates of the log-likelihood.

The importance-sampled estimate (Burda et al., 2015, eq. 8) is
  log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,
with z_k ~ q(z|x). In expectation it is a lower bound on log p(x) that
tightens as K grows, and at K = 1 it is the single-sample estimator-A ELBO.

Memory is bounded by one (batch, chunk) block: the K samples are processed in
chunks whose log-weights are reduced with logsumexp and folded into a running
accumulator, so 10,000 MNIST images x 5000 samples run on a small machine.

The paper's own estimator (Appendix D, `hmc_marginal_log_likelihood`) needs
no recognition model, so it also scores Monte Carlo EM; it relies on HMC
mixing, which the paper found reliable for low-dimensional z only.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vae_tf import hmc, objectives, sampling

tfd = tfp.distributions

# One chunk holds batch_size * chunk_size decoder outputs of size D: for MNIST
# the defaults give 100 * 500 * 784 float32 logits = 157 MB, plus the hidden
# activations (100 MB for 500 units), which bounds peak memory to a few
# hundred MB whatever the dataset size or number of samples.
DEFAULT_BATCH_SIZE = 100
DEFAULT_CHUNK_SIZE = 500

# Compiled steps per model, so repeated calls reuse their XLA compilations.
# The steps reach the model through a weak reference and so do not keep it
# alive; captured variables are read at run time, so later training is seen.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(model, name: str, build: Callable) -> Callable:
  functions = _COMPILED.setdefault(model, {})
  if name not in functions:
    functions[name] = build(weakref.ref(model))
  return functions[name]


def _build_accumulate(model_ref: weakref.ref) -> Callable:

  @sampling.xla_function
  def accumulate(x_batch, log_total, weight_total, batch_seed, first_sample, num_chunk_samples):
    """Folds samples [first, first + num) into the running logsumexp and sum
    of the log-weights [batch]."""
    model = model_ref()
    posterior = model.encode(x_batch)

    def draw(k):
      return sampling.draw(posterior, tf.random.experimental.stateless_fold_in(batch_seed, k))

    # One seed per sample index, so a sample does not depend on its chunk.
    z = tf.map_fn(draw, first_sample + tf.range(num_chunk_samples),
                  fn_output_signature=tf.float32)  # [chunk, batch, latent]
    log_weights = objectives.log_importance_weights(
        x_batch, z, posterior, model.decode, model.prior)  # [chunk, batch]
    chunk_total = tf.reduce_logsumexp(log_weights, axis=0)
    return (tf.reduce_logsumexp(tf.stack([log_total, chunk_total]), axis=0),
            weight_total + tf.reduce_sum(log_weights, axis=0))

  return accumulate


def _build_elbo_terms(model_ref: weakref.ref) -> Callable:

  @sampling.xla_function
  def terms(x_batch, batch_seed):
    terms = model_ref().elbo_terms(x_batch, batch_seed)
    return tf.stack([terms.elbo, terms.reconstruction, terms.kl], axis=-1)  # [batch, 3]

  return terms


def _as_matrix(x) -> tf.Tensor:
  x = tf.convert_to_tensor(x, tf.float32)
  if x.shape.rank != 2:
    raise ValueError(f"x must be flat [N, D], got shape {x.shape}")
  return x


def _batches(x: tf.Tensor, batch_size: int) -> Iterator[tuple[int, tf.Tensor, int]]:
  """Yields (index, batch, num_real) with every batch padded to one shape.

  Padding the last batch keeps a single compiled shape, so XLA does not
  compile again for the remainder.
  """
  num_examples = int(x.shape[0])
  for index, start in enumerate(range(0, num_examples, batch_size)):
    batch = x[start:start + batch_size]
    num_real = int(batch.shape[0])
    if num_real < batch_size:
      batch = tf.pad(batch, [[0, batch_size - num_real], [0, 0]])
    yield index, batch, num_real


def _batch_seed(seed: int, index: int) -> tf.Tensor:
  # TFP takes stateless seeds as int32 pairs, as in `VAE._next_seed`.
  base = tf.constant([seed, 0], tf.int32)
  return tf.random.experimental.stateless_fold_in(base, index)


def importance_sampled_log_likelihood(model, x, num_samples: int = 5000,
                                      chunk_size: int = DEFAULT_CHUNK_SIZE,
                                      batch_size: int = DEFAULT_BATCH_SIZE,
                                      seed: int = 0) -> np.ndarray:
  """Per-example importance-sampled estimate of log p(x), in nats.

  Args:
    model: a `vae_tf.model.VAE` (anything with `encode`, `decode`, `prior`).
    x: flat data [N, D] in [0, 1], as a NumPy array or a tensor.
    num_samples: K, the number of importance samples per example.
    chunk_size: samples per compiled step; with `batch_size` it sets memory.
    batch_size: examples per compiled step (capped at N).
    seed: the estimate is a deterministic function of `seed` and `batch_size`.
      Sample k of a batch is drawn with a seed folded from (seed, batch index,
      k), so `chunk_size` changes only the floating-point summation order.

  Returns:
    float64 array [N] of log p(x) estimates.
  """
  return importance_sampled_scores(model, x, num_samples, chunk_size, batch_size,
                                   seed)["log_likelihood"]


def importance_sampled_scores(model, x, num_samples: int = 5000,
                              chunk_size: int = DEFAULT_CHUNK_SIZE,
                              batch_size: int = DEFAULT_BATCH_SIZE,
                              seed: int = 0) -> dict[str, np.ndarray]:
  """`importance_sampled_log_likelihood` and, from the same K draws, the
  ELBO (the mean log-weight, estimator A with L = K): float64 arrays [N]
  under "log_likelihood" and "elbo". Arguments as there.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  if chunk_size < 1 or batch_size < 1:
    raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
  x = _as_matrix(x)
  num_examples = int(x.shape[0])
  if num_examples == 0:
    return {"log_likelihood": np.zeros([0]), "elbo": np.zeros([0])}
  batch_size = min(batch_size, num_examples)
  chunk_size = min(chunk_size, num_samples)
  accumulate = _compiled(model, "accumulate", _build_accumulate)

  log_totals, weight_totals = [], []
  for index, batch, num_real in _batches(x, batch_size):
    batch_seed = _batch_seed(seed, index)
    log_total = tf.fill([batch_size], -np.inf)
    weight_total = tf.zeros([batch_size])
    for first in range(0, num_samples, chunk_size):
      # The chunk length is a Python int, static for XLA: a shorter last
      # chunk costs one extra compilation, not one per batch.
      count = min(chunk_size, num_samples - first)
      log_total, weight_total = accumulate(batch, log_total, weight_total, batch_seed,
                                           tf.constant(first), count)
    log_totals.append(log_total.numpy()[:num_real].astype(np.float64))
    weight_totals.append(weight_total.numpy()[:num_real].astype(np.float64))
  return {"log_likelihood": np.concatenate(log_totals) - math.log(num_samples),
          "elbo": np.concatenate(weight_totals) / num_samples}


def evaluate_elbo(model, x, batch_size: int = DEFAULT_BATCH_SIZE,
                  seed: int = 0) -> dict[str, float]:
  """Mean ELBO, E_q log p(x|z) and KL over x under the model's own estimator.

  Deterministic for a given `seed` and `batch_size`; draws the model's
  `config.num_samples` samples per example.
  """
  x = _as_matrix(x)
  num_examples = int(x.shape[0])
  if num_examples == 0:
    raise ValueError("x is empty")
  batch_size = min(batch_size, num_examples)
  terms = _compiled(model, "elbo_terms", _build_elbo_terms)

  totals = np.zeros([3])
  for index, batch, num_real in _batches(x, batch_size):
    values = terms(batch, _batch_seed(seed, index)).numpy()[:num_real]
    totals += values.astype(np.float64).sum(axis=0)
  elbo, reconstruction, kl = totals / num_examples
  return {"elbo": float(elbo), "reconstruction": float(reconstruction), "kl": float(kl)}


def _build_hmc_estimate(model_ref: weakref.ref) -> Callable:

  @sampling.xla_function
  def estimate(x_batch, batch_seed, num_chains, num_samples_per_chain, num_burnin_steps,
               num_leapfrog_steps, num_initial_proposals):
    """Appendix D's log p(x) [batch] from one run of the batch's chains."""
    model = model_ref()
    # [2R, C, batch, latent]
    z = hmc.sample_posterior(model, x_batch, 2 * num_samples_per_chain, num_burnin_steps,
                             batch_seed, num_chains=num_chains,
                             num_leapfrog_steps=num_leapfrog_steps,
                             num_initial_proposals=num_initial_proposals)
    # The first half of every chain fits q(z); the second half is the fresh draws.
    fit, fresh = z[:num_samples_per_chain], z[num_samples_per_chain:]
    q = _fit_gaussian(tf.reshape(fit, [-1, *fit.shape[2:]]))
    # One chain step at a time bounds memory to C * batch decoder outputs.
    log_ratios = tf.map_fn(lambda z_r: q.log_prob(z_r) - hmc.log_joint(model, x_batch, z_r),
                           fresh)  # [R, C, batch]
    num_fresh = num_samples_per_chain * num_chains
    log_ratios = tf.reshape(log_ratios, [num_fresh, -1])
    return math.log(num_fresh) - tf.reduce_logsumexp(log_ratios, axis=0)

  return estimate


def _fit_gaussian(z: tf.Tensor) -> tfd.Distribution:
  """N(mean, full covariance) of samples z [L, batch, latent], one per datapoint."""
  covariance = tfp.stats.covariance(z, sample_axis=0)  # [batch, latent, latent]
  # Jitter keeps the Cholesky factor finite should the draws be (nearly) flat
  # in some direction; 1e-6 is far below any posterior variance of interest.
  covariance += 1e-6 * tf.eye(z.shape[-1])
  return tfd.MultivariateNormalTriL(tf.reduce_mean(z, axis=0), tf.linalg.cholesky(covariance))


def hmc_marginal_log_likelihood(model, x, num_samples_per_chain: int = 250,
                                num_chains: int = 4, num_burnin_steps: int = 250,
                                num_leapfrog_steps: int = hmc.NUM_LEAPFROG_STEPS,
                                num_initial_proposals: int = 1000,
                                batch_size: int = DEFAULT_BATCH_SIZE,
                                seed: int = 0) -> np.ndarray:
  """Per-example log p(x) by the paper's estimator for low-dimensional z (Appendix D).

  For every datapoint x, with its own independent chains:
    1. draw posterior samples z ~ p(z|x) ∝ p(x|z) p(z) by HMC (`vae_tf.hmc`:
       chains started at prior draws resampled in proportion to p(x|z)
       (`hmc.initial_states`); `num_leapfrog_steps` leapfrog steps; a
       per-datapoint step size adapted toward acceptance 0.9 during burn-in,
       then fixed);
    2. fit a density q(z) to them: here a Gaussian with their mean and full
       covariance;
    3. draw L fresh posterior samples z_l (the chains run on) and estimate
         log p(x) ~= -log (1/L) sum_l q(z_l) / (p(z_l) p(x|z_l)),
       in log space with logsumexp.
  Step 3 is a harmonic-mean estimate with q in place of the prior: since
  E_{p(z|x)}[q(z) / (p(z) p(x|z))] = 1 / p(x) for any normalised q, it is
  consistent, and its variance is small when q is close to the posterior.

  Args:
    model: anything with `decode(z) -> p(x|z)` and `prior` (VAE, WakeSleep,
      MonteCarloEM); a recognition model is not used.
    x: flat data [N, D], as a NumPy array or a tensor.
    num_samples_per_chain: R; each of steps 2 and 3 uses L = R * num_chains
      draws per datapoint.
    num_chains: independent chains per datapoint.
    num_burnin_steps: HMC transitions discarded before step 1's draws.
    num_leapfrog_steps: leapfrog steps per HMC transition (10 in the paper).
    num_initial_proposals: prior draws each datapoint's chain starts are
      resampled from; 0 starts the chains at plain prior draws.
    batch_size: datapoints per compiled call (capped at N); the chains of a
      batch run in parallel.
    seed: the estimate is a deterministic function of `seed` and `batch_size`.

  Returns:
    float64 array [N] of log p(x) estimates.
  """
  for name, value in [("num_samples_per_chain", num_samples_per_chain),
                      ("num_chains", num_chains), ("num_leapfrog_steps", num_leapfrog_steps),
                      ("batch_size", batch_size)]:
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  for name, value in [("num_burnin_steps", num_burnin_steps),
                      ("num_initial_proposals", num_initial_proposals)]:
    if value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}")
  x = _as_matrix(x)
  num_examples = int(x.shape[0])
  if num_examples == 0:
    return np.zeros([0])
  estimate = _compiled(model, "hmc_estimate", _build_hmc_estimate)

  results = []
  for index, batch, num_real in _batches(x, min(batch_size, num_examples)):
    values = estimate(batch, _batch_seed(seed, index), num_chains, num_samples_per_chain,
                      num_burnin_steps, num_leapfrog_steps, num_initial_proposals)
    results.append(values.numpy()[:num_real].astype(np.float64))
  return np.concatenate(results)
