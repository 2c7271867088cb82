"""Images for the client's command line: NumPy and Pillow only, so saving a
served model's samples needs no TensorFlow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def likely_image_shape(event_size: int) -> tuple[int, int]:
  """(H, W) of a flat image of `event_size` pixels, as the served model's input
  size alone tells it: the most nearly square H x W with H >= W (784 -> 28x28
  for MNIST, 560 -> 28x20 for Frey Face)."""
  width = math.isqrt(event_size)
  while event_size % width:
    width -= 1
  return event_size // width, width


def read_greyscale(path: str) -> np.ndarray:
  """[H, W] float32 in [0, 1] from a greyscale or colour image file."""
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
  except (UnidentifiedImageError, OSError):
    raise ValueError(f"{path}: not a PNG image or .npy array") from None


def save_grid(images: np.ndarray, path: str, ncols: int, scale: int = 1,
              padding: int = 1) -> None:
  """Writes [N, H, W] images in [0, 1] as one greyscale PNG, row by row on a
  white background: scale * (ncols * (W + padding) + padding) pixels wide."""
  from PIL import Image

  num, height, width = images.shape
  nrows = max(1, math.ceil(num / ncols))
  grid = np.ones((nrows * (height + padding) + padding, ncols * (width + padding) + padding),
                 np.float32)
  for i, image in enumerate(images):
    top = padding + (i // ncols) * (height + padding)
    left = padding + (i % ncols) * (width + padding)
    grid[top:top + height, left:left + width] = image
  pixels = np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)
  pixels = np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))  # crisp upscaling
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, format="PNG")
