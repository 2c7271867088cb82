"""HMC (`vae_tf.hmc`) on a model whose posterior is known in closed form.

Tolerances come from TFP's effective sample size (ESS) of the draws, not from
their raw count. The paper's sampler (10 leapfrog steps, step size tuned to
90% acceptance) runs about two oscillation periods along the narrowest
posterior axis of a Gaussian, so it can nearly return to its start there and
mix slowly along that axis; many short independent chains keep the ESS
useful.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vae_tf import hmc

tfd = tfp.distributions

NUM_RESULTS = 300
NUM_CHAINS = 32


class LinearGaussianModel:
  """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I): a linear-Gaussian latent variable model.

  Its posterior is Gaussian: covariance (I + W'W / s^2)^-1, mean
  covariance W'(x - b) / s^2. It offers what HMC needs of a model: `decode`
  and `prior`.
  """

  def __init__(self, weights: np.ndarray, bias: np.ndarray, noise_stddev: float):
    self.weights = tf.constant(weights, tf.float32)  # [D, latent]
    self.bias = tf.constant(bias, tf.float32)
    self.noise_stddev = noise_stddev
    self.prior = tfd.MultivariateNormalDiag(tf.zeros([weights.shape[1]]))

  def decode(self, z) -> tfd.Distribution:
    loc = tf.einsum("...k,dk->...d", z, self.weights) + self.bias
    return tfd.Independent(tfd.Normal(loc, self.noise_stddev), reinterpreted_batch_ndims=1)

  def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means [batch, latent] and the (shared) covariance [latent, latent]."""
    weights = self.weights.numpy().astype(np.float64)
    precision = np.eye(weights.shape[1]) + weights.T @ weights / self.noise_stddev**2
    covariance = np.linalg.inv(precision)
    means = (x - self.bias.numpy()) @ weights @ covariance.T / self.noise_stddev**2
    return means, covariance


@pytest.fixture(scope="module")
def model() -> LinearGaussianModel:
  rng = np.random.default_rng(0)
  # Columns of very different norms make the posterior elongated (standard
  # deviations about 0.08 and 0.5), so one step size must serve both axes.
  weights = rng.normal(size=(6, 2)) * np.array([3.0, 0.4])
  return LinearGaussianModel(weights, rng.normal(size=6), noise_stddev=0.5)


@pytest.fixture(scope="module")
def data(model) -> np.ndarray:
  z = np.random.default_rng(1).normal(size=(4, 2))
  return (model.decode(tf.constant(z, tf.float32)).sample(seed=[3, 4])).numpy()


@pytest.fixture(scope="module")
def draws(model, data) -> np.ndarray:
  """[NUM_RESULTS, NUM_CHAINS, batch, latent] posterior draws."""
  sample = tf.function(hmc.sample_posterior, jit_compile=True)
  return sample(model, tf.constant(data), NUM_RESULTS, 200, tf.constant([5, 6]),
                num_chains=NUM_CHAINS).numpy()


def effective_sample_size(values: np.ndarray) -> np.ndarray:
  """ESS [batch, latent] of the mean of values [draws, chains, batch, latent]."""
  return tfp.mcmc.effective_sample_size(values, cross_chain_dims=1).numpy()


def test_recovers_the_posterior_mean(model, data, draws):
  means, covariance = model.posterior(data)
  ess = effective_sample_size(draws)
  assert ess.min() > 30, ess  # the chains move along every axis
  standard_error = np.sqrt(np.diag(covariance) / ess)
  error = draws.mean(axis=(0, 1)) - means
  # Four standard errors: a false failure about once in 2,500 runs per coordinate.
  assert np.all(np.abs(error) < 4 * standard_error), (error, standard_error)


def test_recovers_the_posterior_variance(model, data, draws):
  means, covariance = model.posterior(data)
  squared_deviations = (draws - means) ** 2
  variance = squared_deviations.mean(axis=(0, 1))  # [batch, latent]
  # The variance estimate is the mean of the squared deviations: its ESS is
  # theirs. For n independent Gaussian draws its relative stddev is sqrt(2 / n).
  ess = effective_sample_size(squared_deviations)
  relative_error = variance / np.diag(covariance) - 1
  assert np.all(np.abs(relative_error) < 4 * np.sqrt(2 / ess)), relative_error
  # Both axes matter: the true standard deviations differ six-fold.
  assert np.sqrt(np.diag(covariance)).max() > 5 * np.sqrt(np.diag(covariance)).min()


def test_step_size_adapts_toward_ninety_percent_acceptance():
  # Ten latent axes of different widths: along a single axis of a Gaussian
  # the acceptance swings with the step size (the periodicity above), so the
  # adaptation is checked where it averages out, as in a real posterior.
  rng = np.random.default_rng(2)
  model = LinearGaussianModel(rng.normal(size=(20, 10)), rng.normal(size=20), noise_stddev=0.5)
  x = tf.constant(rng.normal(size=(4, 20)), tf.float32)
  # Per-datapoint step sizes start at 1.0, far too large (posterior stddevs
  # are 0.12-0.21): acceptance starts near 0.
  kernel = hmc.adaptive_hmc(lambda z: hmc.log_joint(model, x, z),
                            step_size=tf.fill([4, 1], 1.0), num_adaptation_steps=300)

  @tf.function(jit_compile=True)
  def acceptance_after_adaptation():
    # 300 adapting transitions, then 200 at the adapted step sizes.
    _, acceptance = tfp.mcmc.sample_chain(
        200, tf.zeros([8, 4, 10]), kernel=kernel, num_burnin_steps=300,
        trace_fn=lambda _, results: hmc.acceptance_probability(results), seed=[7, 8])
    return acceptance  # [200, chains, batch]

  acceptance = acceptance_after_adaptation().numpy().mean(axis=(0, 1))
  assert np.all(np.abs(acceptance - hmc.TARGET_ACCEPT_PROB) < 0.07), acceptance


class ShiftedSquareModel:
  """p(z) = N(0, 1), p(x|z) = N((z - 0.5)^2, 0.3^2): at x = 4 the posterior has
  two modes, z near -1.5 and near 2.5, and the prior puts most mass on the first."""

  prior = tfd.MultivariateNormalDiag(tf.zeros([1]))

  def decode(self, z) -> tfd.Distribution:
    return tfd.Independent(tfd.Normal(tf.square(z - 0.5), 0.3), reinterpreted_batch_ndims=1)


def test_chain_starts_land_in_each_mode_in_proportion_to_its_mass():
  model = ShiftedSquareModel()
  x = tf.constant([[4.0]])
  grid = np.linspace(-6.0, 6.0, 24001, dtype=np.float32)[:, np.newaxis, np.newaxis]
  log_posterior = hmc.log_joint(model, x, tf.constant(grid)).numpy()[:, 0]
  weights = np.exp(log_posterior - log_posterior.max())
  exact_fraction = weights[grid[:, 0, 0] < 0.5].sum() / weights.sum()
  assert 0.8 < exact_fraction < 0.95  # measured: 0.88, the mass of the mode near -1.5

  starts = hmc.initial_states(model, x, num_chains=4000, num_proposals=1000,
                              seed=tf.constant([1, 2])).numpy()
  assert starts.shape == (4000, 1, 1)
  # Every start is near one of the two modes, not anywhere the prior draws fell.
  assert np.all(np.minimum(np.abs(starts + 1.5), np.abs(starts - 2.5)) < 0.4)
  assert abs((starts < 0.5).mean() - exact_fraction) < 0.03
