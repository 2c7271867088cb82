"""`python -m pipelines.reproduce` end to end with the tiny budget, as real subprocesses."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cli_helpers import finish, run, start, stderr_lines
from vae_tf.reproduction import budgets

FIGURE_FILES = {
    "figure2": ["figure2.csv", "figure2_final_log_likelihood.csv", "figure2_mnist.png",
                "figure2_frey_face.png"],
    "figure3": ["figure3.csv", "figure3.png"],
    "figure4": ["figure4.csv", "figure4_frey_face_nz2.png", "figure4_mnist_nz2.png"],
    "figure5": ["figure5.csv", "figure5_mnist_nz2.png", "figure5_mnist_nz20.png"],
}
# The run whose last evaluation the resumption test removes.
RESUMED_RUN = "mnist_nz3_h100_n300_mcem"


def read_csv(path: Path) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
  return [{k: v for k, v in row.items() if k != "evaluation_seconds"} for row in rows]


def checkpoint_states(output_dir: Path) -> dict[str, tuple[str, int]]:
  """Each run's checkpoint index: its text and modification time."""
  return {path.parent.parent.name: (path.read_text(), path.stat().st_mtime_ns)
          for path in sorted(output_dir.glob("runs/*/checkpoints/checkpoint"))}


@pytest.fixture(scope="module")
def tiny_run(env, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
  output_dir = tmp_path_factory.mktemp("reproduce") / "tiny"
  # Unbuffered, as a console streaming the log gets it: every write reaches the
  # shared stdout at once, so the two workers' lines could interleave.
  result = finish(start("pipelines.reproduce", "all", "--budget=tiny",
                        f"--output_dir={output_dir}", env={**env, "PYTHONUNBUFFERED": "1"}),
                  timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  return output_dir, result


def test_every_figure_writes_csv_plots_and_report(tiny_run):
  output_dir, result = tiny_run
  assert "(budget tiny, 2 at a time)" in result.stdout  # --parallel_runs's default
  for line in result.stdout.splitlines():  # whole lines, whichever process wrote them
    assert re.fullmatch(r"\[ *\d+\.\d s\] [^\[]+", line), line
  for figure, names in FIGURE_FILES.items():
    for name in names:
      assert (output_dir / figure / name).stat().st_size > 0, name
    assert f"{figure} done in" in result.stdout
  report = (output_dir / "report.md").read_text()
  assert report.startswith("# Reproduction of Kingma & Welling (2013), budget `tiny`")
  embedded = [line.split("](")[1].rstrip(")") for line in report.splitlines()
              if line.startswith("![")]
  assert len(embedded) == 2 + 1 + 2 + 2
  assert all((output_dir / path).exists() for path in embedded)
  assert json.loads((output_dir / "reproduce.json").read_text()) == {
      "budget": json.loads(json.dumps(dataclasses.asdict(budgets.FIGURE_BUDGETS["tiny"]))),
      "seed": 0}


def test_log_lines_of_processes_sharing_stdout_stay_whole(env, tmp_path):
  # The workers log to the stdout they share with the parent, unbuffered as a console gets it.
  code = ("from pipelines import reproduce\n"
          "for i in range(2000): reproduce._log(f'{i} ' + 'x' * 200)")
  with open(tmp_path / "log.txt", "wb") as shared:
    writers = [subprocess.Popen([sys.executable, "-c", code], stdout=shared,
                                env={**env, "PYTHONUNBUFFERED": "1"}) for _ in range(2)]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
  lines = (tmp_path / "log.txt").read_text().splitlines()
  assert len(lines) == 4000
  for line in lines:
    assert re.fullmatch(r"\[ *\d+\.\d s\] \d+ x{200}", line), line


def test_figure2_curves_are_sane(tiny_run):
  output_dir, _ = tiny_run
  rows = read_csv(output_dir / "figure2" / "figure2.csv")
  curves = {}
  for row in rows:
    curves.setdefault((row["dataset"], row["latent_dim"], row["method"]), []).append(row)
  assert set(curves) == {("mnist", "3", "aevb"), ("mnist", "3", "wake_sleep"),
                         ("frey_face", "2", "aevb"), ("frey_face", "2", "wake_sleep")}
  for key, curve in curves.items():
    examples = [int(row["examples_seen"]) for row in curve]
    assert examples == sorted(examples) and examples[-1] >= 10_000, key
    for row in curve:
      train, test = float(row["train_elbo"]), float(row["test_elbo"])
      # MNIST: below 0 and above 784 log(1/2) = -543 after a few thousand
      # examples. Frey Face's Gaussian densities give positive bounds.
      assert (-543 < test < 0) if key[0] == "mnist" else (0 < test < 2000), (key, row)
      assert abs(train - test) < 50, (key, row)
  aevb = curves[("mnist", "3", "aevb")]
  assert float(aevb[-1]["test_elbo"]) > float(aevb[0]["test_elbo"])
  [final] = read_csv(output_dir / "figure2" / "figure2_final_log_likelihood.csv")
  assert final["examples_seen"] == aevb[-1]["examples_seen"]
  # The importance-sampled log-likelihood is a tighter bound than the ELBO.
  assert float(final["test_elbo"]) < float(final["test_is_log_likelihood"]) < 0


def test_figure3_log_likelihoods_are_sane(tiny_run):
  output_dir, _ = tiny_run
  rows = read_csv(output_dir / "figure3" / "figure3.csv")
  assert {(row["train_examples"], row["method"]) for row in rows} == {
      (n, m) for n in ("100", "300") for m in ("aevb", "wake_sleep", "mcem")}
  for row in rows:
    for split in ("train", "test"):
      value = float(row[f"{split}_hmc_log_likelihood"])
      assert -600 < value < 0 and math.isfinite(value), row
      if row["method"] == "mcem":
        assert row[f"{split}_is_log_likelihood"] == ""  # no q(z|x) to sample
      else:
        # Two estimators of the same number, a few nats apart at these sizes.
        assert abs(float(row[f"{split}_is_log_likelihood"]) - value) < 60, row
  for method in ("aevb", "wake_sleep", "mcem"):
    curve = [row for row in rows if row["method"] == method and row["train_examples"] == "300"]
    assert float(curve[-1]["train_hmc_log_likelihood"]) > float(
        curve[0]["train_hmc_log_likelihood"]), method
  # MCEM's batch rounds: one round is all 300 training images.
  mcem = [row for row in rows if row["method"] == "mcem" and row["train_examples"] == "300"]
  assert [int(row["examples_seen"]) for row in mcem] == [300 * int(row["steps"]) for row in mcem]


def test_image_figures_have_the_paper_layout(tiny_run):
  output_dir, _ = tiny_run
  # 20 x 20 tiles of 28 x 20 (Frey Face) or 28 x 28 (MNIST), 1-pixel gaps, scaled by 2.
  assert Image.open(output_dir / "figure4" / "figure4_frey_face_nz2.png").size == (
      2 * (20 * 21 + 1), 2 * (20 * 29 + 1))
  assert Image.open(output_dir / "figure4" / "figure4_mnist_nz2.png").size == (
      2 * (20 * 29 + 1), 2 * (20 * 29 + 1))
  # 100 samples, 10 x 10.
  assert Image.open(output_dir / "figure5" / "figure5_mnist_nz20.png").size == (
      2 * (10 * 29 + 1), 2 * (10 * 29 + 1))
  # Figures 4 and 5 share the MNIST Nz=2 run, trained once.
  [manifold_row] = [row for row in read_csv(output_dir / "figure4" / "figure4.csv")
                    if row["dataset"] == "mnist"]
  [samples_row] = [row for row in read_csv(output_dir / "figure5" / "figure5.csv")
                   if row["latent_dim"] == "2"]
  assert manifold_row["test_elbo"] == samples_row["test_elbo"]


def test_rerun_resumes_and_redoes_only_what_is_missing(tiny_run, env):
  output_dir, _ = tiny_run
  curve_path = output_dir / "runs" / RESUMED_RUN / "curve.csv"
  curve = read_csv(curve_path)
  figure3 = read_csv(output_dir / "figure3" / "figure3.csv")
  # As if stopped after the last training step but before its evaluation.
  with open(curve_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(curve[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(curve[:-1])
  shutil.rmtree(output_dir / "figure3")
  checkpoints = checkpoint_states(output_dir)
  assert len(checkpoints) == 12

  # One run at a time, in this process: the other way of `--parallel_runs`.
  result = finish(start("pipelines.reproduce", "all", "--budget=tiny", "--parallel_runs=1",
                        f"--output_dir={output_dir}", env=env), timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "(budget tiny, 1 at a time)" in result.stdout
  assert without_timing(read_csv(curve_path)) == without_timing(curve)
  assert without_timing(read_csv(output_dir / "figure3" / "figure3.csv")) == \
      without_timing(figure3)
  # No run trained again: every checkpoint is as it was.
  assert checkpoint_states(output_dir) == checkpoints


def test_bad_arguments_fail_with_one_clear_line(env, tmp_path):
  empty_raw = tmp_path / "empty_raw"
  empty_raw.mkdir()
  no_data_env = {**env, "TFDS_DATA_DIR": str(tmp_path / "empty_tfds"),
                 "VAE_TF_MANUAL_DIR": str(empty_raw)}
  other_budget = tmp_path / "other_budget"
  other_budget.mkdir()
  (other_budget / "reproduce.json").write_text(json.dumps(
      {"budget": dataclasses.asdict(budgets.FIGURE_BUDGETS["small"]), "seed": 0}))
  cases = {
      "unknown figure": (["figure9", f"--output_dir={tmp_path / 'a'}"], env,
                         "error: unknown figure 'figure9'; give one or more of figure2, figure3, "
                         "figure4, figure5, iwae_table, or all"),
      "no figure": ([f"--output_dir={tmp_path / 'b'}"], env,
                    "error: no figure given; give one or more of figure2, figure3, figure4, "
                    "figure5, iwae_table, or all"),
      "bad budget": (["all", "--budget=huge", f"--output_dir={tmp_path / 'c'}"], env,
                     "FATAL Flags parsing error: flag --budget=huge: value should be one of "
                     "<tiny|small|medium|paper>"),
      "missing data": (["figure5", "--budget=tiny", f"--output_dir={tmp_path / 'd'}"],
                       no_data_env, "error: cannot prepare mnist: "),
      "other budget": (["figure4", "--budget=tiny", f"--output_dir={other_budget}"], env,
                       f"error: {other_budget} holds runs of budget 'small' with seed 0, not "
                       "of this definition of budget 'tiny' with seed 0; use another "
                       "--output_dir"),
  }
  processes = {case: start("pipelines.reproduce", *args, env=case_env)
               for case, (args, case_env, _) in cases.items()}
  for case, process in processes.items():
    result = finish(process)
    expected = cases[case][2]
    assert result.returncode == 1, case
    assert "Traceback" not in result.stderr, case
    lines = stderr_lines(result)
    if expected.startswith("FATAL"):
      assert lines[0] == expected
    else:
      assert [line for line in lines if line.startswith("error:")] == lines[-1:], case
      assert lines[-1].startswith(expected), (case, lines[-1])
  for name in "abcde":
    assert not (tmp_path / name).exists()
  assert os.listdir(other_budget) == ["reproduce.json"]


def test_help_lists_the_figures(env):
  result = run("pipelines.reproduce", "--helpshort", env=env)
  assert result.returncode == 1  # absl's exit status after help
  for figure in FIGURE_FILES:
    assert figure in result.stdout


# --- iwae_table: Burda et al.'s log-likelihoods, obtained against published -----


@pytest.fixture(scope="module")
def tiny_table(env, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
  output_dir = tmp_path_factory.mktemp("iwae_table") / "tiny"
  # Two models side by side, each in its own single-threaded process.
  result = finish(start("pipelines.reproduce", "iwae_table", "--budget=tiny",
                        "--parallel_runs=2", f"--output_dir={output_dir}", env=env), timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  return output_dir, result


def test_iwae_table_trains_evaluates_and_compares_with_burda(tiny_table):
  output_dir, result = tiny_table
  rows = read_csv(output_dir / "iwae_table.csv")
  assert [(row["model"], row["published"]) for row in rows] == [("vae_k1", "-86.76"),
                                                               ("iwae_k5", "-85.54")]
  for row in rows:
    assert row["steps"] == "150" and row["test_images"] == "100"  # 3 epochs of 1,000 / 20
    log_likelihood, elbo = float(row["test_log_likelihood"]), float(row["test_elbo"])
    # The IS estimate of the same draws is above their mean log-weight.
    assert -300 < elbo < log_likelihood < -150
    assert float(row["training_seconds"]) > 0
  report = (output_dir / "iwae_table.md").read_text()
  assert "obtained vs published" in report
  assert "- Command: `python -m pipelines.reproduce iwae_table --budget=tiny" in report
  assert "| VAE k=1 | 3 | 20 |" in report and "| IWAE k=5 | 3 | 20 |" in report
  curves = read_csv(output_dir / "iwae_curves.csv")
  for model in ("vae_k1", "iwae_k5"):
    curve = [row for row in curves if row["model"] == model]
    assert [row["epoch"] for row in curve] == ["1", "3"]
    for clock in ("training_seconds", "training_cpu_seconds"):
      seconds = [float(row[clock]) for row in curve]
      assert 0 < seconds[0] < seconds[1]
  for name in ("iwae_curves_epochs.png", "iwae_curves_seconds.png",
               "iwae_curves_cpu_seconds.png"):
    with Image.open(output_dir / name) as image:
      assert image.size[0] > 300
  assert "vae_k1: test log p(x)" in result.stdout and "iwae_k5: test log p(x)" in result.stdout


def test_iwae_table_rerun_trains_and_evaluates_nothing(tiny_table, env):
  output_dir, _ = tiny_table
  finals = {path: path.read_text() for path in output_dir.glob("runs/*/final.json")}
  checkpoints = checkpoint_states(output_dir)
  assert len(finals) == 2 and len(checkpoints) == 2
  result = finish(start("pipelines.reproduce", "iwae_table", "--budget=tiny",
                        "--parallel_runs=1", f"--output_dir={output_dir}", env=env))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "training" not in result.stdout
  assert {path: path.read_text() for path in output_dir.glob("runs/*/final.json")} == finals
  assert checkpoint_states(output_dir) == checkpoints
  other = finish(start("pipelines.reproduce", "iwae_table", "--budget=small",
                       f"--output_dir={output_dir}", env=env))
  assert other.returncode == 1
  assert stderr_lines(other)[-1] == (
      f"error: {output_dir} holds a table of budget 'tiny' with seed 0, not of this definition "
      "of budget 'small' with seed 0; use another --output_dir")
