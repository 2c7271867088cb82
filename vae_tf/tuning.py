"""Hyperparameter search with KerasTuner, latent dimensionality first.

The paper's central knob is Nz; the search space also covers the knobs that
interact with it (hidden units, step size, optionally the estimator and the
activation). Every trial trains our `VAE` on the same `tf.data` stream as
`vae_tf.training` and is scored by its best validation ELBO.

Distributed search uses KerasTuner's own mechanism: a chief process holds the
oracle behind a gRPC service, workers run trials, all configured by
KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT and
sharing one tuner folder. `serve_oracle` runs the chief; unlike KerasTuner's
own loop it notices workers that went silent, sends their trials back for
retry, and returns once no worker is left instead of waiting forever.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np

from vae_tf import callbacks as callbacks_lib
from vae_tf import config as config_lib
from vae_tf import training
from vae_tf.data import pipeline
from vae_tf.model import VAE
from vae_tf.search_space import Choice, Dimension, SearchSpaceError, grid_size, value_type

OBJECTIVE = keras_tuner.Objective("val_elbo", direction="max")
TUNERS = ("hyperband", "bayesian", "random")

# Written into the project folder: the settings that define the search (so a
# resumed search or a late worker cannot silently run other trials) and, per
# trial, who ran it and for how long.
SETTINGS_FILE = "vae_tf_search.json"
TRIAL_RECORD_FILE = "vae_tf_trial.json"
SUMMARY_MARKDOWN = "summary.md"
SUMMARY_CSV = "summary.csv"
PLOT_FILE = "val_elbo_by_latent_dim.png"
BEST_MODEL_DIR = "best_model"

# Seconds a worker sleeps when the oracle answers IDLE (Hyperband waiting for a
# bracket's other trials); KerasTuner would otherwise re-ask in a busy loop.
IDLE_BACKOFF_SECONDS = 0.5


# --- The search space as KerasTuner hyperparameters -------------------------------


def _register(hp: keras_tuner.HyperParameters, name: str, dim: Dimension):
  if isinstance(dim, Choice):
    if len(dim.values) == 1:
      return hp.Fixed(name, dim.values[0])
    return hp.Choice(name, list(dim.values))
  if value_type(name) is int:
    return hp.Int(name, int(dim.min), int(dim.max), step=int(dim.step or 1),
                  sampling=dim.sampling)
  return hp.Float(name, dim.min, dim.max, step=dim.step, sampling=dim.sampling)


# --- The hypermodel -------------------------------------------------------------


class VAEHyperModel(keras_tuner.HyperModel):
  """Builds and fits our VAE from the preset's configs and a search space.

  `fit` takes the training and validation images (uint8, as loaded) and
  trains on the same stream as `vae_tf.training`; an epoch is one pass.
  """

  def __init__(self, base_model: config_lib.ModelConfig, base_train: config_lib.TrainConfig,
               search_space: dict[str, Dimension], num_train_examples: int | None = None):
    super().__init__(name="vae")
    # A learning-rate schedule spans base_train.epochs of this many examples.
    self.num_train_examples = num_train_examples
    self.base_model = base_model
    self.base_train = base_train
    self.search_space = search_space

  def configs(self, hp: keras_tuner.HyperParameters
              ) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
    values = {name: _register(hp, name, dim) for name, dim in self.search_space.items()}
    layers = values.get("hidden_layers", len(self.base_model.hidden_units))
    units = values.get("hidden_units", self.base_model.hidden_units[0])
    model = dataclasses.replace(
        self.base_model, hidden_units=(units,) * layers,
        **{k: values[k] for k in ("latent_dim", "estimator", "num_samples", "activation")
           if k in values})
    train = self.base_train
    if "learning_rate" in values:
      train = dataclasses.replace(train, learning_rate=values["learning_rate"])
    return model, train

  def build(self, hp: keras_tuner.HyperParameters) -> VAE:
    model_config, train = self.configs(hp)
    schedule_steps = None
    if self.num_train_examples:
      train = training.fit_updates_per_call(train, self.num_train_examples)
      schedule_steps = train.epochs * train.updates_per_call * pipeline.blocks_per_epoch(
          self.num_train_examples, train.batch_size, train.updates_per_call)
    return training.build_model(model_config, train, total_steps=schedule_steps)

  def fit(self, hp, model, x, validation_data=None, epochs=1, initial_epoch=0, callbacks=(),
          verbose="auto", **kwargs):
    _, train = self.configs(hp)
    train = training.fit_updates_per_call(train, len(x))
    blocks = pipeline.blocks_per_epoch(len(x), train.batch_size, train.updates_per_call)
    stream = pipeline.training_blocks(
        x, batch_size=train.batch_size, updates_per_call=train.updates_per_call,
        binarization=train.binarization, seed=train.seed, start_block=initial_epoch * blocks)
    validation = pipeline.evaluation_batches(validation_data, train.binarization,
                                             batch_size=1000)
    history = model.fit(stream, epochs=epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=blocks, validation_data=validation, shuffle=False,
                        callbacks=[callbacks_lib.FixedValidationSeed(), *callbacks],
                        verbose=verbose)
    if not np.all(np.isfinite(history.history.get("val_elbo", [np.nan]))):
      # Deterministic, so a retry would diverge again.
      raise keras_tuner.errors.FailedTrialError(
          f"training diverged (validation ELBO {history.history.get('val_elbo')})")
    return history


# --- Tuners ---------------------------------------------------------------------


def _write_json(path: Path, value) -> None:
  training.write_atomically(path, json.dumps(value, indent=2, sort_keys=True))


class _TrialRecords:
  """Records who ran each trial, for how many epochs and seconds; backs off on IDLE."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if distributed_role() == "worker":
      ask = self.oracle.create_trial

      def create_trial(tuner_id):
        trial = ask(tuner_id)
        if trial.status == keras_tuner.engine.trial.TrialStatus.IDLE:
          time.sleep(IDLE_BACKOFF_SECONDS)
        return trial

      self.oracle.create_trial = create_trial

  def run_trial(self, trial, *args, **kwargs):
    started = time.monotonic()
    histories = super().run_trial(trial, *args, **kwargs)
    _write_json(Path(self.get_trial_dir(trial.trial_id)) / TRIAL_RECORD_FILE, {
        "tuner_id": self.tuner_id,
        "epochs": sum(len(history.epoch) for history in histories),
        "seconds": round(time.monotonic() - started, 3),
    })
    return histories


class HyperbandTuner(_TrialRecords, keras_tuner.Hyperband):
  pass


class BayesianTuner(_TrialRecords, keras_tuner.BayesianOptimization):
  pass


class RandomTuner(_TrialRecords, keras_tuner.RandomSearch):
  pass


def make_tuner(name: str, hypermodel: VAEHyperModel, *, directory: str | os.PathLike,
               project_name: str, max_epochs: int, max_trials: int | None = None,
               hyperband_factor: int = 3, hyperband_iterations: int = 1, seed: int = 0,
               overwrite: bool = False, max_retries_per_trial: int = 1) -> keras_tuner.Tuner:
  """A tuner that resumes the search in `directory/project_name` unless `overwrite`."""
  common = dict(hypermodel=hypermodel, objective=OBJECTIVE, seed=seed, overwrite=overwrite,
                directory=str(directory), project_name=project_name,
                max_retries_per_trial=max_retries_per_trial, max_consecutive_failed_trials=3)
  if name == "hyperband":
    first_round = hyperband_first_round(max_epochs, hyperband_factor)
    size = grid_size(hypermodel.search_space)
    if size is not None and size < first_round:
      # KerasTuner's Hyperband stops the whole search when it runs out of new
      # configurations, before promoting any: it would only run a random search.
      raise SearchSpaceError(
          f"the search space has {size} configuration(s) but Hyperband's first bracket "
          f"(max_epochs={max_epochs}, factor={hyperband_factor}) starts {first_round}; widen "
          "the space, lower --max_epochs or raise --hyperband_factor, or search it all with "
          f"--tuner=random --max_trials={size}")
    tuner = HyperbandTuner(max_epochs=max_epochs, factor=hyperband_factor,
                           hyperband_iterations=hyperband_iterations, **common)
  elif name == "bayesian":
    tuner = BayesianTuner(max_trials=max_trials, **common)
  elif name == "random":
    tuner = RandomTuner(max_trials=max_trials, **common)
  else:
    raise ValueError(f"tuner must be one of {TUNERS}, got {name!r}")
  project = Path(tuner.project_dir)
  if (not overwrite and distributed_role() != "worker" and (project / "oracle.json").exists()
      and not (project / f"{tuner.tuner_id}.json").exists()):
    # KerasTuner reloads only when this tuner id saved the project before, so a
    # search begun in one process and continued as a chief would start over.
    tuner.oracle.reload()
  return tuner


def hyperband_first_round(max_epochs: int, factor: int) -> int:
  """Configurations Hyperband samples for the first round of its first bracket."""
  oracle = keras_tuner.oracles.HyperbandOracle(objective=OBJECTIVE, max_epochs=max_epochs,
                                               factor=factor)
  return oracle._get_size(oracle._get_num_brackets() - 1, 0)


def record_settings(project_dir: str | os.PathLike, settings: dict) -> None:
  """Records what defines a search, or refuses to join one defined otherwise.

  The first process to get here writes the file (atomically, so concurrent
  chief and workers agree on one); every other compares against it.
  """
  path = Path(project_dir) / SETTINGS_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(settings, indent=2, sort_keys=True)
  settings = json.loads(text)  # tuples become lists, as in the saved file
  temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  temporary.write_text(text)
  try:
    os.link(temporary, path)
  except FileExistsError:
    saved = json.loads(path.read_text())
    differences = [f"{key}: saved {saved.get(key)!r}, requested {settings.get(key)!r}"
                   for key in sorted(set(saved) | set(settings))
                   if saved.get(key) != settings.get(key)]
    if differences:
      raise ValueError(
          f"{project_dir} holds a search with other settings ({'; '.join(differences)}); "
          "pass --overwrite to start it afresh, or use another --tuner_dir or --project_name")
  finally:
    temporary.unlink()


# --- Distributed search -----------------------------------------------------------

KERASTUNER_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def distributed_role(environ=os.environ) -> str:
  """'chief', 'worker' or 'standalone', from KerasTuner's environment variables."""
  present = [name for name in KERASTUNER_ENV if environ.get(name)]
  if not present:
    return "standalone"
  missing = [name for name in KERASTUNER_ENV if name not in present]
  if missing:
    raise ValueError(f"distributed tuning needs all of {', '.join(KERASTUNER_ENV)}; "
                     f"{', '.join(missing)} not set")
  port = environ["KERASTUNER_ORACLE_PORT"]
  if not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"KERASTUNER_ORACLE_PORT must be a port number, got {port!r}")
  # KerasTuner's own rule: any tuner id containing "chief" runs the oracle.
  return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"


@dataclasses.dataclass
class ChiefOutcome:
  finished: bool  # every trial ended and every worker was told the search is over
  lost_workers: list[str]  # workers that went silent while running a trial


def serve_oracle(tuner: keras_tuner.Tuner, worker_timeout_seconds: float,
                 poll_seconds: float = 0.5) -> ChiefOutcome:
  """Runs the chief: the tuner's oracle behind KerasTuner's gRPC service.

  Returns when the search is finished and no trial is running, or when no
  worker has been heard from for `worker_timeout_seconds` (workers report at
  every epoch end, so the timeout must exceed the longest epoch). A worker
  silent that long while running a trial is declared lost: its trial ends as
  INVALID, which KerasTuner retries on the next worker that asks (up to
  `max_retries_per_trial`). A restarted worker with the same tuner id resumes
  its trial, as in KerasTuner.
  """
  import grpc
  from concurrent import futures

  # Not exported by keras_tuner; pinned by the keras-tuner<1.5 requirement.
  from keras_tuner.src.distribute import oracle_chief
  from keras_tuner.src import protos

  oracle = tuner.oracle
  last_heard: dict[str, float] = {}
  lock = threading.Lock()

  def heard(tuner_id: str | None) -> None:
    with lock:
      last_heard[tuner_id or ""] = time.monotonic()

  def runner_of(trial_id: str) -> str | None:
    return next((tid for tid, trial in list(oracle.ongoing_trials.items())
                 if trial.trial_id == trial_id), None)

  class Servicer(oracle_chief.OracleServicer):

    def CreateTrial(self, request, context):
      heard(request.tuner_id)
      return super().CreateTrial(request, context)

    def UpdateTrial(self, request, context):
      heard(runner_of(request.trial_id))
      return super().UpdateTrial(request, context)

    def EndTrial(self, request, context):
      heard(runner_of(request.trial.trial_id))
      return super().EndTrial(request, context)

  tuner.save()
  servicer = Servicer(oracle)
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
  protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
  address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
  if not server.add_insecure_port(address):
    raise OSError(f"cannot listen on {address} for the oracle")
  server.start()
  started = time.monotonic()
  lost = []
  try:
    while True:
      time.sleep(poll_seconds)
      now = time.monotonic()
      with lock:
        silence = {tid: now - last_heard.get(tid, started) for tid in oracle.ongoing_trials}
        latest = max(last_heard.values(), default=started)
      for tuner_id, seconds in silence.items():
        if seconds > worker_timeout_seconds:
          lost.append(tuner_id)
          _give_up_on(oracle, tuner_id, f"worker {tuner_id} went silent for {seconds:.0f} s")
      if not oracle.ongoing_trials:
        # A lost worker's trial waits in the retry queue for the next worker to
        # ask, even after the others were told to stop.
        if servicer.stop_triggered and not oracle.tuner_ids and not oracle._retry_queue:
          return ChiefOutcome(True, lost)
        if now - latest > worker_timeout_seconds:
          return ChiefOutcome(False, lost)
  finally:
    server.stop(grace=None)


@keras_tuner.synchronized
def _give_up_on(oracle, tuner_id: str, reason: str) -> None:
  trial = oracle.ongoing_trials.get(tuner_id)
  oracle.tuner_ids.discard(tuner_id)
  if trial is not None:
    trial.status = keras_tuner.engine.trial.TrialStatus.INVALID
    trial.message = reason
    oracle.end_trial(trial)


# --- Results ----------------------------------------------------------------------


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
  training.write_csv_atomically(directory / SUMMARY_CSV,
                                [dict(zip(header, cells)) for cells in table])
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(_format(cell) for cell in cells) + " |" for cells in table]
  markdown = "\n".join(["# Tuning summary", "", *lines, "", *(f"- {note}" for note in notes)])
  training.write_atomically(directory / SUMMARY_MARKDOWN, markdown.rstrip() + "\n")
  return [directory / SUMMARY_CSV, directory / SUMMARY_MARKDOWN]


def save_best_model(model: VAE, hypermodel: VAEHyperModel, hp: keras_tuner.HyperParameters,
                    directory: str | os.PathLike) -> Path:
  """Writes the best trial's model as a run folder (config.json + checkpoint).

  `pipelines.evaluate` and `pipelines.export` then take it like any trained
  run. The folder is assembled aside and swapped in, so a crash leaves either
  the previous best model or the new one.
  """
  import shutil

  import tensorflow as tf

  directory = Path(directory)
  staging = directory.with_name(f".{directory.name}.tmp")
  shutil.rmtree(staging, ignore_errors=True)
  model_config, train = hypermodel.configs(hp)
  training.save_or_check_config(staging, model_config, train)
  tf.train.CheckpointManager(training.make_checkpoint(model), staging / training.CHECKPOINT_DIR,
                             max_to_keep=1).save(checkpoint_number=0)
  retired = directory.with_name(f".{directory.name}.old")
  shutil.rmtree(retired, ignore_errors=True)
  if directory.exists():
    os.rename(directory, retired)
  os.rename(staging, directory)
  shutil.rmtree(retired, ignore_errors=True)
  return directory


def early_stopping(patience: int) -> list[keras.callbacks.Callback]:
  if patience < 1:
    return []
  return [keras.callbacks.EarlyStopping(monitor="val_elbo", mode="max", patience=patience)]
