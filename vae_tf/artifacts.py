"""What a finished run leaves for people and servers, beside its checkpoints.

Sample, reconstruction and manifold PNGs and a Keras `model.keras` in the run
folder, and SavedModel versions under `<model_dir>/export` (`vae_tf.export`)
for TensorFlow Serving.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vae_tf import export, image_grids, run_folder
from vae_tf.data import pipeline
from vae_tf.learner_base import AmortizedLearner, Learner
from vae_tf.model import VAE


def save_artifacts(model: Learner, model_dir: str | os.PathLike, images: np.ndarray,
                   binarization: str, seed: int = 0) -> list[Path]:
  """The end-of-training outputs: model.keras and PNGs of samples,
  reconstructions of `images` (a learner with q(z|x)) and, for a 2-D latent
  space, the manifold.
  """
  model_dir = Path(model_dir)
  shape = model.config.input_shape
  written = [image_grids.save_image_grid(image_grids.prior_samples(model, shape, [seed, 0]),
                                         model_dir / "samples.png", ncols=10, scale=2)]
  if isinstance(model, AmortizedLearner):  # MCEM has no q(z|x) to reconstruct with
    written.append(image_grids.save_image_grid(
        image_grids.reconstructions(
            model, pipeline.evaluation_array(images[:50], binarization), shape),
        model_dir / "reconstructions.png", ncols=10, scale=2))
  if model.config.latent_dim == 2:
    written.append(image_grids.save_image_grid(image_grids.latent_manifold(model, shape),
                                               model_dir / "manifold.png", ncols=20))
  saved_model = model_dir / "model.keras"
  temporary = model_dir / ".model.keras.tmp.keras"
  model.save(temporary)
  os.replace(temporary, saved_model)
  return [*written, saved_model]


def export_run(model: VAE, model_dir: str | os.PathLike, export_base: str | None = None,
               model_name: str | None = None, version: int | None = None) -> Path:
  """Exports `model`, trained in `model_dir`, as a new SavedModel version.

  The version carries the run's config.json; `export_base` defaults to
  `<model_dir>/export`.
  """
  model_dir = Path(model_dir)
  return export.export_saved_model(
      model, export_base or model_dir / run_folder.EXPORT_DIR,
      model_name or export.DEFAULT_MODEL_NAME, version,
      (model_dir / run_folder.CONFIG_FILE).read_text())
