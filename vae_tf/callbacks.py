"""The Keras callbacks of a training run (`vae_tf.training.train`).

Each keeps one promise of the run folder: checkpoints at the right steps,
validation draws that depend on the weights alone, progress fields in the
logs, an interrupted epoch's running metrics put back, and a training clock
that survives resumption.
"""

from __future__ import annotations

import time

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
