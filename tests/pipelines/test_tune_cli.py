"""pipelines.tune as a user runs it: real searches in real subprocesses.

Every search trains on the first 1000 MNIST training images with 50 hidden
units for at most 2 epochs, so a trial takes a few seconds. Trial values are
deterministic functions of their configuration and seed, which lets a
distributed search be checked against a standalone one.
"""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import TIMEOUT_SECONDS, finish, run, start, stderr_lines

TINY = ("--train_examples=1000", "--validation_examples=500", "--test_examples=200",
        "--hidden_units=50", "--learning_rates=0.02", "--max_epochs=2",
        "--updates_per_call=10", "--num_importance_samples=10")
# Four configurations, searched in full by four random trials.
RANDOM_FOUR = ("--tuner=random", "--max_trials=4", "--latent_dims=2,3,5,10", "--noexport")
RECORD = "vae_tf_trial.json"


def summary(project: Path) -> list[dict[str, str]]:
  with open(project / "summary.csv") as f:
    return list(csv.DictReader(f))


def elbo_by_latent_dim(project: Path) -> dict[int, float]:
  return {int(row["latent_dim"]): float(row["best_val_elbo"]) for row in summary(project)
          if row["status"] == "COMPLETED"}


def record_times(project: Path) -> dict[str, int]:
  """Trial folder -> modification time of its record (written once, when it completes)."""
  return {path.parent.name: path.stat().st_mtime_ns for path in project.glob(f"*/{RECORD}")}


def completed_trials(project: Path) -> list[str]:
  """Trials KerasTuner's oracle has saved as completed; our record is written just before."""
  return [path.parent.name for path in project.glob("trial_*/trial.json")
          if json.loads(path.read_text())["status"] == "COMPLETED"]


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      pytest.fail(f"the process ended (rc {process.returncode}) before {what}: "
                  f"{process.stderr.read()[-2000:]}")
    if time.monotonic() > deadline:
      process.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.1)


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def with_role(env: dict[str, str], tuner_id: str, port: int) -> dict[str, str]:
  return {**env, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
          "KERASTUNER_ORACLE_PORT": str(port)}


# --- A tiny Hyperband search ------------------------------------------------------


@pytest.fixture(scope="module")
def hyperband_search(env, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
  tuner_dir = tmp_path_factory.mktemp("hyperband")
  result = run("pipelines.tune", *TINY, "--latent_dims=2,5", "--rescore_top=2",
               f"--tuner_dir={tuner_dir}", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return tuner_dir / "mnist_hyperband", result


def test_search_writes_summary_plot_and_results(hyperband_search):
  project, _ = hyperband_search
  rows = summary(project)
  assert sorted(int(row["latent_dim"]) for row in rows) == [2, 5]
  for row in rows:
    assert row["status"] == "COMPLETED"
    assert (row["hidden_units"], row["learning_rate"]) == ("50", "0.02")
    assert int(row["epochs"]) == 2 and 1 <= int(row["best_epoch"]) <= 2
    assert float(row["seconds"]) > 0 and row["worker"] == "tuner0"
    # Two epochs of a 50-unit model: far from converged, far from chance (543 nats).
    assert -300 < float(row["best_val_elbo"]) < -150
    assert float(row["val_is_log_likelihood"]) >= float(row["best_val_elbo"]) - 1
  markdown = (project / "summary.md").read_text()
  assert markdown.count("| COMPLETED |") == 2
  assert "would run 4 epochs; Hyperband ran 4" in markdown
  assert (project / "val_elbo_by_latent_dim.png").read_bytes().startswith(b"\x89PNG")

  results = json.loads((project / "results.json").read_text())
  best = max(rows, key=lambda row: float(row["val_is_log_likelihood"]))
  assert results["best_trial"] == best["trial"]
  assert results["hyperparameters"]["latent_dim"] == int(best["latent_dim"])
  assert results["completed_trials"] == 2 and results["test_examples"] == 200
  # IS with k=10 is a tighter bound than the ELBO, on the same test images.
  assert results["test_elbo"] - 1 < results["test_log_likelihood"] < -150


def test_best_model_is_a_run_folder_that_exports(hyperband_search, env):
  project, _ = hyperband_search
  best_model = project / "best_model"
  config = json.loads((best_model / "config.json").read_text())
  results = json.loads((project / "results.json").read_text())
  assert config["model"]["latent_dim"] == results["hyperparameters"]["latent_dim"]
  assert (best_model / "export" / "vae" / "1" / "saved_model.pb").exists()
  assert results["export"] == str(best_model / "export" / "vae" / "1")
  # pipelines.evaluate takes it like any trained run.
  evaluated = run("pipelines.evaluate", f"--model_dir={best_model}", "--num_examples=200",
                  "--num_importance_samples=10", env=env)
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  evaluation = json.loads((best_model / "evaluation.json").read_text())
  assert evaluation["elbo"] == pytest.approx(results["test_elbo"], abs=1e-3)
  assert evaluation["log_likelihood"] == pytest.approx(results["test_log_likelihood"], abs=1e-3)


def test_rerun_does_not_repeat_finished_trials(hyperband_search, env):
  project, _ = hyperband_search
  before = record_times(project)
  results_before = json.loads((project / "results.json").read_text())
  result = run("pipelines.tune", *TINY, "--latent_dims=2,5", "--rescore_top=2",
               f"--tuner_dir={project.parent}", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Epoch 1/" not in result.stdout
  assert record_times(project) == before and len(before) == 2
  results = json.loads((project / "results.json").read_text())
  assert results["best_trial"] == results_before["best_trial"]
  assert results["test_elbo"] == pytest.approx(results_before["test_elbo"], abs=1e-4)


def test_rerun_with_other_settings_is_refused(hyperband_search, env):
  project, _ = hyperband_search
  result = run("pipelines.tune", *TINY, "--latent_dims=2,5,10", f"--tuner_dir={project.parent}",
               env=env)
  assert result.returncode == 1
  assert stderr_lines(result)[-1].startswith(f"error: {project} holds a search with other "
                                             "settings (search_space: saved")
  assert stderr_lines(result)[-1].endswith("pass --overwrite to start it afresh, or use "
                                           "another --tuner_dir or --project_name")


# --- Interrupted searches -----------------------------------------------------------


@pytest.fixture(scope="module")
def standalone_resumed(env, tmp_path_factory) -> Path:
  """A random search killed during its second trial, then run again to the end."""
  tuner_dir = tmp_path_factory.mktemp("standalone")
  project = tuner_dir / "mnist_random"
  flags = (*TINY, *RANDOM_FOUR, f"--tuner_dir={tuner_dir}")
  process = start("pipelines.tune", *flags, env=env)
  wait_for(lambda: len(completed_trials(project)) == 1, process, "the first trial completed")
  process.send_signal(signal.SIGKILL)
  process.wait()
  finished_before_kill = record_times(project)

  result = run("pipelines.tune", *flags, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  times = record_times(project)
  assert len(times) == 4
  # The trial finished before the kill was neither rerun nor rewritten.
  assert {name: times[name] for name in finished_before_kill} == finished_before_kill
  return project


def test_killed_search_resumes_without_repeating_trials(standalone_resumed):
  rows = summary(standalone_resumed)
  assert [row["status"] for row in rows] == ["COMPLETED"] * 4
  assert sorted(elbo_by_latent_dim(standalone_resumed)) == [2, 3, 5, 10]


def test_distributed_search_survives_a_killed_worker(env, tmp_path, standalone_resumed):
  """One chief and two workers on loopback; a worker is killed during its second trial.

  The chief notices the silent worker (--worker_timeout_seconds) and exits by
  itself, keeping every finished trial; a restarted chief and worker finish
  the search, and every trial's value equals the standalone search's.
  """
  port = free_port()
  flags = (*TINY, *RANDOM_FOUR, f"--tuner_dir={tmp_path}", "--worker_timeout_seconds=20")
  project = tmp_path / "mnist_random"
  chief = start("pipelines.tune", *flags, env=with_role(env, "chief", port))
  workers = {tuner_id: start("pipelines.tune", *flags, env=with_role(env, tuner_id, port))
             for tuner_id in ("worker0", "worker1")}

  def finished_by(tuner_id: str) -> list[str]:
    return [path.parent.name for path in project.glob(f"*/{RECORD}")
            if json.loads(path.read_text())["tuner_id"] == tuner_id]

  def running_on(tuner_id: str) -> str | None:
    """The trial the chief has handed `tuner_id` and not seen finish (its oracle state)."""
    try:
      ongoing = json.loads((project / "oracle.json").read_text())["ongoing_trials"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
      return None  # not written yet
    return f"trial_{ongoing[tuner_id]}" if tuner_id in ongoing else None

  def on_a_second_trial() -> str | None:
    """A worker that has finished a trial and is running another: killed now,
    it dies mid-trial. Four trials on two workers make one of them run two;
    which one depends on timing (a worker that asks when every configuration
    has been handed out is told to stop)."""
    for tuner_id in workers:
      finished = finished_by(tuner_id)
      if finished and running_on(tuner_id) not in (None, *finished):
        return tuner_id
    return None

  wait_for(on_a_second_trial, chief, "a worker started its second trial")
  killed = on_a_second_trial()
  workers[killed].send_signal(signal.SIGKILL)
  survivor_id = next(tuner_id for tuner_id in workers if tuner_id != killed)
  kept = finished_by(killed)
  survivor = finish(workers[survivor_id])
  assert survivor.returncode == 0, survivor.stderr[-3000:]
  assert f"worker {survivor_id}: no trials left" in survivor.stdout
  first_chief = finish(chief)
  assert first_chief.returncode == 0, first_chief.stderr[-3000:]
  assert f"chief: lost worker {killed}; its trial went back for retry" in first_chief.stdout

  times = record_times(project)
  if len(times) < 4:
    # worker1 had stopped before the chief gave worker0's trial back: the
    # search waits for a worker to run it.
    assert "the search is incomplete" in first_chief.stdout
    chief = start("pipelines.tune", *flags, env=with_role(env, "chief", port))
    worker = finish(start("pipelines.tune", *flags, env=with_role(env, survivor_id, port)))
    assert worker.returncode == 0, worker.stderr[-3000:]
    restarted = finish(chief)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
  assert finished_by(killed) == kept
  assert {name: record_times(project)[name] for name in times} == times
  assert [row["status"] for row in summary(project)] == ["COMPLETED"] * 4
  distributed = elbo_by_latent_dim(project)
  standalone = elbo_by_latent_dim(standalone_resumed)
  assert distributed == pytest.approx(standalone, abs=1e-3)
  results = json.loads((project / "results.json").read_text())
  assert results["completed_trials"] == 4
  assert results["val_elbo"] == pytest.approx(max(standalone.values()), abs=1e-3)


# --- Bad flags and files ------------------------------------------------------------

ABSL_HINT = "Pass --helpshort or --helpfull to see help on flags."


@pytest.mark.parametrize("flags, expected", [
    (["--latent_dims=2,a"], "FATAL Flags parsing error: flag --latent_dims=['2', 'a']: must be "
                            "a comma-separated list of integers"),
    (["--learning_rates=fast"], "FATAL Flags parsing error: flag --learning_rates=['fast']: "
                                "must be a comma-separated list of numbers"),
    (["--tuner=grid"], "FATAL Flags parsing error: flag --tuner=grid: value should be one of "
                       "<hyperband|bayesian|random>"),
])
def test_bad_flag_fails_with_one_clear_line(env, tmp_path, flags, expected):
  result = run("pipelines.tune", *flags, f"--tuner_dir={tmp_path}", env=env)
  assert result.returncode == 1
  assert stderr_lines(result) == [expected, ABSL_HINT]


SEARCH_FILES = {
    "unknown_parameter": ("space.json", '{"latent_dim": [2, 5], "dropout": [0.1]}',
                          "error: search space file space.json: unknown parameter(s) dropout; "
                          "searchable: latent_dim, hidden_units, hidden_layers, learning_rate, "
                          "estimator, num_samples, activation"),
    "bad_yaml": ("space.yaml", "latent_dim: [2, 5\n",
                 "error: search space file space.yaml is not valid YAML: expected ',' or ']', "
                 "but got '<stream end>' (line 2, column 1)"),
    "bad_value": ("space.json", '{"latent_dim": [2, "five"]}',
                  "error: search space file space.json: latent_dim: 'five' is not an integer "
                  ">= 1"),
    "suffix": ("space.txt", "latent_dim: [2]",
               "error: search space file space.txt: use a .json, .yaml or .yml file"),
    "missing": ("other.json", "{}", "error: search space file space.json does not exist"),
}


@pytest.mark.parametrize("case", sorted(SEARCH_FILES))
def test_bad_search_space_file_fails_with_one_clear_line(env, tmp_path, case):
  name, text, expected = SEARCH_FILES[case]
  (tmp_path / name).write_text(text)
  flag = "--search_space=space.json" if case == "missing" else f"--search_space={name}"
  # Run in tmp_path, so the error names the file as the user typed it.
  result = subprocess.run([sys.executable, "-m", "pipelines.tune", flag],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS)
  assert result.returncode == 1
  assert stderr_lines(result) == [expected]


@pytest.mark.parametrize("flags, role, expected", [
    (["--max_trials=5"], None, "error: --max_trials applies to --tuner=bayesian or random; "
                               "Hyperband's trial count follows from --max_epochs, "
                               "--hyperband_factor and --hyperband_iterations"),
    (["--latent_dims=2,5", "--max_epochs=9"], None,
     "error: the search space has 6 configuration(s) but Hyperband's first bracket "
     "(max_epochs=9, factor=3) starts 9;"),
    (["--overwrite"], "worker0", "error: --overwrite would delete the chief's search; only the "
                                 "chief (or a single process) may pass it"),
    ([], "worker0-no-port", "error: distributed tuning needs all of KERASTUNER_TUNER_ID, "
                            "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT; "
                            "KERASTUNER_ORACLE_PORT not set"),
])
def test_bad_setup_fails_with_one_clear_line(env, tmp_path, flags, role, expected):
  if role is None:
    run_env = env
  elif role.endswith("-no-port"):
    run_env = {**with_role(env, role, 0), "KERASTUNER_ORACLE_PORT": ""}
  else:
    run_env = with_role(env, role, free_port())
  result = run("pipelines.tune", "--train_examples=1000", "--hidden_units=50", *flags,
               f"--tuner_dir={tmp_path}", env=run_env)
  assert result.returncode == 1
  assert stderr_lines(result)[-1].startswith(expected), stderr_lines(result)
