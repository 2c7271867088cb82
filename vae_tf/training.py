"""Fitting a VAE with `model.fit`: checkpoints, resumption, logs.

State that makes a run resumable lives in `model_dir`:
  config.json        the model and training configuration (written once);
  checkpoints/       tf.train.CheckpointManager checkpoints of the model, the
                     optimizer and the epoch's running metrics;
  metrics.csv        one row per epoch (Keras CSVLogger);
  tensorboard/       TensorBoard summaries.
The number of SGD updates done is the optimizer's `iterations`; the input
stream is a pure function of it (see `vae_tf.data.pipeline`), so a run killed
at any point continues from its last checkpoint along the same curve.

Under a distribution strategy (`vae_tf.distribute`) the same `fit` runs on
every worker; `train.batch_size` is per replica, and only the chief writes
`model_dir`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
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
from vae_tf import distribute, schedules
from vae_tf.baselines import mcem, wake_sleep
from vae_tf.data import pipeline
from vae_tf.model import VAE

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"


class ConfigMismatchError(ValueError):
  """model_dir holds a run whose settings differ from the requested ones."""


def make_optimizer(train: config_lib.TrainConfig,
                   total_steps: int | None = None) -> keras.optimizers.Optimizer:
  """The optimizer of `train`, its schedule spanning `total_steps` SGD updates.

  Without `total_steps` (a model loaded for use, not training) the schedule
  is built over one step: only its kind matters then, since it decides which
  variables the optimizer checkpoints.
  """
  rate = schedules.make_schedule(train, total_steps or 1)
  if train.optimizer == "adagrad":
    return keras.optimizers.Adagrad(rate)
  if train.optimizer == "adam":
    return keras.optimizers.Adam(rate, beta_1=train.adam_beta1, beta_2=train.adam_beta2,
                                 epsilon=train.adam_epsilon)
  return keras.optimizers.SGD(rate)


def build_model(model_config: config_lib.ModelConfig, train: config_lib.TrainConfig,
                strategy: tf.distribute.Strategy | None = None,
                total_steps: int | None = None) -> VAE:
  """A compiled model trained by `train.method` whose optimizer slots exist, so
  checkpoints restore eagerly; its variables belong to `strategy`.
  `total_steps` is the length of the learning-rate schedule in SGD updates.
  """
  strategy = strategy or tf.distribute.get_strategy()
  keras.utils.set_random_seed(train.seed)  # the initial weights
  with strategy.scope():
    if train.method == "wake_sleep":
      model = wake_sleep.WakeSleep(model_config, seed=train.seed)
    elif train.method == "mcem":
      model = mcem.MonteCarloEM(model_config, train.train_examples, seed=train.seed)
    else:
      model = VAE(model_config, seed=train.seed)
    # XLA does not compile the collectives that keep replicas in sync.
    model.compile(optimizer=make_optimizer(train, total_steps),
                  jit_compile=not distribute.is_distributed(strategy))
    model.optimizer.build(model.trainable_variables)
  return model


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


def save_or_check_config(model_dir: Path, model_config: config_lib.ModelConfig,
                         train: config_lib.TrainConfig) -> None:
  """Records the run's settings, or refuses to resume a run with other ones.

  `epochs` may change between invocations when the learning rate is
  constant: it only says where to stop. A schedule spans `epochs`, so then
  it is part of the run's settings.
  """
  path = model_dir / CONFIG_FILE
  requested = json.loads(config_lib.dumps(model_config, train))
  if not path.exists():
    model_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, config_lib.dumps(model_config, train))
    return
  # Parsed into the dataclasses, so settings added since the run was saved
  # compare at their defaults.
  saved = json.loads(config_lib.dumps(*load_configs(model_dir)))
  differences = [
      f"{section}.{key}: saved {saved[section].get(key)!r}, requested {value!r}"
      for section in ("model", "train") for key, value in requested[section].items()
      if (key != "epochs" or train.lr_schedule != "constant")
      and saved[section].get(key) != value
  ]
  if differences:
    raise ConfigMismatchError(
        f"{model_dir} holds a run with different settings ({'; '.join(differences)}); "
        "use another --model_dir to start a new run")


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
  given, is the run's training clock, so callbacks can read it.
  """
  start_time = time.time() if start_time is None else start_time
  strategy = strategy or tf.distribute.get_strategy()
  distributed = distribute.is_distributed(strategy)
  chief = distribute.is_chief(strategy)
  if distributed and train.method != "aevb":
    raise ValueError(f"distributed training supports method 'aevb' only, not {train.method!r}")
  if distributed and train.updates_per_call != 1:
    raise ValueError("distributed training runs one SGD update per call (updates_per_call=1)")
  global_batch = train.batch_size * strategy.num_replicas_in_sync
  updates_per_call = train.updates_per_call
  blocks_per_epoch = pipeline.blocks_per_epoch(len(train_images), global_batch,
                                               updates_per_call)
  if blocks_per_epoch < 1:
    raise ValueError(
        f"{len(train_images)} training examples do not fill {updates_per_call} minibatch(es) "
        f"of {global_batch}; use more examples or a smaller batch_size / updates_per_call")
  if total_steps is None:
    total_steps = train.epochs * blocks_per_epoch * updates_per_call
  if total_steps % updates_per_call:
    raise ValueError(f"steps ({total_steps}) must be a multiple of updates_per_call "
                     f"({updates_per_call})")
  if train.train_examples not in (None, len(train_images)):
    raise ValueError(f"train_examples is {train.train_examples}, but {len(train_images)} "
                     "training examples were given")
  model_dir = Path(model_dir)
  if chief:
    save_or_check_config(model_dir, model_config, train)
  schedule_steps = train.epochs * blocks_per_epoch * updates_per_call
  model = build_model(model_config, train, strategy, total_steps=schedule_steps)
  clock = clock or callbacks_lib.TrainingClock()
  checkpoint = make_checkpoint(model, clock)
  latest = tf.train.latest_checkpoint(model_dir / CHECKPOINT_DIR)
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
  elif train.decoder_bias_from_data:
    model.decoder.init_output_bias(pipeline.flatten(train_images).mean(axis=0) / 255.0)
  # Every worker saves (see vae_tf.distribute); only the chief's saves persist.
  checkpoint_dir = (model_dir / CHECKPOINT_DIR if chief
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
    truncate_metrics(model_dir / METRICS_FILE, done_steps)
    loggers = [
        keras.callbacks.CSVLogger(str(model_dir / METRICS_FILE), append=True),
        keras.callbacks.TensorBoard(str(model_dir / TENSORBOARD_DIR), write_graph=False),
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
                      shuffle=False, callbacks=all_callbacks, verbose=verbose)
      history.extend(
          {key: values[i] for key, values in fit.history.items()}
          for i in range(len(fit.epoch)))
  finally:
    if not chief:
      shutil.rmtree(checkpoint_dir, ignore_errors=True)
  return TrainingResult(model, history, done_steps, int(model.optimizer.iterations.numpy()))


def load_configs(model_dir: str | os.PathLike) -> tuple[config_lib.ModelConfig,
                                                        config_lib.TrainConfig]:
  path = Path(model_dir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{model_dir} holds no trained model ({CONFIG_FILE} is missing)")
  saved = json.loads(path.read_text())
  return config_lib.ModelConfig.from_dict(saved["model"]), config_lib.TrainConfig(**saved["train"])


def load_trained_model(model_dir: str | os.PathLike) -> VAE:
  """The model of `model_dir` at its latest checkpoint."""
  model_config, train = load_configs(model_dir)
  model = build_model(model_config, train)
  latest = tf.train.latest_checkpoint(Path(model_dir) / CHECKPOINT_DIR)
  if latest is None:
    raise FileNotFoundError(f"{model_dir} has no checkpoint yet")
  # Every variable of the model must be restored; the training clock, which
  # only training runs keep, is not needed.
  make_checkpoint(model).restore(latest).assert_existing_objects_matched().expect_partial()
  return model


def save_artifacts(model: VAE, model_dir: str | os.PathLike, images: np.ndarray,
                   binarization: str, seed: int = 0) -> list[Path]:
  """The end-of-training outputs: model.keras and PNGs of samples,
  reconstructions of `images` and, for a 2-D latent space, the manifold.
  """
  from vae_tf import plotting

  model_dir = Path(model_dir)
  shape = model.config.input_shape
  written = [
      plotting.save_image_grid(plotting.prior_samples(model, shape, [seed, 0]),
                               model_dir / "samples.png", ncols=10, scale=2),
      plotting.save_image_grid(
          plotting.reconstructions(model, pipeline.evaluation_array(images[:50], binarization),
                                   shape),
          model_dir / "reconstructions.png", ncols=10, scale=2),
  ]
  if model.config.latent_dim == 2:
    written.append(plotting.save_image_grid(plotting.latent_manifold(model, shape),
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
  from vae_tf import export

  model_dir = Path(model_dir)
  return export.export_saved_model(
      model, export_base or model_dir / EXPORT_DIR, model_name or export.DEFAULT_MODEL_NAME,
      version, (model_dir / CONFIG_FILE).read_text())
