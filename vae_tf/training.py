"""Fitting a VAE with `model.fit` into a run folder, resumably.

The run folder (`vae_tf.run_folder`) holds the configuration, checkpoints of
the model, the optimizer and the epoch's running metrics, metrics.csv and
TensorBoard logs. The number of SGD updates done is the optimizer's
`iterations`; the input stream is a pure function of it (see
`vae_tf.data.pipeline`), so a run killed at any point continues from its
last checkpoint along the same curve.

Under a distribution strategy (`vae_tf.distribute`) the same `fit` runs on
every worker; `train.batch_size` is per replica, and only the chief writes
`model_dir`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import callbacks as callbacks_lib
from vae_tf import distribute, run_folder
from vae_tf.data import pipeline
from vae_tf.learners import build_model
from vae_tf.model import VAE


def fit_updates_per_call(train: config_lib.TrainConfig, num_examples: int,
                         strategy: tf.distribute.Strategy | None = None
                         ) -> config_lib.TrainConfig:
  """Fuses a whole epoch at most, so small training sets still fill a block;
  one update per call under a distributing `strategy` (see `vae_tf.distribute`).
  """
  strategy = strategy or tf.distribute.get_strategy()
  if distribute.is_distributed(strategy):
    return dataclasses.replace(train, updates_per_call=1)
  steps_per_epoch = num_examples // (train.batch_size * strategy.num_replicas_in_sync)
  if train.updates_per_call <= steps_per_epoch:
    return train
  return dataclasses.replace(train, updates_per_call=max(1, steps_per_epoch))


def make_checkpoint(model: VAE, clock: callbacks_lib.TrainingClock | None = None
                    ) -> tf.train.Checkpoint:
  """Weights, random-seed states, running metrics, optimizer state and, when
  training, the training clock (`TrainingClock`).

  Keras 3 models do not expose their variables to TF's object graph, so they
  are listed by path.
  """
  extra = {} if clock is None else {"training_seconds": clock.seconds,
                                    "training_cpu_seconds": clock.cpu_seconds}
  return tf.train.Checkpoint(
      model={v.path: v for v in model.variables},
      metrics={v.path: v for v in model.metrics_variables},
      optimizer=model.optimizer, **extra)


def load_trained_model(model_dir: str | os.PathLike) -> VAE:
  """The model of `model_dir` at its latest checkpoint."""
  model_config, train = run_folder.load_configs(model_dir)
  model = build_model(model_config, train)
  latest = tf.train.latest_checkpoint(Path(model_dir) / run_folder.CHECKPOINT_DIR)
  if latest is None:
    raise FileNotFoundError(f"{model_dir} has no checkpoint yet")
  # Every variable of the model must be restored; the training clock, which
  # only training runs keep, is not needed.
  make_checkpoint(model).restore(latest).assert_existing_objects_matched().expect_partial()
  return model


@dataclasses.dataclass
class TrainingResult:
  model: VAE
  history: list[dict]
  resumed_from_step: int
  steps: int


def _segments(first_block: int, last_block: int, blocks_per_epoch: int):
  """Splits [first_block, last_block) into runs that each fit in whole epochs

  except a partial head (resuming mid-epoch) and a partial tail (a step budget
  that ends mid-epoch), so one `fit` call covers each run.
  """
  block = first_block
  while block < last_block:
    epoch, offset = divmod(block, blocks_per_epoch)
    if offset or last_block - block < blocks_per_epoch:
      length = min(blocks_per_epoch - offset, last_block - block)
      yield epoch, epoch + 1, length
    else:
      epochs = (last_block - block) // blocks_per_epoch
      yield epoch, epoch + epochs, blocks_per_epoch
      length = epochs * blocks_per_epoch
    block += length


def _blocks_per_epoch(train: config_lib.TrainConfig, num_examples: int,
                      strategy: tf.distribute.Strategy) -> int:
  """Checks that `train` can run on `num_examples` under `strategy`; blocks per epoch."""
  distributed = distribute.is_distributed(strategy)
  if distributed and train.method != "aevb":
    raise ValueError(f"distributed training supports method 'aevb' only, not {train.method!r}")
  if distributed and train.updates_per_call != 1:
    raise ValueError("distributed training runs one SGD update per call (updates_per_call=1)")
  global_batch = train.batch_size * strategy.num_replicas_in_sync
  blocks = pipeline.blocks_per_epoch(num_examples, global_batch, train.updates_per_call)
  if blocks < 1:
    raise ValueError(
        f"{num_examples} training examples do not fill {train.updates_per_call} minibatch(es) "
        f"of {global_batch}; use more examples or a smaller batch_size / updates_per_call")
  if train.train_examples not in (None, num_examples):
    raise ValueError(f"train_examples is {train.train_examples}, but {num_examples} "
                     "training examples were given")
  return blocks


def train(model_config: config_lib.ModelConfig, train: config_lib.TrainConfig, *,
          train_images: np.ndarray, validation_images: np.ndarray | None,
          model_dir: str | os.PathLike,
          total_steps: int | None = None, verbose: int | str = "auto",
          start_time: float | None = None,
          callbacks: list[keras.callbacks.Callback] = (),
          strategy: tf.distribute.Strategy | None = None,
          clock: callbacks_lib.TrainingClock | None = None) -> TrainingResult:
  """Trains, or resumes training of, the model stored in `model_dir`.

  Runs `train.epochs` epochs unless `total_steps` (SGD updates) is given.
  Validates on `validation_images` after every epoch, unless it is None.
  `callbacks` run after the trainer's own (checkpointing, logging).
  Under a distributing `strategy` every worker calls this with the same
  arguments; `train.batch_size` is then the per-replica batch. `clock`, if
  given, is the run's training clock, so callbacks can read it. A nonzero
  `verbose` reports progress on stdout (`callbacks.ProgressReport`; 1 or
  "auto": redrawn live on a terminal).
  """
  start_time = time.time() if start_time is None else start_time
  strategy = strategy or tf.distribute.get_strategy()
  distributed = distribute.is_distributed(strategy)
  chief = distribute.is_chief(strategy)
  blocks_per_epoch = _blocks_per_epoch(train, len(train_images), strategy)
  global_batch = train.batch_size * strategy.num_replicas_in_sync
  updates_per_call = train.updates_per_call
  if total_steps is None:
    total_steps = train.epochs * blocks_per_epoch * updates_per_call
  if total_steps % updates_per_call:
    raise ValueError(f"steps ({total_steps}) must be a multiple of updates_per_call "
                     f"({updates_per_call})")
  model_dir = Path(model_dir)
  if chief:
    run_folder.save_or_check_config(model_dir, model_config, train)
  schedule_steps = train.epochs * blocks_per_epoch * updates_per_call
  model = build_model(model_config, train, strategy, total_steps=schedule_steps)
  clock = clock or callbacks_lib.TrainingClock()
  checkpoint = make_checkpoint(model, clock)
  latest = tf.train.latest_checkpoint(model_dir / run_folder.CHECKPOINT_DIR)
  if latest:
    # Every variable of the model must come back; values the model no longer
    # has (an MCEM run saved with its unused encoder) may stay behind.
    try:
      checkpoint.restore(latest).assert_existing_objects_matched().expect_partial()
    except AssertionError as error:
      raise ValueError(
          f"{model_dir} holds a checkpoint of another version of the {train.method} learner "
          f"(it lacks some of this version's variables), so it cannot resume; train into "
          f"another folder. TensorFlow: {str(error).splitlines()[0]}") from error
  elif train.decoder_bias_from_data:
    model.decoder.init_output_bias(pipeline.flatten(train_images).mean(axis=0) / 255.0)
  # Every worker saves (see vae_tf.distribute); only the chief's saves persist.
  checkpoint_dir = (model_dir / run_folder.CHECKPOINT_DIR if chief
                    else Path(tempfile.mkdtemp(prefix="vae_tf_worker_checkpoints_")))
  manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=3)

  done_steps = int(model.optimizer.iterations.numpy())
  resumed_mid_epoch = (done_steps // updates_per_call) % blocks_per_epoch != 0
  epoch_metrics = ([v.numpy() for v in model.metrics_variables]
                   if resumed_mid_epoch else None)
  validation = None if validation_images is None else pipeline.evaluation_batches(
      validation_images, train.binarization, batch_size=1000)
  loggers = []
  if chief:
    run_folder.truncate_metrics(model_dir / run_folder.METRICS_FILE, done_steps)
    loggers = [
        keras.callbacks.CSVLogger(str(model_dir / run_folder.METRICS_FILE), append=True),
        keras.callbacks.TensorBoard(str(model_dir / run_folder.TENSORBOARD_DIR),
                                    write_graph=False),
    ]
  all_callbacks = [
      callbacks_lib.RestoreEpochMetrics(epoch_metrics),
      clock,
      callbacks_lib.FixedValidationSeed(),
      callbacks_lib.ProgressFields(global_batch, start_time, clock),
      *loggers,
      callbacks_lib.CheckpointEverySteps(manager, train.checkpoint_every_steps,
                                         blocks_per_epoch * updates_per_call),
      *callbacks,
  ]
  all_callbacks += callbacks_lib.ProgressReport.for_verbose(
      verbose, global_batch, total_steps, blocks_per_epoch * updates_per_call)
  history = []
  try:
    for initial_epoch, epochs, steps_per_epoch in _segments(
        done_steps // updates_per_call, total_steps // updates_per_call, blocks_per_epoch):
      start_block = int(model.optimizer.iterations.numpy()) // updates_per_call

      def make_stream(start_block=start_block):
        return pipeline.training_blocks(
            train_images, batch_size=global_batch, updates_per_call=updates_per_call,
            binarization=train.binarization, seed=train.seed, start_block=start_block,
            with_indices=model.needs_example_indices)

      if distributed:
        # Blocks of one update, as single minibatches [M, D].
        stream = distribute.distribute_minibatches(
            strategy, lambda: make_stream().map(lambda block: block[0]), global_batch)
      else:
        stream = make_stream()
      fit = model.fit(stream, initial_epoch=initial_epoch, epochs=epochs,
                      steps_per_epoch=steps_per_epoch, validation_data=validation,
                      shuffle=False, callbacks=all_callbacks, verbose=0)
      history.extend(
          {key: values[i] for key, values in fit.history.items()}
          for i in range(len(fit.epoch)))
  finally:
    if not chief:
      shutil.rmtree(checkpoint_dir, ignore_errors=True)
  return TrainingResult(model, history, done_steps, int(model.optimizer.iterations.numpy()))
