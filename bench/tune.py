"""Wall-clock of a fixed search with 1 and 2 worker processes; Hyperband's savings.

  python -m bench.tune [--workers=1,2] [--max_trials=8]

Part 1 runs the same random search (--max_trials configurations of latent_dim,
--max_epochs epochs each, early stopping off so every trial does the same
work) as `pipelines.tune` processes: one standalone process, then a chief
with N workers on loopback for each N in --workers. The clock runs from
launching the processes to the chief's exit, so it includes interpreter
start-up, data loading, every trial's compilation and the final report.

Part 2 runs Hyperband over a grid (latent_dim x learning_rate) and compares
the epochs it trained with a plain grid search training every configuration
for --hyperband_max_epochs.

Results go to stdout and <output_dir>/results.md. Run it on a quiet machine:
the workers share its cores.
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("workers", ["1", "2"], "Worker process counts to time.")
flags.DEFINE_integer("max_trials", 8, "Trials of the fixed search.", lower_bound=1)
flags.DEFINE_list("latent_dims", ["2", "3", "5", "10", "20", "50", "100", "200"],
                  "latent_dim choices of the fixed search (as many as --max_trials, so a "
                  "random search visits each once).")
flags.DEFINE_integer("max_epochs", 3, "Epochs of every trial of the fixed search.",
                     lower_bound=1)
flags.DEFINE_integer("train_examples", 10000, "MNIST training images per trial.", lower_bound=1)
flags.DEFINE_integer("hidden_units", 200, "Hidden units (one layer).", lower_bound=1)
flags.DEFINE_list("hyperband_learning_rates", ["0.01", "0.02", "0.1"],
                  "learning_rate choices of the Hyperband grid (times --latent_dims).")
flags.DEFINE_integer("hyperband_max_epochs", 9, "Hyperband's max_epochs.", lower_bound=1)
flags.DEFINE_integer("intra_op_threads", 0, "TF_NUM_INTRAOP_THREADS for every process of "
                     "part 1 (0: TensorFlow's default, one per core).", lower_bound=0)
flags.DEFINE_bool("hyperband", True, "Run part 2.")
flags.DEFINE_string("output_dir", "runs/bench_tune", "Searches and results.md go here.")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _search_flags(tuner_dir: Path, *extra: str) -> list[str]:
  return [sys.executable, "-m", "pipelines.tune", f"--tuner_dir={tuner_dir}",
          f"--train_examples={FLAGS.train_examples}", "--validation_examples=2000",
          "--test_examples=1000", f"--hidden_units={FLAGS.hidden_units}",
          f"--latent_dims={','.join(FLAGS.latent_dims)}", "--num_importance_samples=10",
          "--noexport", *extra]


def _run_processes(commands: list[tuple[list[str], dict]], log_dir: Path) -> float:
  """Starts every command at once; seconds until the first one (the chief) exits."""
  log_dir.mkdir(parents=True, exist_ok=True)
  started = time.monotonic()
  processes = []
  for index, (command, env) in enumerate(commands):
    with open(log_dir / f"process{index}.log", "w") as log:
      processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT))
  processes[0].wait()
  seconds = time.monotonic() - started
  for process in processes[1:]:
    process.wait()
  failed = [index for index, process in enumerate(processes) if process.returncode]
  if failed:
    raise RuntimeError(f"process(es) {failed} failed; see {log_dir}")
  return seconds


def _rows(project: Path) -> list[dict[str, str]]:
  with open(project / "summary.csv") as f:
    return list(csv.DictReader(f))


def time_search(num_workers: int, output_dir: Path) -> dict:
  """Runs the fixed search with `num_workers` worker processes (0: standalone)."""
  name = f"workers_{num_workers}" if num_workers else "standalone"
  tuner_dir = output_dir / name
  # A fresh folder rather than --overwrite, which workers may not pass.
  shutil.rmtree(tuner_dir, ignore_errors=True)
  command = _search_flags(tuner_dir, "--tuner=random", f"--max_trials={FLAGS.max_trials}",
                          f"--max_epochs={FLAGS.max_epochs}", "--early_stopping_patience=0",
                          "--learning_rates=0.02", "--project_name=search")
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  if FLAGS.intra_op_threads:
    env["TF_NUM_INTRAOP_THREADS"] = str(FLAGS.intra_op_threads)
  if num_workers:
    port = str(_free_port())
    roles = ["chief"] + [f"worker{i}" for i in range(num_workers)]
    commands = [(command, {**env, "KERASTUNER_TUNER_ID": role,
                           "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port})
                for role in roles]
  else:
    commands = [(command, env)]
  seconds = _run_processes(commands, tuner_dir / "logs")
  rows = _rows(tuner_dir / "search")
  completed = [row for row in rows if row["status"] == "COMPLETED"]
  return {
      "setup": (f"chief + {num_workers} worker{'s' * (num_workers > 1)}" if num_workers
                else "standalone (1 process)"),
      "num_workers": num_workers,
      "seconds": seconds,
      "completed": len(completed),
      "trials_per_hour": len(completed) / seconds * 3600,
      "mean_trial_seconds": sum(float(row["seconds"]) for row in completed) / len(completed),
      "trials_by_worker": {worker: sum(row["worker"] == worker for row in completed)
                           for worker in sorted({row["worker"] for row in completed})},
  }


def hyperband_savings(output_dir: Path) -> dict:
  tuner_dir = output_dir / "hyperband"
  shutil.rmtree(tuner_dir, ignore_errors=True)
  command = _search_flags(
      tuner_dir, "--tuner=hyperband", f"--max_epochs={FLAGS.hyperband_max_epochs}",
      f"--learning_rates={','.join(FLAGS.hyperband_learning_rates)}",
      "--project_name=search")
  seconds = _run_processes([(command, {**os.environ, "PYTHONPATH": str(REPO_ROOT)})],
                           tuner_dir / "logs")
  rows = _rows(tuner_dir / "search")
  results = json.loads((tuner_dir / "search" / "results.json").read_text())
  grid = len(FLAGS.latent_dims) * len(FLAGS.hyperband_learning_rates)
  configurations = {(row["latent_dim"], row["learning_rate"]) for row in rows}
  return {
      "seconds": seconds,
      "trials": len(rows),
      "configurations": len(configurations),
      "grid": grid,
      "epochs": results["epochs"],
      "grid_epochs": grid * FLAGS.hyperband_max_epochs,
      "best": results["hyperparameters"],
      "best_val_elbo": results["val_elbo"],
  }


def main(argv):
  del argv
  output_dir = Path(FLAGS.output_dir).resolve()
  counts = [0] + [int(count) for count in FLAGS.workers]
  searches = [time_search(count, output_dir) for count in counts]
  lines = [
      f"Fixed search: random, {FLAGS.max_trials} trials over latent_dim "
      f"{{{', '.join(FLAGS.latent_dims)}}}, {FLAGS.max_epochs} epochs each, "
      f"{FLAGS.train_examples} MNIST training images, 784-{FLAGS.hidden_units}-Nz tanh; "
      f"intra-op threads per process: {FLAGS.intra_op_threads or 'default'}.",
      "",
      "| setup | trials completed | wall-clock s | trials/hour | mean trial s | trials by worker |",
      "| --- | ---: | ---: | ---: | ---: | --- |",
  ]
  for search in searches:
    split = ", ".join(f"{worker} {count}" for worker, count in search["trials_by_worker"].items())
    lines.append(f"| {search['setup']} | {search['completed']} | {search['seconds']:.1f} | "
                 f"{search['trials_per_hour']:.0f} | {search['mean_trial_seconds']:.1f} | "
                 f"{split} |")
  one_worker = next((s for s in searches if s["num_workers"] == 1), None)
  for search in searches:
    if one_worker and search["num_workers"] > 1:
      lines.append(f"\n{search['setup']}: {one_worker['seconds'] / search['seconds']:.2f}x "
                   "the wall-clock speed of chief + 1 worker.")
  if FLAGS.hyperband:
    hyperband = hyperband_savings(output_dir)
    saved = hyperband["grid_epochs"] - hyperband["epochs"]
    lines += [
        "",
        f"Hyperband (max_epochs={FLAGS.hyperband_max_epochs}, factor 3) over the "
        f"{hyperband['grid']}-configuration grid latent_dim x learning_rate "
        f"{{{', '.join(FLAGS.hyperband_learning_rates)}}}: {hyperband['trials']} trials on "
        f"{hyperband['configurations']} configurations trained {hyperband['epochs']} epochs "
        f"in {hyperband['seconds']:.1f} s; a plain grid at {FLAGS.hyperband_max_epochs} "
        f"epochs each trains {hyperband['grid_epochs']} epochs: {saved} saved "
        f"({saved / hyperband['grid_epochs']:.0%}). Best: {hyperband['best']}, validation "
        f"ELBO {hyperband['best_val_elbo']:.2f} nats.",
    ]
  text = "\n".join(lines) + "\n"
  output_dir.mkdir(parents=True, exist_ok=True)
  (output_dir / "results.md").write_text(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
