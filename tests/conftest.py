"""Fixtures shared across the test suite."""

from __future__ import annotations

import pathlib

import pytest

# The original MNIST and Frey Face files (read-only), in mnist/ and frey_face/,
# kept in a `shared/data` folder beside the repository.
SHARED_DATA_DIR = (pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  if not SHARED_DATA_DIR.is_dir():
    pytest.skip(f"real data not found: no folder {SHARED_DATA_DIR}")
  return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory, shared_data_dir) -> str:
  """One TFDS data folder per session, so each data set is prepared at most once.

  Data sets are prepared into it by the first `sources.load_images` call that
  passes `manual_dir=str(shared_data_dir)`.
  """
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))
