"""tf.data input pipelines over images held in memory.

The whole training set (MNIST: 47 MB as uint8) stays resident as one tensor.
Every epoch is a stateless permutation of it, cut into blocks of
`updates_per_call` minibatches, so the stream is a pure function of
(seed, block index): a run resumed from a checkpoint at block b sees exactly
the blocks an uninterrupted run would have seen from b on.

Binarization:
  dynamic: a fresh Bernoulli sample of every pixel each time an image is
           drawn (Salakhutdinov & Murray 2008 style, the standard for
           likelihood benchmarks);
  static:  one fixed Bernoulli sample of the data set;
  none:    grey levels in [0, 1] used as they are, the paper's treatment.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_EVALUATION_BINARIZATION_SEED = 2013


def flatten(images: np.ndarray) -> np.ndarray:
  return images.reshape(len(images), -1)


def split_validation(images: np.ndarray, num_validation: int) -> tuple[np.ndarray, np.ndarray]:
  """Carves the last `num_validation` training images off as a validation set."""
  if not 0 < num_validation < len(images):
    raise ValueError(
        f"num_validation must be in (0, {len(images)}), got {num_validation}")
  return images[:-num_validation], images[-num_validation:]


def _binarize(pixels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Bernoulli(pixel / 255) per pixel, computed on the uint8 values."""
  uniform = tf.random.stateless_uniform(tf.shape(pixels), seed, maxval=255.0)
  return tf.cast(uniform < tf.cast(pixels, tf.float32), tf.float32)


def _to_unit_interval(pixels: tf.Tensor) -> tf.Tensor:
  return tf.cast(pixels, tf.float32) / 255.0


def evaluation_array(images: np.ndarray, binarization: str) -> np.ndarray:
  """Flat float32 data for evaluation: binarized once with a fixed seed."""
  pixels = tf.constant(flatten(images))
  if binarization == "none":
    return _to_unit_interval(pixels).numpy()
  return _binarize(pixels, tf.constant([_EVALUATION_BINARIZATION_SEED, 0])).numpy()


def evaluation_batches(images: np.ndarray, binarization: str, batch_size: int) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(
      evaluation_array(images, binarization)).batch(batch_size).cache()


def blocks_per_epoch(num_examples: int, batch_size: int, updates_per_call: int) -> int:
  """Whole blocks per pass; the remainder of a pass is dropped, as with drop_remainder."""
  return num_examples // (batch_size * updates_per_call)


def training_blocks(images: np.ndarray, *, batch_size: int, updates_per_call: int,
                    binarization: str, seed: int, start_block: int = 0,
                    with_indices: bool = False) -> tf.data.Dataset:
  """An endless stream of [updates_per_call, batch_size, D] float32 blocks.

  Starts at global block `start_block` (counted from the first epoch). With
  `with_indices`, each element is (block, indices): the int32 positions
  [updates_per_call, batch_size] of the block's examples in `images`.
  """
  num_blocks = blocks_per_epoch(len(images), batch_size, updates_per_call)
  if num_blocks < 1:
    raise ValueError(
        f"{len(images)} training examples do not fill one block of "
        f"{updates_per_call} minibatches of {batch_size}; lower updates_per_call or batch_size")
  pixels = flatten(images)
  if binarization == "static":
    pixels = _binarize(tf.constant(pixels), tf.constant([seed, -1])).numpy()
    pixels = (pixels * 255).astype(np.uint8)
    binarization = "none"
  pixels = tf.constant(pixels)
  examples_per_epoch = num_blocks * updates_per_call * batch_size
  start_epoch, skip = divmod(start_block, num_blocks)

  def epoch_indices(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(len(images), dtype=tf.int32), seed=tf.stack([seed, epoch]))
    order = tf.reshape(order[:examples_per_epoch], [num_blocks, updates_per_call, batch_size])
    blocks = epoch * num_blocks + tf.range(num_blocks, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices((blocks, order))

  def make_block(block, order):
    block_pixels = tf.gather(pixels, order)
    if binarization == "dynamic":
      x = _binarize(block_pixels, tf.stack([tf.constant(seed, tf.int64), block]))
    else:
      x = _to_unit_interval(block_pixels)
    return (x, order) if with_indices else x

  return (tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
          .flat_map(epoch_indices)
          .skip(skip)
          .map(make_block, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .prefetch(2))
