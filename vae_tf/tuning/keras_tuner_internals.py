"""The one place that reaches into KerasTuner's private API.

KerasTuner's chief (`keras_tuner.Tuner.search` as "chief") waits forever for
workers that may be gone; ours (`vae_tf.tuning.distributed`) serves the same
gRPC service itself, so it needs KerasTuner's servicer, its service
registration and two private fields of the oracle. Hyperband's bracket sizes
are private too, and so is the JSON writer that all of KerasTuner's state goes
through, which truncates its file before writing it, and so is the retry queue
a reloaded oracle puts its ongoing trials on, finished or not. Pinned by the
keras-tuner<1.5 requirement (pyproject.toml); tests/vae_tf/test_tuning.py
drives every function here.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras_tuner
from keras_tuner.src import protos
from keras_tuner.src import utils
from keras_tuner.src.distribute import oracle_chief

from vae_tf import run_folder

# KerasTuner's gRPC servicer of an oracle, to subclass: CreateTrial,
# UpdateTrial, EndTrial and friends, forwarded to the oracle.
OracleServicer = oracle_chief.OracleServicer


def add_oracle_servicer(servicer: OracleServicer, server) -> None:
  """Registers `servicer` on a `grpc.Server` as KerasTuner's Oracle service."""
  protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)


def told_workers_to_stop(servicer: OracleServicer) -> bool:
  """Whether the servicer has answered a worker that the search is over."""
  return servicer.stop_triggered


def has_trials_to_retry(oracle: keras_tuner.Oracle) -> bool:
  """Whether failed trials wait for a worker to run them again."""
  return bool(oracle._retry_queue)


def hyperband_first_round(oracle: keras_tuner.oracles.HyperbandOracle) -> int:
  """Configurations `oracle` samples for the first round of its first (largest) bracket."""
  return oracle._get_size(oracle._get_num_brackets() - 1, 0)


def _save_json_atomically(path: str, obj) -> str:
  text = json.dumps(obj)
  run_folder.write_atomically(Path(path), text)
  return text


def save_state_atomically() -> None:
  """Makes KerasTuner write oracle, tuner and trial files by replacing them whole.

  Its own writer truncates a file and then writes it, so a search killed in
  between leaves JSON that no rerun can reload.
  """
  utils.save_json = _save_json_atomically


_FINISHED = (keras_tuner.engine.trial.TrialStatus.COMPLETED,
             keras_tuner.engine.trial.TrialStatus.FAILED)


def _reload_leaving_finished_trials(reload):
  def reload_and_drop_finished_from_retries(oracle: keras_tuner.Oracle) -> None:
    reload(oracle)
    finished = [trial_id for trial_id in oracle._retry_queue
                if oracle.trials[trial_id].status in _FINISHED]
    oracle._retry_queue = [trial_id for trial_id in oracle._retry_queue
                           if trial_id not in finished]
    oracle.end_order.extend(trial_id for trial_id in finished
                            if trial_id not in oracle.end_order)

  reload_and_drop_finished_from_retries.leaves_finished_trials = True
  return reload_and_drop_finished_from_retries


def resume_without_rerunning_finished_trials() -> None:
  """Makes a reloaded oracle keep the trials whose files say they finished.

  KerasTuner's oracle writes a finished trial's file, saves itself and only
  then drops the trial from its ongoing ones, and a reloaded oracle retries
  every ongoing trial: a search killed in between would run a finished trial
  again and overwrite its results.
  """
  if not getattr(keras_tuner.Oracle.reload, "leaves_finished_trials", False):
    keras_tuner.Oracle.reload = _reload_leaving_finished_trials(keras_tuner.Oracle.reload)
