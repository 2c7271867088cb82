"""Image grids, the latent manifold (Fig. 4) and reconstruction panels."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.stats
from PIL import Image

from vae_tf import image_grids
from vae_tf.config import ModelConfig
from vae_tf.model import VAE

IMAGE_SHAPE = (7, 5)  # not square, to catch swapped axes
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_model(latent_dim: int = 2, likelihood: str = "bernoulli") -> VAE:
  keras.utils.set_random_seed(0)
  config = ModelConfig(input_shape=IMAGE_SHAPE, likelihood=likelihood, latent_dim=latent_dim,
                       hidden_units=(8,), init_stddev=None)
  return VAE(config, seed=0)


@pytest.mark.parametrize("num, ncols, padding, scale, expected_size", [
    (12, 4, 1, 1, (4 * 6 + 1, 3 * 8 + 1)),
    (10, 4, 1, 1, (4 * 6 + 1, 3 * 8 + 1)),  # a short last row
    (3, 10, 0, 2, (2 * 10 * 5, 2 * 7)),
    (1, 1, 2, 3, (3 * (5 + 4), 3 * (7 + 4))),
])
def test_save_image_grid_writes_a_png_of_the_expected_size(tmp_path, num, ncols, padding, scale,
                                                           expected_size):
  images = np.random.default_rng(0).random((num, *IMAGE_SHAPE))
  path = image_grids.save_image_grid(images, tmp_path / "sub" / "grid.png", ncols=ncols,
                                     padding=padding, scale=scale)
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.mode == "L"
    assert image.size == expected_size  # PIL sizes are (width, height)


def test_save_image_grid_places_and_quantises_pixels(tmp_path):
  images = np.zeros((2, *IMAGE_SHAPE))
  images[1] = 1.0
  images[0, 0, 0] = 0.5
  path = image_grids.save_image_grid(images, tmp_path / "grid.png", ncols=2, padding=1,
                                     pad_value=1.0)
  with Image.open(path) as image:
    pixels = np.asarray(image)
  assert pixels.shape == (7 + 2, 2 * 5 + 3)
  assert pixels[1, 1] == 128  # 0.5 of the first image's top-left pixel
  np.testing.assert_array_equal(pixels[1:8, 2:6], 0)
  np.testing.assert_array_equal(pixels[1:8, 7:12], 255)
  np.testing.assert_array_equal(pixels[0], 255)  # the padding


def test_tile_images_rejects_flat_input():
  with pytest.raises(ValueError):
    image_grids.tile_images(np.zeros((4, 35)), ncols=2)


def test_latent_grid_uses_gaussian_quantiles():
  grid = image_grids.latent_grid(4)
  values = scipy.stats.norm.ppf([0.125, 0.375, 0.625, 0.875])
  assert grid.shape == (16, 2)
  np.testing.assert_allclose(grid[:4, 0], values, rtol=1e-6)  # z_1 rises along a row
  np.testing.assert_allclose(grid[::4, 1], values[::-1], rtol=1e-6)  # z_2 falls down a column
  np.testing.assert_allclose(grid.mean(axis=0), 0.0, atol=1e-6)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_latent_manifold_for_a_two_dimensional_latent(likelihood):
  model = make_model(likelihood=likelihood)
  manifold = image_grids.latent_manifold(model, IMAGE_SHAPE, grid_size=5)
  assert manifold.shape == (25, *IMAGE_SHAPE)
  assert np.all((manifold >= 0.0) & (manifold <= 1.0))
  expected = model.decode(image_grids.latent_grid(5)).mean().numpy()
  np.testing.assert_allclose(manifold.reshape(25, -1), expected, rtol=1e-6)
  assert np.ptp(manifold, axis=0).max() > 1e-3  # the images vary with z


def test_latent_manifold_slices_a_larger_latent_space():
  model = make_model(latent_dim=4)
  manifold = image_grids.latent_manifold(model, IMAGE_SHAPE, grid_size=3, latent_dims=(1, 3))
  z = np.zeros((9, 4), np.float32)
  z[:, [1, 3]] = image_grids.latent_grid(3)
  expected = model.decode(z).mean().numpy()
  np.testing.assert_allclose(manifold.reshape(9, -1), expected, rtol=1e-6)
  with pytest.raises(ValueError):
    image_grids.latent_manifold(model, IMAGE_SHAPE, latent_dims=(0, 4))


def test_reconstructions_interleave_rows_of_originals_and_means(tmp_path):
  model = make_model()
  images = np.random.default_rng(1).random((7, *IMAGE_SHAPE)).astype(np.float32)
  panel = image_grids.reconstructions(model, images, IMAGE_SHAPE, ncols=4)
  assert panel.shape == (16, *IMAGE_SHAPE)  # 2 pairs of rows of 4 tiles
  rows = panel.reshape(2, 2, 4, *IMAGE_SHAPE)  # [pair, original/reconstruction, col, H, W]
  np.testing.assert_array_equal(rows[:, 0].reshape(8, *IMAGE_SHAPE)[:7], images)
  flat = images.reshape(7, -1)
  expected = model.decode(model.encode(flat).mean()).mean().numpy().reshape(7, *IMAGE_SHAPE)
  np.testing.assert_allclose(rows[:, 1].reshape(8, *IMAGE_SHAPE)[:7], expected, rtol=1e-6)
  np.testing.assert_array_equal(panel[[11, 15]], 0.0)  # the blank last tiles
  # Flat inputs give the same panel, and the panel saves as a grid.
  np.testing.assert_array_equal(
      image_grids.reconstructions(model, flat, IMAGE_SHAPE, ncols=4), panel)
  path = image_grids.save_image_grid(panel, tmp_path / "reconstructions.png", ncols=4, padding=0)
  with Image.open(path) as image:
    assert image.size == (4 * 5, 4 * 7)
