"""The paper's data sets as uint8 image arrays, prepared through TFDS.

MNIST comes from TFDS's own `mnist` builder, Frey Face from `frey_face`
(vae_tf/data/frey_face.py). Both are prepared once into the TFDS data folder
(`data_dir`, default: TFDS's own, or $TFDS_DATA_DIR) and read from there.

Offline, `manual_dir` (default: $VAE_TF_MANUAL_DIR) names a folder with the
original files, either directly in it or in `mnist/` and `frey_face/`
subfolders:
  mnist:     train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
             t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
  frey_face: frey_rawface.mat
Each file is checked against the sha256 TFDS registers for it before use.
"""

from __future__ import annotations

import functools
import os
import pathlib
import socket
import urllib.parse
import urllib.request

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from vae_tf import config as config_lib
from vae_tf.data import frey_face  # noqa: F401  (registers the `frey_face` builder)

DEFAULT_MANUAL_DIR_ENV = "VAE_TF_MANUAL_DIR"
DATASETS = config_lib.DATASETS
SPLITS = ("train", "test")
# Training images held out (from the end of `train`) for validation. MNIST's
# usual 50k/10k; Frey Face's train split is already in random frame order.
NUM_VALIDATION = {"mnist": 10_000, "frey_face": 200}
# Decoded images, one .npy file per split, in the builder's versioned folder.
CACHE_PREFIX = "vae_tf_images_"


class DataUnavailableError(RuntimeError):
  """The data is not prepared and cannot be, for a reason the user can fix."""


def load_images(dataset: str, split: str, data_dir: str | None = None,
                manual_dir: str | None = None) -> np.ndarray:
  """Returns the uint8 images [N, H, W] of one split, preparing the data set if needed.

  Images come in the builder's stored order, which is the same on every call.
  Results are cached per process and returned read-only, since callers share them.

  Args:
    dataset: "mnist" (28x28) or "frey_face" (28x20).
    split: "train" or "test".
    data_dir: TFDS data folder; None for TFDS's default.
    manual_dir: folder with the original files, for preparing offline; None
      for $VAE_TF_MANUAL_DIR, or for downloading when that is unset too.

  Raises:
    ValueError: unknown dataset or split.
    DataUnavailableError: the data is not prepared and the files to prepare it
      are missing, corrupt or cannot be downloaded.
  """
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if manual_dir is None:
    manual_dir = os.environ.get(DEFAULT_MANUAL_DIR_ENV) or None
  return _load_images(dataset, split, data_dir and os.fspath(data_dir),
                      manual_dir and os.fspath(manual_dir))


@functools.lru_cache(maxsize=None)
def _load_images(dataset: str, split: str, data_dir: str | None,
                 manual_dir: str | None) -> np.ndarray:
  builder = tfds.builder(dataset, data_dir=data_dir)
  if not builder.is_prepared():
    _prepare(builder, dataset, manual_dir)
  cache = pathlib.Path(builder.data_dir) / f"{CACHE_PREFIX}{split}.npy"
  if cache.is_file():
    images = np.load(cache)
  else:
    images = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))["image"]
    images = images.reshape(images.shape[:-1])  # Drop the single channel.
    _write_cache(cache, images)
  images.flags.writeable = False
  return images


def _write_cache(path: pathlib.Path, images: np.ndarray) -> None:
  """Keeps the decoded images beside TFDS's records: decoding 60,000 PNGs
  takes seconds, reading one .npy file milliseconds. Written atomically; a
  read-only data folder just goes without."""
  temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    with open(temporary, "wb") as f:
      np.save(f, images)
    os.replace(temporary, path)
  except OSError:
    temporary.unlink(missing_ok=True)


def _prepare(builder: tfds.core.DatasetBuilder, dataset: str, manual_dir: str | None) -> None:
  tfds.disable_progress_bar()  # Its redraws flood logs; preparing takes seconds.
  url_infos = builder.url_infos
  if manual_dir is not None:
    folder = _dataset_folder(manual_dir, dataset)
    _check_manual_files(folder, dataset, url_infos)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(folder)))
    return
  # Offline, TFDS retries each download for minutes before giving up; a failed
  # name lookup settles it at once.
  host = _unresolvable_host(url_infos)
  if host is not None:
    raise DataUnavailableError(_message(
        dataset, url_infos, f"no manual_dir given and {host} cannot be reached"))
  try:
    builder.download_and_prepare()
  except (OSError, tfds.download.DownloadError, NonMatchingChecksumError) as error:
    cause = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    raise DataUnavailableError(_message(
        dataset, url_infos, f"no manual_dir given and the download failed "
        f"({type(error).__name__}: {cause})")) from error


def _dataset_folder(manual_dir: str, dataset: str) -> pathlib.Path:
  """`<manual_dir>/<dataset>` when it exists (the shared layout), else manual_dir."""
  folder = pathlib.Path(manual_dir).expanduser()
  return folder / dataset if (folder / dataset).is_dir() else folder


def _check_manual_files(folder: pathlib.Path, dataset: str, url_infos) -> None:
  """Fails with one line, before TFDS would, if a file is missing or not the original."""
  if not folder.is_dir():
    raise DataUnavailableError(_message(dataset, url_infos, f"manual_dir {folder} is not a folder"))
  missing = [info.filename for info in url_infos.values()
             if not (folder / info.filename).is_file()]
  if missing:
    raise DataUnavailableError(_message(
        dataset, url_infos, f"{', '.join(missing)} missing from manual_dir {folder}"))
  for info in url_infos.values():
    path = folder / info.filename
    actual = checksums.compute_url_info(path).checksum
    if actual != info.checksum:
      raise DataUnavailableError(_message(
          dataset, url_infos, f"checksum mismatch: {path} has sha256 {actual}, expected "
          f"{info.checksum}, so it is not the original file"))


def _message(dataset: str, url_infos, reason: str) -> str:
  files = ", ".join(info.filename for info in url_infos.values())
  return (f"cannot prepare {dataset}: {reason}. Pass --manual_dir=<folder> or set "
          f"{DEFAULT_MANUAL_DIR_ENV}=<folder>, a folder holding {files} "
          f"(directly or in a {dataset}/ subfolder)")



def _unresolvable_host(url_infos) -> str | None:
  """A download host whose name does not resolve, when that proves we are offline."""
  if urllib.request.getproxies():
    return None  # The proxy resolves names; a local lookup proves nothing.
  for host in sorted({urllib.parse.urlsplit(url).hostname for url in url_infos}):
    try:
      socket.getaddrinfo(host, 443)
    except OSError:
      return host
  return None
