"""Learning curves recorded while a run trains, one CSV row per point.

A curve's points are SGD steps fixed in advance (`evaluation_steps`,
`epoch_steps`); `CurveRecorder` evaluates the model as training passes each,
so a resumed run evaluates only the points still missing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from vae_tf import run_folder

CURVE_FILE = "curve.csv"

Evaluate = Callable[[keras.Model], dict]


def evaluation_steps(examples: tuple[int, int], num_points: int, batch_size: int,
                     updates_per_call: int) -> list[int]:
  """SGD steps, whole blocks, nearest above `num_points` log-spaced example counts."""
  block = batch_size * updates_per_call
  counts = np.geomspace(examples[0], examples[1], num_points)
  return sorted({max(1, math.ceil(count / block - 1e-9)) * updates_per_call for count in counts})


def epoch_steps(epochs: int, num_points: int, steps_per_epoch: int) -> list[int]:
  """SGD steps at whole epochs nearest `num_points` log-spaced epoch counts."""
  return sorted({int(round(e)) * steps_per_epoch
                 for e in np.geomspace(1, epochs, num_points)})


class CurveRecorder(keras.callbacks.Callback):
  """Evaluates the model when training reaches one of its pending steps.

  Rows go to curve.csv at once, so a run stopped at any moment loses at most
  the point it was evaluating (which is redone, from the same weights, on
  resumption: a checkpoint is never beyond the first pending point, because
  every point is evaluated before training goes on).
  """

  def __init__(self, path: Path, steps: list[int], examples_per_step: int, evaluate: Evaluate):
    super().__init__()
    self.path = path
    self.rows = run_folder.read_csv_rows(path)
    done = {row["steps"] for row in self.rows}
    self.pending = [step for step in steps if step not in done]
    self.examples_per_step = examples_per_step
    self.evaluate = evaluate

  def record_if_due(self, model: keras.Model) -> None:
    steps = int(model.optimizer.iterations.numpy())
    if steps in self.pending:
      started = time.time()
      row = {"steps": steps, "examples_seen": steps * self.examples_per_step,
             **self.evaluate(model)}
      row["evaluation_seconds"] = round(time.time() - started, 2)
      self.rows.append(row)
      self.pending.remove(steps)
      run_folder.write_csv_atomically(self.path, self.rows)

  def on_train_begin(self, logs=None):
    self.record_if_due(self.model)

  def on_train_batch_end(self, batch, logs=None):
    self.record_if_due(self.model)

  def sorted_rows(self) -> list[dict]:
    return sorted(self.rows, key=lambda row: row["steps"])
