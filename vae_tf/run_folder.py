"""The files of a run folder, and how they are written and read back.

A training run (`vae_tf.training`) keeps in `model_dir`:
  config.json   the model and training configuration (written once);
  checkpoints/  tf.train.CheckpointManager checkpoints;
  metrics.csv   one row per epoch (Keras CSVLogger);
  tensorboard/  TensorBoard summaries;
  export/       SavedModel versions for serving (`vae_tf.artifacts`).
Searches (`vae_tf.tuning`) and reproductions (`vae_tf.reproduction`) keep
their own records beside such runs with the same writers.

Pure Python (no TensorFlow): every write is atomic, so a process killed at
any moment leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable

from vae_tf import config as config_lib

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"


class ConfigMismatchError(ValueError):
  """model_dir holds a run whose settings differ from the requested ones."""


def write_atomically(path: Path, text: str) -> None:
  temporary = path.with_name(f".{path.name}.tmp")
  temporary.write_text(text)
  os.replace(temporary, path)


def write_csv_atomically(path: Path, rows: list[dict]) -> Path:
  """Rows (dicts with the same keys, None written empty) as CSV, atomically."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomically(path, buffer.getvalue())
  return path


def read_csv_rows(path: Path) -> list[dict]:
  """Rows written by `write_csv_atomically`, cells parsed back; [] if there is no file."""
  if not path.exists():
    return []
  with open(path, newline="") as f:
    return [{key: _parse(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _parse(value: str) -> int | float | str | None:
  """A CSV cell: empty for None, else int, float or text."""
  if value == "":
    return None
  for kind in (int, float):
    try:
      return kind(value)
    except ValueError:
      pass
  return value


def record_or_refuse(path: Path, settings: dict,
                     refusal: Callable[[dict, str], Exception], *,
                     compared: Callable[[dict], dict[str, Any]] = lambda settings: settings,
                     sort_keys: bool = True) -> None:
  """Records `settings` as JSON at `path`, or refuses a folder that holds others.

  The first process to get here writes the file (linked into place, so
  concurrent processes agree on one); every later one compares against it.
  `compared` maps a settings dict (saved or requested, as parsed from JSON)
  to the named values that must match; on a difference this raises
  `refusal(saved, differences)`, `differences` naming each value that differs.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(settings, indent=2, sort_keys=sort_keys)
  requested = compared(json.loads(text))  # tuples become lists, as in the saved file
  temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  temporary.write_text(text)
  try:
    os.link(temporary, path)
  except FileExistsError:
    saved = json.loads(path.read_text())
    saved_values = compared(saved)
    differences = [f"{key}: saved {saved_values.get(key)!r}, requested {requested.get(key)!r}"
                   for key in sorted(set(saved_values) | set(requested))
                   if saved_values.get(key) != requested.get(key)]
    if differences:
      raise refusal(saved, "; ".join(differences)) from None
  finally:
    temporary.unlink()


def save_or_check_config(model_dir: Path, model_config: config_lib.ModelConfig,
                         train: config_lib.TrainConfig) -> None:
  """Records the run's settings, or refuses to resume a run with other ones.

  `epochs` may change between invocations when the learning rate is
  constant: it only says where to stop. A schedule spans `epochs`, so then
  it is part of the run's settings.
  """

  def compared(settings: dict) -> dict[str, Any]:
    # Parsed into the dataclasses, so settings added since the run was saved
    # compare at their defaults.
    parsed = json.loads(config_lib.dumps(*_configs_from_dict(settings)))
    return {f"{section}.{key}": value for section in ("model", "train")
            for key, value in parsed[section].items()
            if key != "epochs" or section != "train" or train.lr_schedule != "constant"}

  record_or_refuse(
      Path(model_dir) / CONFIG_FILE,
      {"model": model_config.to_dict(), "train": train.to_dict()},
      lambda saved, differences: ConfigMismatchError(
          f"{model_dir} holds a run with different settings ({differences}); "
          "use another --model_dir to start a new run"),
      compared=compared)


def _configs_from_dict(saved: dict) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
  return config_lib.ModelConfig.from_dict(saved["model"]), config_lib.TrainConfig(**saved["train"])


def load_configs(model_dir: str | os.PathLike) -> tuple[config_lib.ModelConfig,
                                                        config_lib.TrainConfig]:
  path = Path(model_dir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{model_dir} holds no trained model ({CONFIG_FILE} is missing)")
  return _configs_from_dict(json.loads(path.read_text()))


def truncate_metrics(path: Path, steps: int) -> None:
  """Drops metrics.csv rows logged after the checkpoint being resumed from.

  A run killed between logging an epoch and its next checkpoint repeats that
  epoch on resumption; without this its row would appear twice.
  """
  if not path.exists():
    return
  header, *rows = path.read_text().splitlines(keepends=True)
  column = header.rstrip("\n").split(",").index("steps")
  kept = [row for row in rows if int(float(row.split(",")[column])) <= steps]
  if len(kept) < len(rows):
    write_atomically(path, header + "".join(kept))
