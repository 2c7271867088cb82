"""Preparing MNIST and Frey Face offline from the original files, through TFDS."""

from __future__ import annotations

import gzip
import shutil
import socket
import urllib.request

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from vae_tf.data import frey_face, sources

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def no_manual_dir_env(monkeypatch):
  # Every test says where its files are; a developer's setting must not leak in.
  monkeypatch.delenv(sources.DEFAULT_MANUAL_DIR_ENV, raising=False)


def load(dataset, split, tfds_data_dir, shared_data_dir):
  # The shared folder has the mnist/ + frey_face/ layout. Cached per process,
  # and the session's data folder keeps what was prepared.
  return sources.load_images(dataset, split, tfds_data_dir, str(shared_data_dir))


def frey_indices(data_dir, split):
  builder = tfds.builder("frey_face", data_dir=data_dir)
  return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))["index"]


def assert_one_line(message: str):
  assert "\n" not in message
  assert "--manual_dir=<folder>" in message
  assert sources.DEFAULT_MANUAL_DIR_ENV in message


def test_mnist_shapes_and_means(tfds_data_dir, shared_data_dir):
  train = load("mnist", "train", tfds_data_dir, shared_data_dir)
  test = load("mnist", "test", tfds_data_dir, shared_data_dir)
  assert train.shape == (60000, 28, 28) and train.dtype == np.uint8
  assert test.shape == (10000, 28, 28) and test.dtype == np.uint8
  # Means on the 0..255 scale from the data README.
  assert train.mean() == pytest.approx(33.3184, abs=1e-4)
  assert test.mean() == pytest.approx(33.7912, abs=1e-4)
  # Shared through the cache, so callers must not be able to modify it.
  assert not train.flags.writeable
  assert load("mnist", "train", tfds_data_dir, shared_data_dir) is train


def test_mnist_test_split_holds_the_idx_images(tfds_data_dir, shared_data_dir):
  with gzip.open(shared_data_dir / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
    raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28 * 28)
  test = load("mnist", "test", tfds_data_dir, shared_data_dir).reshape(-1, 28 * 28)
  # TFDS stores examples in its own (hashed) order: compare as sets of images.
  assert np.array_equal(np.unique(raw, axis=0), np.unique(test, axis=0))


def test_prepared_data_is_reused_without_manual_dir(tfds_data_dir, shared_data_dir):
  test = load("mnist", "test", tfds_data_dir, shared_data_dir)
  # A different cache key, so this reads the prepared files from disk again.
  again = sources.load_images("mnist", "test", tfds_data_dir)
  assert again is not test
  np.testing.assert_array_equal(again, test)


def test_frey_face_splits(tfds_data_dir, shared_data_dir):
  train = load("frey_face", "train", tfds_data_dir, shared_data_dir)
  test = load("frey_face", "test", tfds_data_dir, shared_data_dir)
  assert train.shape == (1765, 28, 20) and train.dtype == np.uint8
  assert test.shape == (200, 28, 20) and test.dtype == np.uint8
  assert np.concatenate([train, test]).mean() == pytest.approx(154.46, abs=0.005)

  train_index = frey_indices(tfds_data_dir, "train")
  test_index = frey_indices(tfds_data_dir, "test")
  assert not set(train_index) & set(test_index)
  np.testing.assert_array_equal(np.sort(np.concatenate([train_index, test_index])),
                                np.arange(1965))
  # Stored in the documented permutation order.
  np.testing.assert_array_equal(train_index, frey_face.split_indices()["train"])
  np.testing.assert_array_equal(test_index, frey_face.split_indices()["test"])

  frames = scipy.io.loadmat(shared_data_dir / "frey_face" / "frey_rawface.mat")["ff"]
  faces = frames.T.reshape(-1, 28, 20)
  np.testing.assert_array_equal(train, faces[train_index])
  np.testing.assert_array_equal(test, faces[test_index])


def test_frey_face_from_a_flat_manual_dir_is_identical(tmp_path, tfds_data_dir, shared_data_dir):
  # manual_dir holding the file itself, prepared afresh into another data folder.
  flat = sources.load_images("frey_face", "test", str(tmp_path),
                             str(shared_data_dir / "frey_face"))
  np.testing.assert_array_equal(flat, load("frey_face", "test", tfds_data_dir, shared_data_dir))
  np.testing.assert_array_equal(frey_indices(str(tmp_path), "test"),
                                frey_indices(tfds_data_dir, "test"))


def test_missing_mnist_file_is_reported_up_front(tmp_path, shared_data_dir):
  manual_dir = tmp_path / "raw"
  manual_dir.mkdir()
  for name in MNIST_FILES[1:]:
    (manual_dir / name).symlink_to(shared_data_dir / "mnist" / name)
  with pytest.raises(sources.DataUnavailableError) as error:
    sources.load_images("mnist", "train", str(tmp_path / "tfds"), str(manual_dir))
  message = str(error.value)
  assert_one_line(message)
  assert f"{MNIST_FILES[0]} missing from manual_dir {manual_dir}" in message
  for name in MNIST_FILES:
    assert name in message


def test_manual_dir_defaults_to_the_environment(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.DEFAULT_MANUAL_DIR_ENV, str(tmp_path))
  with pytest.raises(sources.DataUnavailableError) as error:
    sources.load_images("frey_face", "train", str(tmp_path / "tfds"))
  assert_one_line(str(error.value))
  assert f"frey_rawface.mat missing from manual_dir {tmp_path}" in str(error.value)


@pytest.fixture
def corrupt_frey_dir(tmp_path, shared_data_dir):
  folder = tmp_path / "raw"
  folder.mkdir()
  path = folder / "frey_rawface.mat"
  shutil.copyfile(shared_data_dir / "frey_face" / "frey_rawface.mat", path)
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF
  path.write_bytes(bytes(data))
  return folder


def test_corrupt_frey_file_fails_with_checksum_error(tmp_path, corrupt_frey_dir):
  with pytest.raises(sources.DataUnavailableError) as error:
    sources.load_images("frey_face", "train", str(tmp_path / "tfds"), str(corrupt_frey_dir))
  message = str(error.value)
  assert_one_line(message)
  assert "checksum mismatch" in message
  assert "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64" in message


def test_builder_rejects_corrupt_frey_file(tmp_path, corrupt_frey_dir):
  # Used through TFDS directly, the builder makes the same check.
  builder = tfds.builder("frey_face", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(NonMatchingChecksumError, match=r"has sha256 \w+, expected 265a83a2"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(corrupt_frey_dir)))
  assert not builder.is_prepared()


def test_offline_without_manual_dir_fails_at_once(tmp_path):
  if urllib.request.getproxies():
    pytest.skip("a proxy is set: the download would be tried")
  try:
    socket.getaddrinfo("cs.nyu.edu", 443)
  except OSError:
    pass
  else:
    pytest.skip("online: this would download")
  with pytest.raises(sources.DataUnavailableError) as error:
    sources.load_images("frey_face", "train", str(tmp_path))
  assert_one_line(str(error.value))
  assert "no manual_dir given" in str(error.value)


@pytest.mark.parametrize("dataset, split", [("cifar10", "train"), ("mnist", "validation")])
def test_unknown_dataset_or_split(dataset, split):
  with pytest.raises(ValueError):
    sources.load_images(dataset, split)
