"""Image grids of samples, reconstructions and learned manifolds (Fig. 4).

Charts of numbers (learning curves) are `vae_tf.curve_charts`.

Images are written with PIL rather than matplotlib figures, so one data pixel
is one image pixel (times `scale`) and file sizes are exact and predictable.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image


def tile_images(images, ncols: int, padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
  """Arranges [N, H, W] images row by row into one [rows*(H+p)+p, ncols*(W+p)+p] array.

  Missing tiles in the last row are left at `pad_value`.
  """
  images = np.asarray(images, dtype=np.float32)
  if images.ndim != 3:
    raise ValueError(f"images must be [N, H, W], got shape {images.shape}")
  if ncols < 1 or padding < 0:
    raise ValueError(f"need ncols >= 1 and padding >= 0, got {ncols}, {padding}")
  num, height, width = images.shape
  nrows = max(1, math.ceil(num / ncols))
  grid = np.full((nrows * (height + padding) + padding, ncols * (width + padding) + padding),
                 pad_value, dtype=np.float32)
  for i, image in enumerate(images):
    top = padding + (i // ncols) * (height + padding)
    left = padding + (i % ncols) * (width + padding)
    grid[top:top + height, left:left + width] = image
  return grid


def save_image_grid(images, path, ncols: int = 10, padding: int = 1, pad_value: float = 1.0,
                    scale: int = 1) -> Path:
  """Writes [N, H, W] images in [0, 1] as one greyscale PNG grid.

  The PNG is scale * (ncols * (W + padding) + padding) pixels wide and
  scale * (ceil(N / ncols) * (H + padding) + padding) pixels high.
  """
  if scale < 1:
    raise ValueError(f"scale must be >= 1, got {scale}")
  grid = tile_images(images, ncols, padding, pad_value)
  pixels = np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)
  # Nearest-neighbour upscaling keeps pixels crisp for small images.
  pixels = np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, format="PNG")
  return path


def _decoder_mean(model, z) -> np.ndarray:
  # Bernoulli: the pixel probabilities; Gaussian: the sigmoid-squashed mean.
  return model.decode(tf.convert_to_tensor(z, tf.float32)).mean().numpy()


def prior_samples(model, image_shape, seed, num_samples: int = 100) -> np.ndarray:
  """Decoder means at z ~ p(z) drawn with the stateless `seed` pair, as images."""
  z = model.prior.sample(num_samples, seed=tf.constant(seed))
  return _decoder_mean(model, z).reshape(-1, *image_shape)


def latent_grid(grid_size: int = 20) -> np.ndarray:
  """[grid*grid, 2] latent points, row-major, for the Fig. 4 manifold.

  Coordinates are the standard-normal quantiles of evenly spaced
  probabilities (i + 0.5) / grid_size, so the points have equal prior mass
  between them (paper Appendix A). Rows go from high to low z_2 and columns
  from low to high z_1, so the picture is oriented like a plot of z.
  """
  if grid_size < 1:
    raise ValueError(f"grid_size must be >= 1, got {grid_size}")
  # The standard library's quantile function: scipy.stats would cost every
  # training process 0.7 s of imports for these few numbers.
  quantile = statistics.NormalDist().inv_cdf
  values = np.array([quantile((i + 0.5) / grid_size) for i in range(grid_size)])
  z2, z1 = np.meshgrid(values[::-1], values, indexing="ij")
  return np.stack([z1.ravel(), z2.ravel()], axis=-1).astype(np.float32)


def latent_manifold(model, image_shape, grid_size: int = 20,
                    latent_dims: tuple[int, int] = (0, 1)) -> np.ndarray:
  """Decoder means [grid*grid, H, W] over a 2-D grid of latent points.

  For latent_dim > 2 the two `latent_dims` vary and every other coordinate
  stays at the prior mean 0, giving a slice through the manifold.
  """
  latent_dim = model.config.latent_dim
  if len(latent_dims) != 2 or len(set(latent_dims)) != 2 or not all(
      0 <= d < latent_dim for d in latent_dims):
    raise ValueError(f"latent_dims must be two distinct axes of a {latent_dim}-D latent space, "
                     f"got {latent_dims}")
  points = latent_grid(grid_size)
  z = np.zeros([len(points), latent_dim], np.float32)
  z[:, latent_dims[0]] = points[:, 0]
  z[:, latent_dims[1]] = points[:, 1]
  return _decoder_mean(model, z).reshape(len(points), *image_shape)


def reconstructions(model, x, image_shape, ncols: int = 10) -> np.ndarray:
  """Originals and reconstructions [2*rows*ncols, H, W] in interleaved rows.

  Row 2r holds up to `ncols` originals and row 2r + 1 their reconstructions,
  the decoder mean at the posterior mean of z, so the result shows as pairs
  of rows with `save_image_grid(..., ncols=ncols)`. A short last row is
  filled with blank (zero) tiles.
  """
  if ncols < 1:
    raise ValueError(f"ncols must be >= 1, got {ncols}")
  x = np.asarray(x, dtype=np.float32)
  num = x.shape[0]
  flat = x.reshape(num, -1)
  means = _decoder_mean(model, model.encode(flat).mean())
  originals = flat.reshape(num, *image_shape)
  decoded = means.reshape(num, *image_shape)
  nrows = max(1, math.ceil(num / ncols))
  blank = nrows * ncols - num
  originals = np.concatenate([originals, np.zeros((blank, *image_shape), np.float32)])
  decoded = np.concatenate([decoded, np.zeros((blank, *image_shape), np.float32)])
  rows = np.stack([originals.reshape(nrows, ncols, *image_shape),
                   decoded.reshape(nrows, ncols, *image_shape)], axis=1)
  return rows.reshape(2 * nrows * ncols, *image_shape)
