"""The images a run uses: training, validation and test, loaded and sliced one way.

Validation images are the last `sources.NUM_VALIDATION[dataset]` of the
training split (MNIST's usual 50k/10k), so every entry point trains and
validates on the same images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vae_tf.data import pipeline, sources


@dataclasses.dataclass(frozen=True)
class Splits:
  """uint8 images [N, H, W] of one data set."""

  train: np.ndarray
  validation: np.ndarray | None  # None: nothing held out
  test: np.ndarray | None  # None: not asked for


def load_splits(dataset: str, *, data_dir: str | None = None, manual_dir: str | None = None,
                hold_out_validation: bool = True, with_test: bool = False,
                train_examples: int | None = None, validation_examples: int | None = None,
                test_examples: int | None = None) -> Splits:
  """Loads (preparing if needed) `dataset` and cuts it into splits.

  Each `*_examples` keeps the first N images of its split (None: all).
  Without `hold_out_validation` the whole training split trains.

  Raises:
    ValueError: unknown dataset, or more examples asked for than a split has.
    sources.DataUnavailableError: the data cannot be prepared.
  """
  train = sources.load_images(dataset, "train", data_dir, manual_dir)
  validation = None
  if hold_out_validation:
    train, validation = pipeline.split_validation(train, sources.NUM_VALIDATION[dataset])
    validation = _first(validation, validation_examples, "validation_examples", "validation")
  test = None
  if with_test:
    test = _first(sources.load_images(dataset, "test", data_dir, manual_dir), test_examples,
                  "test_examples", "test")
  return Splits(_first(train, train_examples, "train_examples", "training"), validation, test)


def _first(images: np.ndarray, count: int | None, name: str, split: str) -> np.ndarray:
  if count is not None and count > len(images):
    # Named as the pipelines' flags are, since that is where the count comes from.
    raise ValueError(f"--{name}={count} exceeds the {len(images)} {split} examples")
  return images[:count]
