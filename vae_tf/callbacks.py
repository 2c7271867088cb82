"""The Keras callbacks of a training run (`vae_tf.training.train`).

Each keeps one promise of the run folder: checkpoints at the right steps,
validation draws that depend on the weights alone, progress fields in the
logs, an interrupted epoch's running metrics put back, and a training clock
that survives resumption. `ProgressReport` is the console's view of a run.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

import keras
import numpy as np
import tensorflow as tf


class TrainingClock(keras.callbacks.Callback):
  """Time spent in training steps, summed over the run's invocations.

  Only the compiled calls are counted, from a batch's begin to its end, so
  validation, curve evaluations and checkpoint writes between them are not.
  `seconds` is wall-clock time; `cpu_seconds` is the CPU time of this process
  (every thread) in the same intervals, which other work on a shared machine
  does not inflate. Both are checkpointed, so a resumed run continues them.
  """

  def __init__(self):
    super().__init__()
    self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="training_seconds")
    self.cpu_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                   name="training_cpu_seconds")

  def on_train_batch_begin(self, batch, logs=None):
    self._began = time.perf_counter(), time.process_time()

  def on_train_batch_end(self, batch, logs=None):
    wall, cpu = self._began
    self.seconds.assign_add(time.perf_counter() - wall)
    self.cpu_seconds.assign_add(time.process_time() - cpu)


class CheckpointEverySteps(keras.callbacks.Callback):
  """Checkpoints every `every_steps` SGD updates and after the last one.

  Mid-epoch saves happen at a train-batch end, before `fit` validates, so the
  checkpoint holds the epoch's running training metrics. A save due at an
  epoch's end waits for `on_epoch_end`, after validation and the metrics.csv
  row (this callback runs after the loggers), so a resumed run lacks no row.
  """

  def __init__(self, manager: tf.train.CheckpointManager, every_steps: int,
               steps_per_epoch: int):
    super().__init__()
    self.manager = manager
    self.every_steps = every_steps
    self.steps_per_epoch = steps_per_epoch

  def _steps(self) -> int:
    return int(self.model.optimizer.iterations.numpy())

  def _due(self, last_of_fit: bool) -> bool:
    return last_of_fit or self._steps() // self.every_steps > self._last_saved // self.every_steps

  def _save(self) -> None:
    self._last_saved = self._steps()
    self.manager.save(checkpoint_number=self._last_saved)

  def on_train_begin(self, logs=None):
    self._last_saved = self._steps()

  def on_epoch_begin(self, epoch, logs=None):
    self._last_epoch = epoch + 1 == self.params["epochs"]

  def on_train_batch_end(self, batch, logs=None):
    last_of_fit = self._last_epoch and batch + 1 == self.params["steps"]
    if self._steps() % self.steps_per_epoch and self._due(last_of_fit):
      self._save()

  def on_epoch_end(self, epoch, logs=None):
    if self._steps() % self.steps_per_epoch == 0 and self._due(self._last_epoch):
      self._save()


class FixedValidationSeed(keras.callbacks.Callback):
  """Validates every epoch with the same z draws.

  Validation numbers are then a function of the weights alone: comparable
  across epochs and identical whether or not the run was resumed.
  """

  def on_test_begin(self, logs=None):
    self.model.reset_eval_seed()


# The logged fields that time the run rather than describe the model: they
# differ between two runs that are otherwise the same bit for bit.
TIMING_FIELDS = ("wall_seconds", "training_seconds", "training_cpu_seconds")


class ProgressFields(keras.callbacks.Callback):
  """Adds SGD steps, examples seen, wall-clock time since the process started
  and the run's training seconds to each epoch's logs.

  Placed before the loggers so CSV and TensorBoard record them too.
  """

  def __init__(self, batch_size: int, start_time: float, clock: TrainingClock):
    super().__init__()
    self.batch_size = batch_size
    self.start_time = start_time
    self.clock = clock

  def on_epoch_end(self, epoch, logs=None):
    steps = int(self.model.optimizer.iterations.numpy())
    logs["steps"] = steps
    logs["examples_seen"] = steps * self.batch_size
    logs["wall_seconds"] = time.time() - self.start_time
    logs["training_seconds"] = float(self.clock.seconds.numpy())
    logs["training_cpu_seconds"] = float(self.clock.cpu_seconds.numpy())


class RestoreEpochMetrics(keras.callbacks.Callback):
  """Puts back the running metrics of an epoch that a checkpoint interrupted.

  `fit` resets metrics at every epoch start; this runs right after that reset
  on the resumed epoch only, so its logged averages cover the whole epoch.
  """

  def __init__(self, values: list[np.ndarray]):
    super().__init__()
    self.values = values

  def on_epoch_begin(self, epoch, logs=None):
    if self.values is not None:
      for variable, value in zip(self.model.metrics_variables, self.values):
        variable.assign(value)
      self.values = None


def _fixed_point(value: float) -> str:
  return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(round(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressReport(keras.callbacks.Callback):
  """Progress of a run in training examples, with examples/s, ETA and metrics.

  Stands in for Keras's progress bar (`fit(verbose=0)`), which counts `fit`
  steps (blocks of `updates_per_call` fused SGD updates) and prints metrics
  in scientific notation. Writes to `stream` one line for the first epoch,
  one for each epoch that completes another tenth of the run, and one for
  the last, so a run of any length prints about a dozen lines (metrics.csv
  has every epoch). With `live` (a terminal), a status line in between is
  redrawn after every `fit` step.

  The first metric (the training objective: ELBO, or MCEM's log joint) is
  in nats; the others follow in brackets, validation's headline at the end.
  """

  REPORTS_PER_RUN = 10

  @classmethod
  def for_verbose(cls, verbose: int | str, batch_size: int, total_steps: int,
                  steps_per_epoch: int) -> list[ProgressReport]:
    """`fit`'s `verbose` as this report on stdout, in place of Keras's bar:
    none for 0, redrawn live on a terminal for 1 or "auto", lines otherwise."""
    if not verbose:
      return []
    return [cls(batch_size, total_steps, steps_per_epoch, sys.stdout,
                live=verbose in (1, "auto") and sys.stdout.isatty())]

  def __init__(self, batch_size: int, total_steps: int, steps_per_epoch: int,
               stream: TextIO, live: bool = False):
    super().__init__()
    self.batch_size = batch_size
    self.total_examples = total_steps * batch_size
    self.total_epochs = math.ceil(total_steps / steps_per_epoch)
    self.stream = stream
    self.live = live
    self._last_reported = None
    # (time.perf_counter(), examples seen) when training began, and after
    # the first `fit` step.
    self._start = self._warm = None

  def _examples(self) -> int:
    return int(self.model.optimizer.iterations.numpy()) * self.batch_size

  def _tenth(self, examples: int) -> int:
    return examples * self.REPORTS_PER_RUN // self.total_examples

  def _rate(self, examples: int) -> float:
    """Examples per second, from the end of the first `fit` step (which
    traces and compiles) when there has been training since."""
    (began, since), now = self._warm or self._start, time.perf_counter()
    if examples <= since:
      began, since = self._start
    return (examples - since) / (now - began) if now > began else 0.0

  def _counts(self, epoch: int, examples: int) -> str:
    rate = self._rate(examples)
    remaining = self.total_examples - examples
    timing = (f"ETA {_duration(remaining / rate)}" if remaining > 0 and rate > 0
              else f"done in {_duration(time.perf_counter() - self._start[0])}")
    return (f"epoch {epoch + 1:{len(str(self.total_epochs))}d}/{self.total_epochs}  "
            f"{examples:{len(f'{self.total_examples:,}')},} examples  "
            f"{rate:6,.0f} examples/s  {timing}")

  def _metrics(self, logs: dict, prefix: str = "", headline_only: bool = False) -> str:
    names = [name for name in self.model.metrics_names if prefix + name in logs]
    if not names:
      return ""
    headline, *others = names
    text = f"{headline} {_fixed_point(logs[prefix + headline])} nats"
    if others and not headline_only:
      text += " (" + ", ".join(f"{name} {_fixed_point(logs[prefix + name])}"
                               for name in others) + ")"
    return text

  def _write(self, text: str, permanent: bool) -> None:
    # A live line is redrawn in place; \x1b[K clears what a longer one left.
    prefix = "\r\x1b[K" if self.live else ""
    self.stream.write(prefix + text + ("\n" if permanent else ""))
    self.stream.flush()

  def on_train_begin(self, logs=None):
    # `train` may call `fit` more than once for one run; time them all.
    if self._start is None:
      self._start = time.perf_counter(), self._examples()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self._warm is None:
      self._warm = time.perf_counter(), self._examples()
    if self.live:
      self._write(self._counts(self._epoch, self._examples()), permanent=False)

  def on_epoch_end(self, epoch, logs=None):
    examples = self._examples()
    if (self._last_reported is not None and examples < self.total_examples
        and self._tenth(examples) == self._tenth(self._last_reported)):
      return
    self._last_reported = examples
    logs = logs or {}
    parts = [self._counts(epoch, examples), self._metrics(logs)]
    validation = self._metrics(logs, prefix="val_", headline_only=True)
    if validation:
      parts.append(f"validation {validation}")
    self._write("  ".join(part for part in parts if part), permanent=True)
