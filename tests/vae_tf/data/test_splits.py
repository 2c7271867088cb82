"""`splits.load_splits`: the one way every entry point cuts a data set, on the real files."""

from __future__ import annotations

import numpy as np
import pytest

from vae_tf.data import sources, splits


def test_validation_is_the_end_of_the_training_split(tfds_data_dir, shared_data_dir):
  images = sources.load_images("frey_face", "train", tfds_data_dir, str(shared_data_dir))
  data = splits.load_splits("frey_face", data_dir=tfds_data_dir,
                            manual_dir=str(shared_data_dir), with_test=True)
  assert len(data.validation) == sources.NUM_VALIDATION["frey_face"]
  np.testing.assert_array_equal(np.concatenate([data.train, data.validation]), images)
  np.testing.assert_array_equal(
      data.test, sources.load_images("frey_face", "test", tfds_data_dir, str(shared_data_dir)))


def test_each_split_keeps_its_first_examples(tfds_data_dir, shared_data_dir):
  whole = splits.load_splits("mnist", data_dir=tfds_data_dir, manual_dir=str(shared_data_dir),
                             with_test=True)
  cut = splits.load_splits("mnist", data_dir=tfds_data_dir, manual_dir=str(shared_data_dir),
                           with_test=True, train_examples=300, validation_examples=200,
                           test_examples=100)
  for part, full, count in ((cut.train, whole.train, 300), (cut.validation, whole.validation, 200),
                            (cut.test, whole.test, 100)):
    np.testing.assert_array_equal(part, full[:count])
  assert whole.train.shape == (50_000, 28, 28) and whole.validation.shape == (10_000, 28, 28)
  # Burda et al. train on all 60,000: nothing held out, no test asked for.
  everything = splits.load_splits("mnist", data_dir=tfds_data_dir,
                                  manual_dir=str(shared_data_dir), hold_out_validation=False)
  assert len(everything.train) == 60_000 and everything.validation is None
  assert everything.test is None


@pytest.mark.parametrize("counts, message", [
    ({"train_examples": 1566}, "--train_examples=1566 exceeds the 1565 training examples"),
    ({"validation_examples": 201}, "--validation_examples=201 exceeds the 200 validation "
                                   "examples"),
])
def test_asking_for_more_than_a_split_holds_is_one_clear_error(tfds_data_dir, shared_data_dir,
                                                              counts, message):
  with pytest.raises(ValueError, match=f"^{message}$"):
    splits.load_splits("frey_face", data_dir=tfds_data_dir, manual_dir=str(shared_data_dir),
                       **counts)
