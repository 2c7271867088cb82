"""The hypermodel, the tuners' guards, and the chief's handling of lost workers."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import keras_tuner
import pytest

from vae_tf import config as config_lib
from vae_tf.tuning import distributed, hypermodel, roles, tuners
from vae_tf.search_space import SearchSpaceError, parse_search_space


def small_hypermodel(spec: dict) -> hypermodel.VAEHyperModel:
  model, train = config_lib.preset("paper", "mnist", 1000)
  return hypermodel.VAEHyperModel(model, train, parse_search_space(spec))


def test_hypermodel_maps_hyperparameters_onto_the_preset():
  search = small_hypermodel({"latent_dim": [2, 5], "hidden_units": [64, 128],
                                 "hidden_layers": [2], "learning_rate": [0.1],
                                 "estimator": ["A"]})
  hp = keras_tuner.HyperParameters()
  hp.values.update({"latent_dim": 5, "hidden_units": 128})
  model_config, train_config = search.configs(hp)
  assert (model_config.latent_dim, model_config.hidden_units, model_config.estimator) == (
      5, (128, 128), "A")
  assert train_config.learning_rate == 0.1
  # What is not searched stays as in the preset.
  assert (model_config.activation, model_config.weight_decay, train_config.optimizer) == (
      "tanh", 1.0 / 1000, "adagrad")
  model = search.build(hp)
  assert model.config == model_config
  assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.1)


def test_the_iwae_bound_and_its_k_are_searchable_under_burdas_schedule():
  model, train = config_lib.preset("iwae_paper", "mnist", 1000)
  train = dataclasses.replace(train, epochs=66)
  search = hypermodel.VAEHyperModel(
      model, train, parse_search_space({"estimator": ["B", "iwae"], "num_samples": [1, 5]}),
      num_train_examples=1000)
  hp = keras_tuner.HyperParameters()
  hp.values.update({"estimator": "iwae", "num_samples": 5})
  built = search.build(hp)
  assert (built.config.estimator, built.config.num_samples) == ("iwae", 5)
  assert "iwae_bound" in [metric.name for metric in built.metrics]
  # The schedule spans the 66 epochs of 50 minibatches of 20: its first
  # stage is update 0 alone (3300 / 3280 rounds to 1), its last (a tenth of the
  # rate) starts at update round(3300 * 1093 / 3280) = 1100.
  optimizer = built.optimizer
  optimizer.iterations.assign(3299)
  assert float(optimizer.learning_rate) == pytest.approx(1e-4)
  optimizer.iterations.assign(0)
  assert float(optimizer.learning_rate) == pytest.approx(1e-3)


def test_hyperband_refuses_a_space_smaller_than_its_first_round(tmp_path):
  search = small_hypermodel({"latent_dim": [2, 3], "hidden_units": [8]})
  assert tuners.hyperband_first_round(max_epochs=9, factor=3) == 9
  with pytest.raises(SearchSpaceError, match="has 2 configuration.* starts 9; .*"
                     "--tuner=random --max_trials=2"):
    tuners.make_tuner("hyperband", search, directory=tmp_path, project_name="p",
                      max_epochs=9, hyperband_factor=3)
  # One bracket of two at max_epochs=2 fits.
  tuners.make_tuner("hyperband", search, directory=tmp_path, project_name="p",
                    max_epochs=2, hyperband_factor=3)


@pytest.mark.parametrize("environ, expected", [
    ({}, "standalone"),
    ({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "0.0.0.0",
      "KERASTUNER_ORACLE_PORT": "8000"}, "chief"),
    ({"KERASTUNER_TUNER_ID": "worker3", "KERASTUNER_ORACLE_IP": "tuner-chief",
      "KERASTUNER_ORACLE_PORT": "8000"}, "worker"),
])
def test_distributed_role(environ, expected):
  assert roles.distributed_role(environ) == expected


@pytest.mark.parametrize("environ, message", [
    ({"KERASTUNER_ORACLE_IP": "0.0.0.0"},
     "KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_PORT not set"),
    ({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "0.0.0.0",
      "KERASTUNER_ORACLE_PORT": "http"}, "KERASTUNER_ORACLE_PORT must be a port number"),
])
def test_incomplete_distributed_environment_is_an_error(environ, message):
  with pytest.raises(ValueError, match=message):
    roles.distributed_role(environ)


def test_settings_are_written_once_and_checked_after(tmp_path):
  settings = {"search_space": {"latent_dim": [2, 3]}, "base": {"hidden_units": (500,)}}
  tuners.record_settings(tmp_path, settings)
  tuners.record_settings(tmp_path, settings)  # the same search: accepted
  assert json.loads((tmp_path / tuners.SETTINGS_FILE).read_text())["base"] == {
      "hidden_units": [500]}
  with pytest.raises(ValueError, match=r"holds a search with other settings \(search_space: "
                     r"saved \{'latent_dim': \[2, 3\]\}, requested \{'latent_dim': \[2, 5\]\}\)"):
    tuners.record_settings(tmp_path, {**settings, "search_space": {"latent_dim": [2, 5]}})
  assert [p.name for p in tmp_path.iterdir()] == [tuners.SETTINGS_FILE]


# Saves a KerasTuner state file, then dies halfway through writing its next version.
KILLED_MID_WRITE = """
import os, pathlib, signal, sys
import tensorflow as tf
from keras_tuner.src import utils
from vae_tf.tuning import keras_tuner_internals
keras_tuner_internals.save_state_atomically()
utils.save_json(sys.argv[1], {"version": 1})
# KerasTuner's own writer goes through GFile, a plain file write through Path.
gfile_write, path_write_text = tf.io.gfile.GFile.write, pathlib.Path.write_text

def gfile_write_half_and_die(self, text):
  gfile_write(self, text[:len(text) // 2])
  self.flush()
  os.kill(os.getpid(), signal.SIGKILL)

def path_write_half_and_die(self, text, *args, **kwargs):
  path_write_text(self, text[:len(text) // 2], *args, **kwargs)
  os.kill(os.getpid(), signal.SIGKILL)

tf.io.gfile.GFile.write = gfile_write_half_and_die
pathlib.Path.write_text = path_write_half_and_die
utils.save_json(sys.argv[1], {"version": 2})
"""


def test_keras_tuner_state_survives_a_kill_mid_write(tmp_path):
  path = tmp_path / "oracle.json"
  killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path)])
  assert killed.returncode == -signal.SIGKILL
  assert json.loads(path.read_text()) == {"version": 1}


def test_unreadable_state_is_refused_by_name(tmp_path):
  project = tmp_path / "p"
  (project / "trial_0").mkdir(parents=True)
  (project / "oracle.json").write_text("{}")
  (project / "trial_0" / "trial.json").write_text('{"trial_id": "0", "hyperpa')
  search = small_hypermodel({"latent_dim": [2, 3], "hidden_units": [8]})
  with pytest.raises(ValueError, match=r"trial_0/trial.json is not valid JSON \(Unterminated "
                     r"string.*pass --overwrite to start the search afresh"):
    tuners.make_tuner("random", search, directory=tmp_path, project_name="p", max_epochs=1,
                      max_trials=2)
  tuner = tuners.make_tuner("random", search, directory=tmp_path, project_name="p",
                            max_epochs=1, max_trials=2, overwrite=True)
  assert tuner.oracle.trials == {}


KILLED_AS_A_TRIAL_ENDS = """
import os, signal, sys
from vae_tf import config
from vae_tf.search_space import parse_search_space
from vae_tf.tuning import hypermodel, tuners
model, train = config.preset("paper", "mnist", 1000)
search = hypermodel.VAEHyperModel(model, train, parse_search_space(
    {"latent_dim": [2, 3, 5, 10], "hidden_units": [8]}))
tuner = tuners.make_tuner("random", search, directory=sys.argv[1], project_name="p",
                          max_epochs=1, max_trials=4)
tuner.save()
trial = tuner.oracle.create_trial(tuner.tuner_id)
tuner.oracle.update_trial(trial.trial_id, {"val_elbo": -100.0}, step=0)
trial.status = "COMPLETED"
# Where KerasTuner's end_trial has saved the finished trial and the oracle, and
# not yet dropped the trial from the ongoing ones.
tuner.oracle._display.on_trial_end = lambda trial: os.kill(os.getpid(), signal.SIGKILL)
tuner.oracle.end_trial(trial)
"""


def test_a_trial_finished_just_before_a_kill_is_not_run_again(tmp_path):
  killed = subprocess.run([sys.executable, "-c", KILLED_AS_A_TRIAL_ENDS, str(tmp_path)],
                          capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  saved = json.loads((tmp_path / "p" / "oracle.json").read_text())
  [finished] = saved["ongoing_trials"].values()
  search = small_hypermodel({"latent_dim": [2, 3, 5, 10], "hidden_units": [8]})
  tuner = tuners.make_tuner("random", search, directory=tmp_path, project_name="p",
                            max_epochs=1, max_trials=4)
  assert tuner.oracle.trials[finished].status == "COMPLETED"
  assert tuner.oracle.end_order == [finished]
  assert tuner.oracle.create_trial(tuner.tuner_id).trial_id != finished


# --- The chief, with KerasTuner's own gRPC client as the workers -----------------


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def chief(tmp_path, monkeypatch):
  """A random-search chief for 3 trials, serving on loopback in a thread."""
  search = small_hypermodel({"latent_dim": [2, 3, 5, 10], "hidden_units": [8]})
  tuner = tuners.make_tuner("random", search, directory=tmp_path, project_name="p",
                            max_epochs=1, max_trials=3, max_retries_per_trial=1)
  monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
  monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(free_port()))
  monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")

  def serve(timeout: float):
    outcome = {}

    def target():
      try:
        outcome["result"] = distributed.serve_oracle(tuner, timeout, poll_seconds=0.05)
      except BaseException as error:  # re-raised below, in the test's thread
        outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    port = int(os.environ["KERASTUNER_ORACLE_PORT"])
    deadline = time.monotonic() + 30
    while "error" not in outcome and time.monotonic() < deadline:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        time.sleep(0.05)
    if "error" in outcome:
      raise outcome["error"]
    return tuner.oracle, thread, outcome

  return serve


def worker_client(tuner_id: str, monkeypatch):
  from keras_tuner.src.distribute import oracle_client

  monkeypatch.setenv("KERASTUNER_TUNER_ID", tuner_id)
  # A call to a chief that has stopped fails in seconds, not KerasTuner's hour.
  monkeypatch.setattr(oracle_client, "TIMEOUT", 30)
  # The client only forwards calls; its wrapped oracle is unused here.
  return oracle_client.OracleClient(keras_tuner.oracles.RandomSearchOracle())


def run_trial(client, tuner_id: str, epochs: int, seconds_per_epoch: float) -> str:
  trial = client.create_trial(tuner_id)
  for epoch in range(epochs):
    time.sleep(seconds_per_epoch)
    client.update_trial(trial.trial_id, {"val_elbo": -100.0 - epoch}, step=epoch)
  trial.status = "COMPLETED"
  client.end_trial(trial)
  return trial.trial_id


def test_a_silent_worker_is_lost_and_its_trial_retried_elsewhere(chief, monkeypatch):
  oracle, thread, outcome = chief(timeout=3.0)
  lost = worker_client("w0", monkeypatch)
  abandoned = lost.create_trial("w0")
  assert abandoned.status == "RUNNING"
  survivor = worker_client("w1", monkeypatch)
  # w1 reports every 0.25 s for 5 s: alive while w0 stays silent past the timeout.
  first = run_trial(survivor, "w1", epochs=20, seconds_per_epoch=0.25)
  assert oracle.trials[abandoned.trial_id].status == "INVALID"
  assert "worker w0 went silent" in oracle.trials[abandoned.trial_id].message
  # The next trial handed out is the abandoned one, then the last new one.
  assert run_trial(survivor, "w1", 1, 0.0) == abandoned.trial_id
  last = run_trial(survivor, "w1", 1, 0.0)
  assert survivor.create_trial("w1").status == "STOPPED"
  thread.join(timeout=10)
  assert not thread.is_alive()
  assert outcome["result"] == distributed.ChiefOutcome(finished=True, lost_workers=["w0"])
  assert sorted([abandoned.trial_id, first, last]) == sorted(oracle.trials)
  assert all(trial.status == "COMPLETED" for trial in oracle.trials.values())


def test_the_chief_stops_when_no_worker_comes(chief):
  _, thread, outcome = chief(timeout=0.5)
  thread.join(timeout=10)
  assert not thread.is_alive()
  assert outcome["result"] == distributed.ChiefOutcome(finished=False, lost_workers=[])
