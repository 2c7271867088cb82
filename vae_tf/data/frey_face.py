"""TFDS builder for Brendan Frey's face images, the paper's real-valued data set.

Kingma & Welling (2013) fit a Gaussian-decoder VAE to the 1965 frames of
S. Roweis' `frey_rawface.mat`. The file has no train/test split, so this
builder defines one (see `FreyFace`).
"""

from __future__ import annotations


import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FILENAME = "frey_rawface.mat"
NUM_FRAMES = 1965
NUM_TEST = 200
SPLIT_SEED = 0
IMAGE_SHAPE = (28, 20)

_DESCRIPTION = f"""\
{NUM_FRAMES} grey-scale {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} images of Brendan Frey's face, \
the frames of a short video, as distributed by S. Roweis (`{FILENAME}`, variable `ff`, \
one frame per column in row-major order). Used as the real-valued data set of Kingma & \
Welling (2013), "Auto-Encoding Variational Bayes".

The original has no split. Consecutive frames are near duplicates, so a contiguous \
held-out block would be unlike the training frames; instead a fixed random permutation \
of the frame numbers, `numpy.random.default_rng({SPLIT_SEED}).permutation({NUM_FRAMES})`, \
puts its first {NUM_TEST} frames in `test` and the other {NUM_FRAMES - NUM_TEST} in \
`train`. Each split is stored in that permutation order (shuffling is disabled), and \
every example carries its frame number in `index`, so the split can be checked.
"""

_CITATION = """\
@misc{roweis_frey_face,
  author = {Roweis, Sam},
  title = {Data for {MATLAB} hackers: Frey Face},
  howpublished = {\\url{https://cs.nyu.edu/~roweis/data.html}},
  note = {Images of Brendan Frey's face}
}
"""


def split_indices() -> dict[str, np.ndarray]:
  """Frame numbers of each split, in the order the split is stored."""
  order = np.random.default_rng(SPLIT_SEED).permutation(NUM_FRAMES)
  return {"train": order[NUM_TEST:], "test": order[:NUM_TEST]}



class FreyFace(tfds.core.GeneratorBasedBuilder):
  """Frey Face: 1965 28x20 uint8 frames, split 1765 train / 200 test.

  The split is a fixed random permutation of the frame numbers (numpy
  `default_rng(0)`; its first 200 are `test`), not a contiguous block, because
  neighbouring frames of the video are near duplicates. Examples are stored in
  permutation order and carry their frame number as `index`.

  Offline: with `frey_rawface.mat` in `DownloadConfig.manual_dir`, that file is
  checked against the registered sha256 and used; otherwise it is downloaded.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Optional: to prepare offline, put {FILENAME} (from {URL}) in `manual_dir`.
  Without it the file is downloaded.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE + (1,), dtype=np.uint8),
            "index": np.int32,
        }),
        supervised_keys=None,
        # Keep the documented permutation order rather than TFDS's key hash.
        disable_shuffling=True,
        homepage="https://cs.nyu.edu/~roweis/data.html",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = self._manual_file(dl_manager)
    if path is None:
      path = dl_manager.download(URL)
    else:
      # Checked here rather than left to TFDS so that a wrong file fails with
      # one plain line, and so that a file in manual_dir never triggers a download.
      self._verify(path)
    return {
        name: self._generate_examples(path, indices)
        for name, indices in split_indices().items()
    }

  def _generate_examples(self, path, indices: np.ndarray):
    import scipy.io  # only here, once per preparation: 0.2 s of imports for every process else

    with path.open("rb") as f:
      frames = scipy.io.loadmat(f)["ff"]
    if frames.shape != (IMAGE_SHAPE[0] * IMAGE_SHAPE[1], NUM_FRAMES) or frames.dtype != np.uint8:
      raise ValueError(f"{path}: expected `ff` of shape (560, {NUM_FRAMES}) uint8, got "
                       f"{frames.shape} {frames.dtype}")
    images = frames.T.reshape((NUM_FRAMES,) + IMAGE_SHAPE + (1,))
    # With shuffling disabled TFDS stores examples sorted by key, so the key is
    # the position in the permutation and the frame number goes in `index`.
    for position, index in enumerate(indices):
      yield position, {"image": images[index], "index": int(index)}

  @staticmethod
  def _manual_file(dl_manager: tfds.download.DownloadManager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS's way of saying manual_dir is absent or empty.
      return None
    path = manual_dir / FILENAME
    return path if path.exists() else None

  @classmethod
  def _verify(cls, path) -> None:
    expected = (cls.url_infos or {}).get(URL)
    if expected is None:
      raise RuntimeError(f"no registered checksum for {URL}: checksums.tsv is missing "
                         f"next to {__file__}")
    actual = checksums.compute_url_info(path).checksum
    if actual != expected.checksum:
      raise NonMatchingChecksumError(
          f"{path} has sha256 {actual}, expected {expected.checksum} ({expected.size} "
          f"bytes): it is not the original {FILENAME}; download it again from {URL}")
