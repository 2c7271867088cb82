"""The resumable training stream and the evaluation arrays, on real MNIST images."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

from vae_tf.data import pipeline, sources

# 1030 images in blocks of K=5 minibatches of M=10: 20 blocks (1000 examples)
# per epoch, so 30 examples are left out of every epoch.
NUM_IMAGES = 1030
BATCH_SIZE = 10
UPDATES_PER_CALL = 5
BLOCKS_PER_EPOCH = 20
EXAMPLES_PER_EPOCH = BLOCKS_PER_EPOCH * UPDATES_PER_CALL * BATCH_SIZE
EVENT_SIZE = 28 * 28


@pytest.fixture(scope="module")
def images(tfds_data_dir, shared_data_dir) -> np.ndarray:
  images = sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))[:NUM_IMAGES]
  # Distinct images, so an example's grey levels identify it in any stream.
  assert len(np.unique(pipeline.flatten(images), axis=0)) == NUM_IMAGES
  return images


def stream(images, *, binarization="none", seed=0, start_block=0) -> tf.data.Dataset:
  return pipeline.training_blocks(images, batch_size=BATCH_SIZE,
                                  updates_per_call=UPDATES_PER_CALL, binarization=binarization,
                                  seed=seed, start_block=start_block)


def take(dataset: tf.data.Dataset, num_blocks: int) -> np.ndarray:
  return np.stack([block.numpy() for block in dataset.take(num_blocks)])


def epoch_rows(blocks: np.ndarray, epoch: int) -> np.ndarray:
  """The [EXAMPLES_PER_EPOCH, D] examples of one epoch, in stream order."""
  return blocks[epoch * BLOCKS_PER_EPOCH:(epoch + 1) * BLOCKS_PER_EPOCH].reshape(-1, EVENT_SIZE)


def as_uint8(rows: np.ndarray) -> np.ndarray:
  """Grey levels back from [0, 1] (v / 255 in float32 rounds back to v)."""
  return np.rint(rows * 255.0).astype(np.uint8)


def by_image(grey_rows: np.ndarray, rows: np.ndarray) -> dict[bytes, np.ndarray]:
  """Rows of one epoch keyed by the grey image they were drawn from."""
  return {key.tobytes(): row for key, row in zip(as_uint8(grey_rows), rows)}


def row_counts(rows: np.ndarray) -> collections.Counter:
  return collections.Counter(row.tobytes() for row in rows)


def test_blocks_per_epoch_drops_the_remainder():
  assert pipeline.blocks_per_epoch(NUM_IMAGES, BATCH_SIZE, UPDATES_PER_CALL) == BLOCKS_PER_EPOCH
  assert pipeline.blocks_per_epoch(1000, 10, 5) == 20
  assert pipeline.blocks_per_epoch(999, 10, 5) == 19
  assert pipeline.blocks_per_epoch(49, 10, 5) == 0


@pytest.mark.parametrize("binarization", ["none", "dynamic", "static"])
def test_block_shapes_and_dtypes(images, binarization):
  dataset = stream(images, binarization=binarization)
  assert dataset.element_spec.shape.as_list() == [UPDATES_PER_CALL, BATCH_SIZE, EVENT_SIZE]
  assert dataset.element_spec.dtype == tf.float32
  blocks = take(dataset, 3)
  assert blocks.shape == (3, UPDATES_PER_CALL, BATCH_SIZE, EVENT_SIZE)
  assert blocks.dtype == np.float32
  assert blocks.min() == 0.0 and blocks.max() == 1.0
  if binarization == "none":
    # Grey levels: many values strictly between 0 and 1.
    assert np.mean((blocks > 0) & (blocks < 1)) > 0.05
  else:
    assert set(np.unique(blocks)) == {0.0, 1.0}


def test_stream_is_a_function_of_the_seed(images):
  num_blocks = 2 * BLOCKS_PER_EPOCH + 3
  first = take(stream(images, binarization="dynamic", seed=7), num_blocks)
  again = take(stream(images, binarization="dynamic", seed=7), num_blocks)
  other = take(stream(images, binarization="dynamic", seed=8), num_blocks)
  np.testing.assert_array_equal(first, again)
  # Another seed shuffles differently: no block equals its counterpart.
  assert not any(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("binarization", ["none", "dynamic"])
@pytest.mark.parametrize("start_block", [
    3,  # mid-epoch
    BLOCKS_PER_EPOCH - 2,  # the blocks taken run on into the second epoch
    BLOCKS_PER_EPOCH,  # exactly at an epoch boundary
    2 * BLOCKS_PER_EPOCH + 7,  # in the third epoch
])
def test_starting_at_a_block_continues_the_uninterrupted_stream(images, binarization,
                                                                start_block):
  num_blocks = 5
  uninterrupted = take(stream(images, binarization=binarization, seed=3),
                       start_block + num_blocks)
  resumed = take(stream(images, binarization=binarization, seed=3, start_block=start_block),
                 num_blocks)
  np.testing.assert_array_equal(resumed, uninterrupted[start_block:])


def test_each_epoch_is_a_fresh_permutation_of_the_data(images):
  blocks = take(stream(images, seed=5), 3 * BLOCKS_PER_EPOCH)
  data = pipeline.flatten(images)
  data_counts = row_counts(data)
  orders = []
  for epoch in range(3):
    rows = as_uint8(epoch_rows(blocks, epoch))
    np.testing.assert_array_equal(rows.astype(np.float32) / 255.0, epoch_rows(blocks, epoch))
    counts = row_counts(rows)
    # The first EXAMPLES_PER_EPOCH of a permutation: every example drawn at
    # most once (as often as the image occurs in the data), none invented.
    assert sum(counts.values()) == EXAMPLES_PER_EPOCH
    assert all(counts[key] <= data_counts[key] for key in counts)
    orders.append([row.tobytes() for row in rows])
  # The stream does not walk through the data in stored order...
  assert orders[0] != [row.tobytes() for row in data[:EXAMPLES_PER_EPOCH]]
  # ...and every epoch is shuffled anew, leaving out other examples.
  assert orders[0] != orders[1] and orders[1] != orders[2]
  left_out = [set(data_counts) - set(order) for order in orders]
  assert left_out[0] != left_out[1]
  # Three epochs together leave out fewer than one epoch's 30.
  assert len(set(data_counts) - set().union(*map(set, orders))) < NUM_IMAGES - EXAMPLES_PER_EPOCH


def assert_bernoulli_sample(grey: np.ndarray, binary: np.ndarray) -> None:
  """`binary` is a Bernoulli(pixel / 255) sample of the same examples as `grey`."""
  assert set(np.unique(binary)) == {0.0, 1.0}
  # Black pixels stay 0, white ones are always 1.
  assert np.all(binary[grey == 0.0] == 0.0)
  assert np.all(binary[grey == 1.0] == 1.0)
  # The mean matches the grey-level mean to within 4 standard errors.
  standard_error = np.sqrt(np.sum(grey * (1.0 - grey))) / grey.size
  assert abs(binary.mean() - grey.mean()) < 4.0 * standard_error, (binary.mean(), grey.mean())


def test_dynamic_binarization_samples_each_pixel_afresh(images):
  # A seed orders the examples the same whatever the binarization, so the
  # grey stream says which image and grey levels each binary example has.
  num_blocks = 2 * BLOCKS_PER_EPOCH
  grey = take(stream(images, binarization="none", seed=11), num_blocks)
  binary = take(stream(images, binarization="dynamic", seed=11), num_blocks)
  assert_bernoulli_sample(grey, binary)
  assert abs(binary.mean() - images.mean() / 255.0) < 0.01

  # An image drawn in both epochs gets a new sample of its grey pixels.
  first = by_image(epoch_rows(grey, 0), epoch_rows(binary, 0))
  second = by_image(epoch_rows(grey, 1), epoch_rows(binary, 1))
  shared = sorted(set(first) & set(second))
  assert len(shared) > 900
  levels = np.stack([np.frombuffer(key, np.uint8) for key in shared])
  changed = np.stack([first[key] != second[key] for key in shared])
  mid = (levels > 0) & (levels < 255)
  assert not changed[~mid].any()
  # A pixel of grey level p is sampled differently with probability 2p(1-p).
  p = levels[mid] / 255.0
  expected = np.sum(2.0 * p * (1.0 - p))
  assert abs(changed[mid].sum() - expected) < 4.0 * np.sqrt(expected), (changed[mid].sum(),
                                                                         expected)


def test_static_binarization_is_the_same_every_epoch(images):
  num_blocks = 2 * BLOCKS_PER_EPOCH
  grey = take(stream(images, binarization="none", seed=2), num_blocks)
  binary = take(stream(images, binarization="static", seed=2), num_blocks)
  assert_bernoulli_sample(grey, binary)

  first = by_image(epoch_rows(grey, 0), epoch_rows(binary, 0))
  second = by_image(epoch_rows(grey, 1), epoch_rows(binary, 1))
  shared = set(first) & set(second)
  assert len(shared) > 900
  for key in shared:
    np.testing.assert_array_equal(first[key], second[key])

  # The fixed sample is a function of the seed.
  other = by_image(
      epoch_rows(take(stream(images, binarization="none", seed=3), BLOCKS_PER_EPOCH), 0),
      epoch_rows(take(stream(images, binarization="static", seed=3), BLOCKS_PER_EPOCH), 0))
  shared = set(first) & set(other)
  assert len(shared) > 900
  assert sum(not np.array_equal(first[key], other[key]) for key in shared) > 0.95 * len(shared)


@pytest.mark.parametrize("binarization", ["none", "dynamic", "static"])
def test_evaluation_array_is_deterministic(images, binarization):
  first = pipeline.evaluation_array(images, binarization)
  again = pipeline.evaluation_array(images, binarization)
  assert first.shape == (NUM_IMAGES, EVENT_SIZE) and first.dtype == np.float32
  np.testing.assert_array_equal(first, again)
  grey = images.reshape(NUM_IMAGES, -1).astype(np.float32) / 255.0
  if binarization == "none":
    np.testing.assert_array_equal(first, grey)
  else:
    assert set(np.unique(first)) == {0.0, 1.0}
    assert np.all(first[grey == 0.0] == 0.0)
    standard_error = np.sqrt(np.sum(grey * (1.0 - grey))) / grey.size
    assert abs(first.mean() - grey.mean()) < 4.0 * standard_error
    # One fixed sample for evaluation, whichever binarization trained the model.
    np.testing.assert_array_equal(
        first, pipeline.evaluation_array(images, "static" if binarization == "dynamic"
                                         else "dynamic"))


def test_evaluation_batches_cover_the_array_in_order(images):
  batches = list(pipeline.evaluation_batches(images[:250], "dynamic", batch_size=100))
  assert [len(b) for b in batches] == [100, 100, 50]
  np.testing.assert_array_equal(np.concatenate(batches),
                                pipeline.evaluation_array(images[:250], "dynamic"))


def test_too_few_examples_for_one_block(images):
  with pytest.raises(ValueError, match=(r"^49 training examples do not fill one block of 5 "
                                        r"minibatches of 10; lower updates_per_call or "
                                        r"batch_size$")):
    stream(images[:49])
  # Exactly one block is enough.
  assert take(stream(images[:50]), 2).shape == (2, UPDATES_PER_CALL, BATCH_SIZE, EVENT_SIZE)


@pytest.mark.parametrize("num_validation", [0, NUM_IMAGES, -1])
def test_split_validation_rejects_empty_sides(images, num_validation):
  with pytest.raises(ValueError, match=f"num_validation must be in \\(0, {NUM_IMAGES}\\)"):
    pipeline.split_validation(images, num_validation)


def test_split_validation_takes_the_last_images(images):
  train, validation = pipeline.split_validation(images, 30)
  np.testing.assert_array_equal(train, images[:1000])
  np.testing.assert_array_equal(validation, images[1000:])
