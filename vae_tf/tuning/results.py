"""What a finished search leaves: the summary table and the best model's run folder."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras_tuner
import tensorflow as tf

from vae_tf import run_folder, training
from vae_tf.model import VAE
from vae_tf.tuning.hypermodel import VAEHyperModel
from vae_tf.tuning.tuners import TRIAL_RECORD_FILE

SUMMARY_MARKDOWN = "summary.md"
SUMMARY_CSV = "summary.csv"
PLOT_FILE = "val_elbo_by_latent_dim.png"
BEST_MODEL_DIR = "best_model"


@dataclasses.dataclass
class TrialRow:
  trial_id: str
  status: str
  hyperparameters: dict[str, Any]
  best_val_elbo: float | None
  best_epoch: int | None
  epochs: int | None
  seconds: float | None
  tuner_id: str | None
  val_log_likelihood: float | None = None


def trial_rows(tuner: keras_tuner.Tuner, hypermodel: VAEHyperModel) -> list[TrialRow]:
  """One row per trial the oracle knows, in trial order."""
  rows = []
  for trial_id, trial in sorted(tuner.oracle.trials.items()):
    record_path = Path(tuner.get_trial_dir(trial_id)) / TRIAL_RECORD_FILE
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    values = trial.hyperparameters.values
    score = trial.score if trial.status == "COMPLETED" else None
    rows.append(TrialRow(
        trial_id=trial_id,
        status=trial.status,
        hyperparameters={name: values[name] for name in hypermodel.search_space
                         if name in values},
        best_val_elbo=None if score is None else float(score),
        # Keras counts epochs from 1 in its logs; KerasTuner's steps from 0.
        best_epoch=None if score is None else trial.best_step + 1,
        epochs=record.get("epochs"),
        seconds=record.get("seconds"),
        tuner_id=record.get("tuner_id"),
    ))
  return rows


def _format(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
  return str(value)


def _table(rows: list[TrialRow], parameters: list[str]) -> tuple[list[str], list[list]]:
  header = ["trial", "status", *parameters, "best_val_elbo", "best_epoch", "epochs",
            "seconds", "worker"]
  rescored = any(row.val_log_likelihood is not None for row in rows)
  if rescored:
    header.append("val_is_log_likelihood")
  table = []
  for row in rows:
    cells = [row.trial_id, row.status, *(row.hyperparameters.get(p) for p in parameters),
             row.best_val_elbo, row.best_epoch, row.epochs, row.seconds, row.tuner_id]
    if rescored:
      cells.append(row.val_log_likelihood)
    table.append(cells)
  return header, table


def write_summary(rows: list[TrialRow], parameters: list[str], directory: str | os.PathLike,
                  notes: list[str] = ()) -> list[Path]:
  """summary.csv (full precision) and summary.md (the table plus `notes`)."""
  directory = Path(directory)
  header, table = _table(rows, parameters)
  run_folder.write_csv_atomically(directory / SUMMARY_CSV,
                                  [dict(zip(header, cells)) for cells in table])
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(_format(cell) for cell in cells) + " |" for cells in table]
  markdown = "\n".join(["# Tuning summary", "", *lines, "", *(f"- {note}" for note in notes)])
  run_folder.write_atomically(directory / SUMMARY_MARKDOWN, markdown.rstrip() + "\n")
  return [directory / SUMMARY_CSV, directory / SUMMARY_MARKDOWN]


def save_best_model(model: VAE, hypermodel: VAEHyperModel, hp: keras_tuner.HyperParameters,
                    directory: str | os.PathLike) -> Path:
  """Writes the best trial's model as a run folder (config.json + checkpoint).

  `pipelines.evaluate` and `pipelines.export` then take it like any trained
  run. The folder is assembled aside and swapped in, so a crash leaves either
  the previous best model or the new one.
  """
  directory = Path(directory)
  staging = directory.with_name(f".{directory.name}.tmp")
  shutil.rmtree(staging, ignore_errors=True)
  model_config, train = hypermodel.configs(hp)
  run_folder.save_or_check_config(staging, model_config, train)
  tf.train.CheckpointManager(training.make_checkpoint(model),
                             staging / run_folder.CHECKPOINT_DIR,
                             max_to_keep=1).save(checkpoint_number=0)
  retired = directory.with_name(f".{directory.name}.old")
  shutil.rmtree(retired, ignore_errors=True)
  if directory.exists():
    os.rename(directory, retired)
  os.rename(staging, directory)
  shutil.rmtree(retired, ignore_errors=True)
  return directory
