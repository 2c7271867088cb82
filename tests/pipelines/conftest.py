"""The environment the pipeline subprocesses run in."""

from __future__ import annotations

import os

import pytest

from cli_helpers import REPO_ROOT


@pytest.fixture(scope="session")
def env(tfds_data_dir, shared_data_dir) -> dict[str, str]:
  from vae_tf.data import sources

  # Prepared once here, so the subprocesses only read the session's TFDS folder.
  sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))
  sources.load_images("mnist", "test", tfds_data_dir, str(shared_data_dir))
  sources.load_images("frey_face", "train", tfds_data_dir, str(shared_data_dir))
  return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TFDS_DATA_DIR": tfds_data_dir,
          sources.DEFAULT_MANUAL_DIR_ENV: str(shared_data_dir)}
