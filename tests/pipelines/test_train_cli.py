"""pipelines.train and pipelines.evaluate as a user runs them: real subprocesses."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import tensorflow as tf

from vae_tf import callbacks, run_folder, schedules, training
from vae_tf.data import sources

from cli_helpers import TIMEOUT_SECONDS, finish, run, start, stderr_lines

# 5000 MNIST images, 10 updates per call: 5 blocks, 50 steps per epoch and
# 300 in all. Checkpoints every 70 steps fall mid-epoch (70, 140, 210, 280)
# before the final one at 300. Burda's learning-rate schedule over 300 steps
# changes stage at steps 1, 4, 11, 33 and 100 (`BURDA_STAGE_STARTS`), so the
# checkpoints at 70 and 280 fall mid-stage. It starts at 0.01 so that the
# last two thirds, at a tenth of that, still train (to about -175 nats).
SMALL_RUN = ("--preset=modern", "--train_examples=5000", "--hidden_units=64", "--latent_dim=5",
             "--epochs=6", "--updates_per_call=10", "--checkpoint_every_steps=70",
             "--lr_schedule=burda", "--learning_rate=0.01")
BURDA_STAGE_STARTS = [0, 0, 1, 4, 11, 33, 100]
TOTAL_STEPS = 300
STEPS_PER_EPOCH = 50


def last_rows_by_epoch(model_dir: Path) -> dict[int, dict[str, float]]:
  """The last metrics row logged for each epoch, without its timings.

  A run resumed from a checkpoint older than its last logged epoch end logs
  that epoch again; the later row is the one that counts.
  """
  rows = {}
  with open(model_dir / run_folder.METRICS_FILE) as f:
    for row in csv.DictReader(f):
      rows[int(row["epoch"])] = {k: float(v) for k, v in row.items()
                                 if k not in callbacks.TIMING_FIELDS}
  return rows


# --- Flag and data errors -------------------------------------------------------

ABSL_HINT = "Pass --helpshort or --helpfull to see help on flags."

BAD_FLAGS = {
    # Rejected by absl while parsing, before TensorFlow is imported.
    "latent_dim": (["--latent_dim=0"],
                   "FATAL Flags parsing error: flag --latent_dim=0: 0 is not a positive integer"),
    "dataset": (["--dataset=cifar"],
                "FATAL Flags parsing error: flag --dataset=cifar: value should be one of "
                "<mnist|frey_face>"),
    "weight_decay": (["--dataset=frey_face", "--weight_decay=abc"],
                     "FATAL Flags parsing error: flag --weight_decay=abc: must be a number >= 0 "
                     "or 'prior'"),
    "binarization": (["--dataset=frey_face", "--binarization=dynamic"],
                     "FATAL Flags parsing error: flags dataset=frey_face, binarization=dynamic: "
                     "--binarization applies to MNIST; Frey Face is real-valued (leave it unset "
                     "or use none)"),
    "hidden_units": (["--dataset=frey_face", "--hidden_units=64,abc"],
                     "FATAL Flags parsing error: flag --hidden_units=['64', 'abc']: must be "
                     "positive integers separated by commas, e.g. 500,500"),
    "num_samples": (["--num_samples=0"],
                    "FATAL Flags parsing error: flag --num_samples=0: 0 is not a positive "
                    "integer"),
    "iwae_k": (["--estimator=iwae", "--num_samples=-5"],
               "FATAL Flags parsing error: flag --num_samples=-5: -5 is not a positive integer"),
    "lr_schedule": (["--lr_schedule=step"],
                    "FATAL Flags parsing error: flag --lr_schedule=step: value should be one of "
                    "<constant|burda|cosine|exponential>"),
    # Rejected by the pipeline, which must see the data first. Frey Face keeps
    # the data loading short.
    "train_examples": (["--dataset=frey_face", "--train_examples=2000"],
                       "error: --train_examples=2000 exceeds the 1565 training examples"),
    "too_few_examples": (["--dataset=frey_face", "--train_examples=50"],
                         "error: 50 training examples do not fill 1 minibatch(es) of 100; use "
                         "more examples or a smaller batch_size / updates_per_call"),
    "lr_final_scale": (["--dataset=frey_face", "--lr_schedule=cosine", "--lr_final_scale=0"],
                       "error: lr_final_scale must be in (0, 1], got 0.0"),
    "adam_beta1": (["--dataset=frey_face", "--adam_beta1=1"],
                   "error: adam_beta1 must be in [0, 1), got 1.0"),
}


@pytest.fixture(scope="module")
def bad_flag_runs(env, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
  """Every bad-flag case and the missing-data case, run side by side."""
  root = tmp_path_factory.mktemp("bad_flags")
  processes = {}
  for case, (flags, _) in BAD_FLAGS.items():
    model_dir = root / case
    processes[case] = model_dir, start("pipelines.train", *flags, f"--model_dir={model_dir}",
                                       env=env)
  empty_raw = root / "empty_raw"
  empty_raw.mkdir()
  no_data_env = {**env, "TFDS_DATA_DIR": str(root / "empty_tfds"),
                 sources.DEFAULT_MANUAL_DIR_ENV: str(empty_raw)}
  model_dir = root / "missing_data"
  processes["missing_data"] = model_dir, start(
      "pipelines.train", f"--model_dir={model_dir}", env=no_data_env)
  return {case: (model_dir, finish(process)) for case, (model_dir, process) in processes.items()}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag_fails_with_one_clear_line(bad_flag_runs, case):
  model_dir, result = bad_flag_runs[case]
  expected = BAD_FLAGS[case][1]
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert not model_dir.exists()
  lines = stderr_lines(result)
  if expected.startswith("FATAL"):
    assert result.stdout == ""
    # absl's own report: the problem, then its standard hint.
    assert lines == [expected, ABSL_HINT]
    return
  # Start-up logging from TensorFlow and TFDS may precede it, but the error
  # is a single line, and the last.
  assert [line for line in lines if line.startswith("error:")] == lines[-1:]
  assert lines[-1] == expected


def test_missing_data_names_manual_dir(bad_flag_runs):
  model_dir, result = bad_flag_runs["missing_data"]
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert not model_dir.exists()
  lines = stderr_lines(result)
  assert [line for line in lines if line.startswith("error:")] == lines[-1:]
  message = lines[-1]
  empty_raw = model_dir.parent / "empty_raw"
  assert message.startswith("error: cannot prepare mnist: ")
  assert (f"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz missing from manual_dir "
          f"{empty_raw}.") in message
  assert "Pass --manual_dir=<folder> or set VAE_TF_MANUAL_DIR=<folder>" in message


# --- Training, killing, resuming, evaluating -------------------------------------


class Background:
  """A subprocess left running while a test does other work."""

  def __init__(self, process: subprocess.Popen):
    self.process = process
    self._result = None

  def result(self) -> subprocess.CompletedProcess:
    if self._result is None:
      self._result = finish(self.process)
    return self._result


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory) -> tuple[Path, Background]:
  """The small run, uninterrupted; it runs alongside the killed one."""
  model_dir = tmp_path_factory.mktemp("reference")
  process = start("pipelines.train", *SMALL_RUN, f"--model_dir={model_dir}", env=env)
  yield model_dir, Background(process)
  if process.poll() is None:
    process.kill()
    process.wait()


def finished_reference(reference) -> tuple[Path, subprocess.CompletedProcess]:
  model_dir, background = reference
  result = background.result()
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, result


def latest_step(model_dir: Path) -> int | None:
  state = model_dir / run_folder.CHECKPOINT_DIR / "checkpoint"
  if not state.exists():
    return None
  match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.MULTILINE)
  return int(match.group(1)) if match else None


def test_killed_run_resumes_to_the_same_result(env, tmp_path, reference):
  model_dir = tmp_path / "run"
  command = [*SMALL_RUN, f"--model_dir={model_dir}"]
  victim = start("pipelines.train", *command, env=env)
  deadline = time.monotonic() + TIMEOUT_SECONDS
  try:
    while not (latest_step(model_dir) or 0) > 0:
      assert victim.poll() is None, finish(victim).stderr[-3000:]
      assert time.monotonic() < deadline
      time.sleep(0.01)
  finally:
    victim.send_signal(signal.SIGKILL)
  killed = finish(victim)
  assert killed.returncode == -signal.SIGKILL
  assert "trained" not in killed.stdout

  # Whatever the kill interrupted, the latest checkpoint is whole.
  step = latest_step(model_dir)
  assert 0 < step < TOTAL_STEPS
  latest = tf.train.latest_checkpoint(model_dir / run_folder.CHECKPOINT_DIR)
  assert latest.endswith(f"ckpt-{step}")
  restored = training.load_trained_model(model_dir)  # asserts every variable matched
  assert int(restored.optimizer.iterations.numpy()) == step
  assert schedules.burda_stage_boundaries(TOTAL_STEPS) == BURDA_STAGE_STARTS
  assert step not in BURDA_STAGE_STARTS  # mid-stage

  resumed = run("pipelines.train", *command, env=env)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  resumed_from = int(re.search(r"trained 300 steps \(resumed from (\d+)\)", resumed.stdout)[1])
  assert resumed_from == step
  assert resumed_from % 70 == 0  # a checkpoint, not an epoch end

  reference_dir, reference_result = finished_reference(reference)
  assert "trained 300 steps (resumed from 0)" in reference_result.stdout
  expected = last_rows_by_epoch(reference_dir)
  assert sorted(expected) == list(range(6))
  assert [row["steps"] for row in expected.values()] == [
      STEPS_PER_EPOCH * (epoch + 1) for epoch in range(6)]
  assert last_rows_by_epoch(model_dir) == expected  # bit for bit, validation included
  final_elbo = expected[5]["val_elbo"]
  assert f"validation ELBO {final_elbo:.2f} nats" in resumed.stdout
  assert f"validation ELBO {final_elbo:.2f} nats" in reference_result.stdout
  assert -200 < final_elbo < -120  # measured: -176

  # Both runs end with the same complete checkpoint and saved model.
  for run_dir in (model_dir, reference_dir):
    assert tf.train.latest_checkpoint(run_dir / run_folder.CHECKPOINT_DIR).endswith(
        f"ckpt-{TOTAL_STEPS}")
    assert {"model.keras", "samples.png", "reconstructions.png", "config.json"} <= {
        p.name for p in run_dir.iterdir()}
  finished = training.load_trained_model(model_dir)
  reference_model = training.load_trained_model(reference_dir)
  for a, b in zip(finished.trainable_variables, reference_model.trainable_variables):
    assert (a.numpy() == b.numpy()).all(), a.path


def test_evaluate_reports_elbo_and_log_likelihood(env, reference):
  model_dir, _ = finished_reference(reference)
  result = run("pipelines.evaluate", f"--model_dir={model_dir}", "--num_importance_samples=50",
               "--num_examples=200", env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  report = json.loads((model_dir / "evaluation.json").read_text())
  assert report["dataset"] == "mnist" and report["split"] == "test"
  assert report["binarization"] == "dynamic"
  assert report["num_examples"] == 200 and report["num_importance_samples"] == 50
  assert report["steps"] == TOTAL_STEPS
  assert report["elbo"] == pytest.approx(report["reconstruction"] - report["kl"], abs=1e-3)
  # log p(x) >= its estimate with 50 samples >= the ELBO, in expectation; on
  # 200 images the gap is well beyond the Monte Carlo error.
  assert report["log_likelihood"] >= report["elbo"]
  assert 0.5 < report["log_likelihood"] - report["elbo"] < 20
  assert -200 < report["elbo"] < -120
  stdout = result.stdout
  assert "mnist test (200 images, dynamic binarization), after 300 SGD steps:" in stdout
  assert re.search(rf"ELBO\s+{report['elbo']:.2f} nats \(reconstruction "
                   rf"{report['reconstruction']:.2f}, KL {report['kl']:.2f}\)", stdout)
  assert re.search(rf"log p\(x\), IS k=50\s+{report['log_likelihood']:.2f} nats", stdout)


def test_training_exports_a_version_and_export_adds_the_next(env, reference):
  model_dir, result = finished_reference(reference)
  exported = model_dir / run_folder.EXPORT_DIR / "vae"
  assert f"exported {exported / '1'}" in result.stdout
  assert (exported / "1" / "saved_model.pb").exists()
  assert json.loads((exported / "1" / "assets.extra" / "vae_tf_config.json").read_text()) == \
      json.loads((model_dir / run_folder.CONFIG_FILE).read_text())
  again = run("pipelines.export", f"--model_dir={model_dir}", env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.strip().endswith(f"exported {exported / '2'}")
  taken = run("pipelines.export", f"--model_dir={model_dir}", "--version=2", env=env)
  assert taken.returncode != 0
  assert taken.stderr.strip().splitlines()[-1] == f"error: {exported / '2'} already exists"
  bad_name = run("pipelines.export", f"--model_dir={model_dir}", "--model_name=../x", env=env)
  assert bad_name.returncode != 0 and "--model_name" in bad_name.stderr
