"""The two log p(x) estimators against the exact value, on a VAE with a 2-D latent space.

With z in 2-D, log p(x) = log ∫ p(x|z) p(z) dz is computed to high accuracy
by a Riemann sum over a fine grid. The model is trained briefly on real MNIST
images, so its posteriors are narrow (q's stddevs 0.05-0.34) and far from the
prior, and the evaluation images are real held-out ones.

Tolerances, in nats per image, with what was measured here (two seeds each):
  Appendix D (HMC, 4 chains x 500 draws): per image 0.3 (worst error seen
    0.10), mean over the images 0.1 (seen 0.01);
  IS (k = 2000 draws from q(z|x)): per image 2.0 (worst seen 1.2; 1.7 with
    k = 20,000), mean 0.3 (seen 0.16). IS is only as good as its proposal:
    where the posterior has mass that q misses, its error barely shrinks
    with k, and an image then reads low by a nat or more.
Both are Monte Carlo estimates, so the tolerances bound sampling error, with
margin; the estimators are otherwise exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import evaluation, learners
from vae_tf.data import pipeline, sources

NUM_EXAMPLES = 12
GRID_LIMIT = 6.0  # the prior puts mass 1e-8 beyond |z_i| = 6

HMC_TOLERANCE = 0.3
HMC_MEAN_TOLERANCE = 0.1
IS_TOLERANCE = 2.0
IS_MEAN_TOLERANCE = 0.3


@pytest.fixture(scope="module")
def model_and_data(tfds_data_dir, shared_data_dir):
  images = sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))
  model_config, train_config = config_lib.preset("modern", "mnist", 2000)
  model_config = dataclasses.replace(model_config, latent_dim=2, hidden_units=(64,))
  train_config = dataclasses.replace(train_config, updates_per_call=20, learning_rate=3e-3)
  model = learners.build_model(model_config, train_config)
  blocks = pipeline.training_blocks(images[:2000], batch_size=100, updates_per_call=20,
                                    binarization="dynamic", seed=0)
  model.fit(blocks, steps_per_epoch=20, epochs=1, verbose=0)  # 400 SGD updates
  x = pipeline.evaluation_array(images[-NUM_EXAMPLES:], "dynamic")
  return model, x


def exact_log_likelihood(model, x: np.ndarray, grid_points: int) -> np.ndarray:
  """log p(x) [N] by a Riemann sum of p(x|z) p(z) over [-6, 6]^2."""
  axis = np.linspace(-GRID_LIMIT, GRID_LIMIT, grid_points, dtype=np.float32)
  z = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
  log_cell = 2 * np.log(axis[1] - axis[0])

  @tf.function(jit_compile=True)
  def log_joint_chunk(z_chunk):
    # [N, chunk]: every image against every grid point of the chunk.
    return tf.transpose(model.decode(z_chunk[:, tf.newaxis]).log_prob(x)
                        + model.prior.log_prob(z_chunk)[:, tf.newaxis])

  chunks = [tf.reduce_logsumexp(log_joint_chunk(tf.constant(chunk)), axis=1)
            for chunk in np.array_split(z, 80)]
  return tf.reduce_logsumexp(tf.stack(chunks), axis=0).numpy().astype(np.float64) + log_cell


@pytest.fixture(scope="module")
def exact(model_and_data) -> np.ndarray:
  model, x = model_and_data
  return exact_log_likelihood(model, x, grid_points=321)  # spacing 0.0375


@pytest.fixture(scope="module")
def importance_sampled(model_and_data) -> np.ndarray:
  model, x = model_and_data
  return evaluation.importance_sampled_log_likelihood(model, x, num_samples=2000)


@pytest.fixture(scope="module")
def appendix_d(model_and_data) -> np.ndarray:
  model, x = model_and_data
  return evaluation.hmc_marginal_log_likelihood(model, x, num_samples_per_chain=250,
                                                num_chains=4, num_burnin_steps=200)


def test_the_grid_is_fine_enough(model_and_data, exact):
  model, x = model_and_data
  coarser = exact_log_likelihood(model, x, grid_points=161)
  np.testing.assert_allclose(coarser, exact, atol=0.01)
  # The posteriors are informative: log p(x) is above log p(x|z=0) for every
  # image, and far above it for most (margins of 2.5 to 91 nats measured).
  margins = exact - model.decode(tf.zeros([1, 2])).log_prob(x).numpy()
  assert np.all(margins > 0) and np.median(margins) > 10


def test_appendix_d_estimate_is_exact_within_tolerance(exact, appendix_d):
  np.testing.assert_allclose(appendix_d, exact, atol=HMC_TOLERANCE)
  assert abs(appendix_d.mean() - exact.mean()) < HMC_MEAN_TOLERANCE


def test_importance_sampled_estimate_is_exact_within_tolerance(exact, importance_sampled):
  np.testing.assert_allclose(importance_sampled, exact, atol=IS_TOLERANCE)
  assert abs(importance_sampled.mean() - exact.mean()) < IS_MEAN_TOLERANCE


def test_the_two_estimators_agree(importance_sampled, appendix_d):
  # Within the sum of their tolerances: one of the two is off by its own at most.
  np.testing.assert_allclose(appendix_d, importance_sampled, atol=HMC_TOLERANCE + IS_TOLERANCE)
  assert abs(appendix_d.mean() - importance_sampled.mean()) < (
      HMC_MEAN_TOLERANCE + IS_MEAN_TOLERANCE)
