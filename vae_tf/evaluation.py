"""Held-out evaluation: the ELBO and importance-sampled log-likelihood.

The importance-sampled estimate (Burda et al., 2015, eq. 8) is
  log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,
with z_k ~ q(z|x). In expectation it is a lower bound on log p(x) that
tightens as K grows, and at K = 1 it is the single-sample estimator-A ELBO.

Memory is bounded by one (batch, chunk) block: the K samples are processed in
chunks whose log-weights are reduced with logsumexp and folded into a running
accumulator, so 10,000 MNIST images x 5000 samples run on a small machine.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

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

  @tf.function(jit_compile=True)
  def accumulate(x_batch, log_total, batch_seed, first_sample, num_chunk_samples):
    """Folds samples [first, first + num) into the running logsumexp [batch]."""
    model = model_ref()
    posterior = model.encode(x_batch)

    def draw(k):
      return posterior.sample(seed=tf.random.experimental.stateless_fold_in(batch_seed, k))

    # One seed per sample index, so a sample does not depend on its chunk.
    z = tf.map_fn(draw, first_sample + tf.range(num_chunk_samples),
                  fn_output_signature=tf.float32)  # [chunk, batch, latent]
    log_weights = (model.decode(z).log_prob(x_batch) + model.prior.log_prob(z)
                   - posterior.log_prob(z))  # [chunk, batch]
    chunk_total = tf.reduce_logsumexp(log_weights, axis=0)
    return tf.reduce_logsumexp(tf.stack([log_total, chunk_total]), axis=0)

  return accumulate


def _build_elbo_terms(model_ref: weakref.ref) -> Callable:

  @tf.function(jit_compile=True)
  def terms(x_batch, batch_seed):
    return tf.stack(model_ref().elbo_terms(x_batch, batch_seed), axis=-1)  # [batch, 3]

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
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  if chunk_size < 1 or batch_size < 1:
    raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
  x = _as_matrix(x)
  num_examples = int(x.shape[0])
  if num_examples == 0:
    return np.zeros([0])
  batch_size = min(batch_size, num_examples)
  chunk_size = min(chunk_size, num_samples)
  accumulate = _compiled(model, "accumulate", _build_accumulate)

  results = []
  for index, batch, num_real in _batches(x, batch_size):
    batch_seed = _batch_seed(seed, index)
    log_total = tf.fill([batch_size], -np.inf)
    for first in range(0, num_samples, chunk_size):
      # The chunk length is a Python int, static for XLA: a shorter last
      # chunk costs one extra compilation, not one per batch.
      count = min(chunk_size, num_samples - first)
      log_total = accumulate(batch, log_total, batch_seed, tf.constant(first), count)
    results.append(log_total.numpy()[:num_real].astype(np.float64))
  return np.concatenate(results) - math.log(num_samples)


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
