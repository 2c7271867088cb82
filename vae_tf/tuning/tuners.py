"""KerasTuner's tuners over our hypermodel, and the record that pins a search."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras
import keras_tuner

from vae_tf import run_folder
from vae_tf.search_space import TUNERS, SearchSpaceError, grid_size
from vae_tf.tuning import keras_tuner_internals
from vae_tf.tuning.roles import distributed_role
from vae_tf.tuning.hypermodel import OBJECTIVE, VAEHyperModel

# Written into the project folder: the settings that define the search (so a
# resumed search or a late worker cannot silently run other trials) and, per
# trial, who ran it and for how long.
SETTINGS_FILE = "vae_tf_search.json"
TRIAL_RECORD_FILE = "vae_tf_trial.json"

# Seconds a worker sleeps when the oracle answers IDLE (Hyperband waiting for a
# bracket's other trials); KerasTuner would otherwise re-ask in a busy loop.
IDLE_BACKOFF_SECONDS = 0.5


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
    run_folder.write_atomically(
        Path(self.get_trial_dir(trial.trial_id)) / TRIAL_RECORD_FILE,
        json.dumps({
            "tuner_id": self.tuner_id,
            "epochs": sum(len(history.epoch) for history in histories),
            "seconds": round(time.monotonic() - started, 3),
        }, indent=2, sort_keys=True))
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
  keras_tuner_internals.save_state_atomically()
  keras_tuner_internals.resume_without_rerunning_finished_trials()
  if not overwrite:
    _refuse_unreadable_state(Path(directory) / project_name)
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


def _refuse_unreadable_state(project: Path) -> None:
  for path in sorted([*project.glob("*.json"), *project.glob("trial_*/*.json")]):
    try:
      json.loads(path.read_text())
    except json.JSONDecodeError as error:
      raise ValueError(
          f"{path} is not valid JSON ({error}), perhaps cut short by a kill of a version that "
          "wrote it in place; pass --overwrite to start the search afresh") from None


def hyperband_first_round(max_epochs: int, factor: int) -> int:
  """Configurations Hyperband samples for the first round of its first bracket."""
  return keras_tuner_internals.hyperband_first_round(keras_tuner.oracles.HyperbandOracle(
      objective=OBJECTIVE, max_epochs=max_epochs, factor=factor))


def record_settings(project_dir: str | os.PathLike, settings: dict) -> None:
  """Records what defines a search, or refuses to join one defined otherwise.

  The first process to get here writes the file, so concurrent chief and
  workers agree on one; every other compares against it.
  """
  run_folder.record_or_refuse(
      Path(project_dir) / SETTINGS_FILE, settings,
      lambda saved, differences: ValueError(
          f"{project_dir} holds a search with other settings ({differences}); pass "
          "--overwrite to start it afresh, or use another --tuner_dir or --project_name"))


def early_stopping(patience: int) -> list[keras.callbacks.Callback]:
  if patience < 1:
    return []
  return [keras.callbacks.EarlyStopping(monitor="val_elbo", mode="max", patience=patience)]
