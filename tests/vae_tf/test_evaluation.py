"""Importance-sampled log-likelihood and ELBO evaluation on tiny VAEs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from vae_tf import evaluation, objectives
from vae_tf.config import ModelConfig
from vae_tf.model import VAE

NUM_EXAMPLES = 25
# Copies of each example; rows of a batch draw independent samples, so the
# copies are independent replicates of every estimate.
REPLICATES = 80


def make_model(latent_dim: int = 2, likelihood: str = "bernoulli", seed: int = 2,
               num_samples: int = 1) -> VAE:
  # Glorot weights: the untrained q(z|x) is then a mediocre proposal, which
  # makes the gaps between the bounds for different k large enough to test.
  keras.utils.set_random_seed(seed)
  config = ModelConfig(input_shape=(4, 4), likelihood=likelihood, latent_dim=latent_dim,
                       hidden_units=(16,), init_stddev=None, num_samples=num_samples)
  return VAE(config, seed=0)


def make_data(num: int, likelihood: str = "bernoulli", seed: int = 0) -> np.ndarray:
  values = np.random.default_rng(seed).random((num, 16))
  if likelihood == "bernoulli":
    values = values < 0.5
  return values.astype(np.float32)


def many_sample_elbo(model: VAE, x: np.ndarray, num_samples: int = 5000) -> np.ndarray:
  """Per-example ELBO [N] with negligible Monte Carlo error (estimator B)."""
  x = tf.constant(x)
  return objectives.sgvb_b(x, model.encode(x), model.decode, model.prior, num_samples,
                           tf.constant([10, 11], tf.int32)).elbo.numpy()


@pytest.fixture(scope="module")
def model() -> VAE:
  return make_model()


@pytest.fixture(scope="module")
def data() -> np.ndarray:
  return make_data(NUM_EXAMPLES)


@pytest.fixture(scope="module")
def replicated_estimates(model, data) -> dict[int, np.ndarray]:
  """k -> [REPLICATES, NUM_EXAMPLES] estimates of log p(x) with k samples."""
  tiled = np.tile(data, (REPLICATES, 1))
  return {
      k: evaluation.importance_sampled_log_likelihood(
          model, tiled, num_samples=k, chunk_size=250, batch_size=500).reshape(
              REPLICATES, NUM_EXAMPLES)
      for k in (1, 10, 100, 1000)
  }


def test_estimate_increases_with_the_number_of_samples(replicated_estimates):
  for fewer, more in [(1, 10), (10, 100), (100, 1000)]:
    # With one seed, the first k samples of a row are shared across k, so
    # the difference is paired and its standard error small.
    difference = (replicated_estimates[more] - replicated_estimates[fewer]).ravel()
    standard_error = difference.std(ddof=1) / np.sqrt(difference.size)
    assert difference.mean() > 4.0 * standard_error, (fewer, more, difference.mean(),
                                                      standard_error)


def test_estimate_is_above_the_elbo(model, data, replicated_estimates):
  elbo = many_sample_elbo(model, data)
  estimate = replicated_estimates[1000].mean(axis=0)
  assert np.all(estimate > elbo), estimate - elbo
  assert estimate.mean() - elbo.mean() > 0.5  # a real gap, not noise


def test_one_sample_equals_the_estimator_a_elbo_in_expectation(model, data,
                                                               replicated_estimates):
  one_sample = replicated_estimates[1]
  x = tf.constant(data)
  estimator_a = objectives.sgvb_a(x, model.encode(x), model.decode, model.prior, 5000,
                                  tf.constant([12, 13], tf.int32)).elbo.numpy()
  standard_error = one_sample.mean(axis=1).std(ddof=1) / np.sqrt(REPLICATES)
  assert abs(one_sample.mean() - estimator_a.mean()) < 4.0 * standard_error, (
      one_sample.mean(), estimator_a.mean(), standard_error)


def test_deterministic_for_a_seed(model, data):
  first = evaluation.importance_sampled_log_likelihood(model, data, 300, chunk_size=100, seed=3)
  second = evaluation.importance_sampled_log_likelihood(model, tf.constant(data), 300,
                                                        chunk_size=100, seed=3)
  other_seed = evaluation.importance_sampled_log_likelihood(model, data, 300, chunk_size=100,
                                                            seed=4)
  assert first.shape == (NUM_EXAMPLES,) and first.dtype == np.float64
  np.testing.assert_array_equal(first, second)
  assert not np.allclose(first, other_seed)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 300])
def test_chunking_changes_only_the_summation_order(model, data, chunk_size):
  single_chunk = evaluation.importance_sampled_log_likelihood(model, data, 64, chunk_size=64)
  chunked = evaluation.importance_sampled_log_likelihood(model, data, 64, chunk_size=chunk_size)
  np.testing.assert_allclose(chunked, single_chunk, rtol=0, atol=1e-4)


def test_padding_the_last_batch_leaves_other_batches_alone(model, data):
  # 7 examples in batches of 3 pad the last batch; batches 0 and 1 see the
  # same seeds and shapes as with 6 examples.
  seven = evaluation.importance_sampled_log_likelihood(model, data[:7], 50, batch_size=3)
  six = evaluation.importance_sampled_log_likelihood(model, data[:6], 50, batch_size=3)
  assert seven.shape == (7,) and np.all(np.isfinite(seven))
  np.testing.assert_array_equal(seven[:6], six)


def test_rejects_bad_arguments(model, data):
  with pytest.raises(ValueError):
    evaluation.importance_sampled_log_likelihood(model, data.reshape(-1, 4, 4), 10)
  with pytest.raises(ValueError):
    evaluation.importance_sampled_log_likelihood(model, data, 0)


def exact_log_likelihood(model: VAE, x: np.ndarray) -> np.ndarray:
  """log p(x) = log int p(x|z) N(z; 0, 1) dz by the trapezoid rule, for a 1-D z.

  The integrand is smooth and negligible beyond |z| = 15 (the prior alone is
  below e^-112 there), so 30,001 points are accurate to far below 1e-3 nats.
  """
  z = np.linspace(-15.0, 15.0, 30001)
  log_likelihood = model.decode(tf.constant(z[:, None, None], tf.float32)).log_prob(x)
  log_joint = (log_likelihood.numpy().astype(np.float64)
               - 0.5 * z[:, None]**2 - 0.5 * np.log(2.0 * np.pi))  # [grid, N]
  weights = np.full(z.shape, z[1] - z[0])
  weights[[0, -1]] /= 2.0
  return logsumexp(log_joint + np.log(weights)[:, None], axis=0)


def fit_encoder(model: VAE, x: np.ndarray, steps: int = 300) -> None:
  """Fits q(z|x) to the fixed decoder by maximising the ELBO on x.

  An untrained q can be so far from the posterior that 2000 importance
  samples are not enough; a fitted q makes the check about the estimator.
  """
  x = tf.constant(x)
  variables = model.encoder.trainable_variables
  optimizer = keras.optimizers.Adam(0.03)
  optimizer.build(variables)

  @tf.function
  def fit():
    for step in tf.range(steps):
      with tf.GradientTape() as tape:
        terms = objectives.sgvb_b(x, model.encode(x), model.decode, model.prior, 16,
                                  tf.stack([step, 0]))
        loss = -tf.reduce_mean(terms.elbo)
      optimizer.apply(tape.gradient(loss, variables), variables)

  fit()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_matches_numerical_integration_for_a_one_dimensional_latent(likelihood):
  model = make_model(latent_dim=1, likelihood=likelihood, seed=3)
  x = make_data(5, likelihood, seed=1)
  exact = exact_log_likelihood(model, x)
  # The untrained q leaves a gap of 0.17 to 1.9 nats, well above the ELBO's
  # Monte Carlo error; after fitting it is too small to check the sign.
  assert np.all(many_sample_elbo(model, x) < exact - 0.05)
  fit_encoder(model, x)
  estimate = evaluation.importance_sampled_log_likelihood(model, x, num_samples=2000)
  np.testing.assert_allclose(estimate, exact, rtol=0, atol=0.05)


def test_evaluate_elbo(data):
  model = make_model()  # estimator B
  # 25 examples in batches of 10 pad the last batch; padded rows must not count.
  result = evaluation.evaluate_elbo(model, data, batch_size=10, seed=0)
  assert set(result) == {"elbo", "reconstruction", "kl"}
  assert result == evaluation.evaluate_elbo(model, tf.constant(data), batch_size=10, seed=0)
  assert result != evaluation.evaluate_elbo(model, data, batch_size=10, seed=1)
  np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"], rtol=1e-6)
  # Under B the KL is analytic, so its mean is exact whatever the seed.
  analytic_kl = objectives.tfd.kl_divergence(model.encode(data), model.prior).numpy().mean()
  np.testing.assert_allclose(result["kl"], analytic_kl, rtol=1e-5)


def test_evaluate_elbo_is_unbiased():
  model = make_model(num_samples=1)
  data = make_data(NUM_EXAMPLES)
  tiled = np.tile(data, (REPLICATES, 1))
  result = evaluation.evaluate_elbo(model, tiled, batch_size=500)
  # One sample per row gives a per-example standard deviation of about 1.5
  # nats here, so the mean over 2000 rows is good to well under 0.2.
  assert abs(result["elbo"] - many_sample_elbo(model, data).mean()) < 0.2
