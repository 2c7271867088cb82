"""SGVB estimators A (eq. 6) and B (eq. 7) and the IWAE bound, on a small random VAE."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from vae_tf import objectives
from vae_tf.config import ModelConfig
from vae_tf.model import VAE

BATCH = 8
# Independent single-sample estimates per example; enough that the standard
# errors below are a few percent of the quantities compared.
REPLICATES = 4000


def make_model(likelihood: str = "bernoulli", latent_dim: int = 3) -> VAE:
  # Glorot weights rather than the paper's N(0, 0.01) give a posterior that
  # is far from the prior, so the KL and the A/B difference are not trivial.
  keras.utils.set_random_seed(1)
  config = ModelConfig(input_shape=(4, 4), likelihood=likelihood, latent_dim=latent_dim,
                       hidden_units=(32,), init_stddev=None)
  return VAE(config, seed=0)


def make_data(num: int = BATCH, seed: int = 0) -> np.ndarray:
  return (np.random.default_rng(seed).random((num, 16)) < 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> VAE:
  return make_model()


@pytest.fixture(scope="module")
def data() -> np.ndarray:
  return make_data()


@pytest.fixture(scope="module")
def replicated_estimates(model, data):
  """[REPLICATES, BATCH] single-sample ELBOs of A and B sharing each z.

  Tiling the batch gives every copy of an example its own sample in one call;
  A and B see the same seed and hence the same z, so their difference is a
  paired comparison with a much smaller standard error than two separate runs.
  """
  x = tf.constant(np.tile(data, (REPLICATES, 1)))
  posterior = model.encode(x)
  seed = tf.constant([3, 4], tf.int32)
  a = objectives.sgvb_a(x, posterior, model.decode, model.prior, 1, seed)
  b = objectives.sgvb_b(x, posterior, model.decode, model.prior, 1, seed)
  return ({k: v.numpy().reshape(REPLICATES, BATCH) for k, v in a._asdict().items()},
          {k: v.numpy().reshape(REPLICATES, BATCH) for k, v in b._asdict().items()})


@pytest.mark.parametrize("estimator", [objectives.sgvb_a, objectives.sgvb_b])
@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_estimators_return_per_example_terms(estimator, num_samples, likelihood):
  model = make_model(likelihood)
  x = tf.constant(make_data(5))
  terms = estimator(x, model.encode(x), model.decode, model.prior, num_samples,
                    tf.constant([0, 1], tf.int32))
  assert isinstance(terms, objectives.ElboTerms)
  for value in terms:
    assert value.shape == (5,)
    assert np.all(np.isfinite(value.numpy()))
  np.testing.assert_allclose(terms.elbo, terms.reconstruction - terms.kl, rtol=1e-5, atol=1e-5)


def test_model_elbo_terms_shapes_and_determinism(model, data):
  seed = tf.constant([5, 6], tf.int32)
  first = model.elbo_terms(tf.constant(data), seed)
  second = model.elbo_terms(tf.constant(data), seed)
  for a, b in zip(first, second):
    assert a.shape == (BATCH,)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_estimators_share_the_reconstruction_term(replicated_estimates):
  a, b = replicated_estimates
  np.testing.assert_allclose(a["reconstruction"], b["reconstruction"], rtol=1e-6)


def test_estimators_agree_in_expectation(replicated_estimates):
  a, b = replicated_estimates
  difference = a["elbo"] - b["elbo"]  # [REPLICATES, BATCH]
  standard_error = difference.std(axis=0, ddof=1) / np.sqrt(REPLICATES)
  z_scores = difference.mean(axis=0) / standard_error
  assert np.all(np.abs(z_scores) < 4.0), z_scores
  # The same on the batch mean, where the errors of all examples pool.
  pooled = difference.mean(axis=1)
  assert abs(pooled.mean()) < 4.0 * pooled.std(ddof=1) / np.sqrt(REPLICATES)


def test_analytic_kl_lowers_the_variance(replicated_estimates):
  # Not a theorem per example: with q equal to the true posterior A has zero
  # variance. So compare the minibatch ELBO (the training objective), where
  # the paper reports B's advantage, and the average per-example variance.
  a, b = replicated_estimates
  batch_variance_a = a["elbo"].mean(axis=1).var(ddof=1)
  batch_variance_b = b["elbo"].mean(axis=1).var(ddof=1)
  assert batch_variance_b < 0.5 * batch_variance_a, (batch_variance_a, batch_variance_b)
  mean_variance_a = a["elbo"].var(axis=0, ddof=1).mean()
  mean_variance_b = b["elbo"].var(axis=0, ddof=1).mean()
  assert mean_variance_b < 0.5 * mean_variance_a, (mean_variance_a, mean_variance_b)
  # B's KL term is exact, so all of its variance is the reconstruction's.
  np.testing.assert_allclose(b["kl"], np.broadcast_to(b["kl"][:1], b["kl"].shape), rtol=1e-4)


def test_analytic_kl_matches_monte_carlo(model, data):
  posterior = model.encode(tf.constant(data))
  analytic = objectives.tfd.kl_divergence(posterior, model.prior).numpy()
  z = posterior.sample(20000, seed=tf.constant([7, 8], tf.int32))
  log_ratio = (posterior.log_prob(z) - model.prior.log_prob(z)).numpy()  # [S, BATCH]
  monte_carlo = log_ratio.mean(axis=0)
  standard_error = log_ratio.std(axis=0, ddof=1) / np.sqrt(log_ratio.shape[0])
  assert np.all(analytic > 0.1), analytic  # a non-trivial posterior
  assert np.all(np.abs(monte_carlo - analytic) < 4.0 * standard_error + 1e-4), (
      monte_carlo, analytic, standard_error)


def test_analytic_kl_is_the_papers_appendix_b_formula(model, data):
  posterior = model.encode(tf.constant(data))
  mean = posterior.mean().numpy().astype(np.float64)
  variance = np.square(posterior.stddev().numpy().astype(np.float64))
  # -D_KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
  expected = -0.5 * np.sum(1.0 + np.log(variance) - mean**2 - variance, axis=-1)
  analytic = objectives.tfd.kl_divergence(posterior, model.prior).numpy()
  np.testing.assert_allclose(analytic, expected, rtol=1e-4, atol=1e-5)


# --- The importance-weighted bound (Burda et al. 2015, eq. 8) --------------------


def test_iwae_with_one_sample_is_estimator_a(model, data):
  x = tf.constant(np.tile(data, (50, 1)))
  posterior = model.encode(x)
  seed = tf.constant([9, 10], tf.int32)
  iwae = objectives.iwae(x, posterior, model.decode, model.prior, 1, seed)
  a = objectives.sgvb_a(x, posterior, model.decode, model.prior, 1, seed)
  np.testing.assert_allclose(iwae.iwae_bound, a.elbo, rtol=1e-6, atol=1e-5)
  for field in objectives.ElboTerms._fields:
    np.testing.assert_allclose(getattr(iwae, field), getattr(a, field), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("num_samples", [2, 5, 50])
def test_iwae_bound_is_at_least_the_elbo_of_the_same_draws(model, data, num_samples):
  x = tf.constant(data)
  terms = objectives.iwae(x, model.encode(x), model.decode, model.prior, num_samples,
                          tf.constant([11, 12], tf.int32))
  assert isinstance(terms, objectives.IwaeTerms)
  # log mean exp >= mean (Jensen), draw by draw; equal only if all weights are.
  assert np.all(terms.iwae_bound.numpy() > terms.elbo.numpy())
  np.testing.assert_allclose(terms.elbo, terms.reconstruction - terms.kl, rtol=1e-5, atol=1e-5)
  assert objectives.training_objective(terms) is terms.iwae_bound


def test_iwae_bound_tightens_with_k(model, data):
  """E[bound_k] is non-decreasing in k (Burda et al., Theorem 1); with a
  posterior far from q the increase is large against its standard error."""
  replicates = 500
  x = tf.constant(np.tile(data, (replicates, 1)))
  posterior = model.encode(x)
  means, errors = [], []
  for k in (1, 5, 50):
    bound = objectives.iwae(x, posterior, model.decode, model.prior, k,
                            tf.constant([13, k], tf.int32)).iwae_bound.numpy()
    per_replicate = bound.reshape(replicates, BATCH).mean(axis=1)
    means.append(per_replicate.mean())
    errors.append(per_replicate.std(ddof=1) / np.sqrt(replicates))
  for lower in range(2):
    gap = means[lower + 1] - means[lower]
    assert gap > 4 * np.hypot(errors[lower], errors[lower + 1]), (means, errors)


def test_iwae_model_tracks_and_ascends_the_bound():
  keras.utils.set_random_seed(1)
  config = ModelConfig(input_shape=(4, 4), latent_dim=3, hidden_units=(32,), init_stddev=None,
                       estimator="iwae", num_samples=5)
  model = VAE(config, seed=0)
  assert [m.name for m in model.metrics] == ["elbo", "reconstruction", "kl", "iwae_bound"]
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  x = make_data(100)
  before = model.evaluate(x, batch_size=100, verbose=0, return_dict=True)
  model.fit(np.broadcast_to(x, (30, 100, 16)).copy(), batch_size=30, epochs=1, verbose=0)
  after = model.evaluate(x, batch_size=100, verbose=0, return_dict=True)
  assert after["iwae_bound"] > before["iwae_bound"] + 0.5, (before, after)
  assert after["iwae_bound"] > after["elbo"]
