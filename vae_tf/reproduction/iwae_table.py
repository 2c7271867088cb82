"""Burda et al.'s (2015) MNIST log-likelihoods, obtained against published.

Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", Table 1,
one stochastic layer (784-200-200-50 tanh), dynamically binarized MNIST,
test log p(x) estimated with k=5000 importance samples. Each model here is
trained with their recipe (`config.preset("iwae_paper")`) on all 60,000
training images, along a budget's epochs, in its own resumable run folder
`<output_dir>/runs/<model>/`:
  - curve.csv: test log p(x) (IS, a few hundred samples, a fixed subset of
    test images) and the ELBO of the same draws at log-spaced epochs, with
    the run's training seconds (`callbacks.TrainingClock`);
  - final.json: test log p(x) with `final_samples` draws and the ELBO.
How much to train is a `budgets.TableBudget`. A rerun of a finished budget
trains and evaluates nothing. Models train in
parallel processes of one thread each when asked (`workers`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from vae_tf import callbacks as callbacks_lib
from vae_tf import config as config_lib
from vae_tf import curve_charts, evaluation, run_folder, training
from vae_tf.data import pipeline, splits
from vae_tf.reproduction import budgets as budgets_lib
from vae_tf.reproduction import curves, iwae_report, workers

RUNS_DIR = "runs"
FINAL_FILE = "final.json"
EVALUATION_SEED = 0

COLORS = {"A": "tab:blue", "iwae": "tab:red"}


def load_data(budget: budgets_lib.TableBudget, data_dir: str | None = None,
              manual_dir: str | None = None) -> splits.Splits:
  """Burda et al. train on the whole training split: no validation is held out."""
  return splits.load_splits("mnist", data_dir=data_dir, manual_dir=manual_dir,
                            hold_out_validation=False, with_test=True,
                            train_examples=budget.train_examples)


def run_configs(budget: budgets_lib.TableBudget, spec: budgets_lib.ModelSpec,
                num_train: int, seed: int) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
  model, train = config_lib.preset("iwae_paper", "mnist", num_train)
  model = dataclasses.replace(model, hidden_units=budget.hidden_units,
                              latent_dim=budget.latent_dim, estimator=spec.estimator,
                              num_samples=spec.num_samples)
  train = dataclasses.replace(train, batch_size=budget.batch_size, epochs=spec.epochs,
                              train_examples=num_train, seed=seed)
  return model, training.fit_updates_per_call(train, num_train)


def _scores(model, x: np.ndarray, num_samples: int) -> dict[str, float]:
  scores = evaluation.importance_sampled_scores(model, x, num_samples=num_samples,
                                                seed=EVALUATION_SEED)
  return {"test_log_likelihood": float(scores["log_likelihood"].mean()),
          "test_elbo": float(scores["elbo"].mean())}


def run_model(budget: budgets_lib.TableBudget, spec: budgets_lib.ModelSpec,
              output_dir: str | os.PathLike, seed: int = 0, data_dir: str | None = None,
              manual_dir: str | None = None,
              log: Callable[[str], None] = lambda message: None) -> dict:
  """Trains (or resumes) one model of the table and evaluates it; returns final.json's row."""
  run_dir = Path(output_dir) / RUNS_DIR / spec.name
  data = load_data(budget, data_dir, manual_dir)
  model_config, train_config = run_configs(budget, spec, len(data.train), seed)
  steps_per_epoch = pipeline.blocks_per_epoch(
      len(data.train), train_config.batch_size,
      train_config.updates_per_call) * train_config.updates_per_call
  total_steps = spec.epochs * steps_per_epoch
  final_path = run_dir / FINAL_FILE
  if final_path.exists():
    final = json.loads(final_path.read_text())
    if final["steps"] == total_steps:
      return final

  curve_x = pipeline.evaluation_array(data.test[:budget.curve_images], "dynamic")
  clock = callbacks_lib.TrainingClock()

  def evaluate(model) -> dict:
    steps = int(model.optimizer.iterations.numpy())
    row = {"epoch": steps // steps_per_epoch,
           "training_seconds": round(float(clock.seconds.numpy()), 2),
           "training_cpu_seconds": round(float(clock.cpu_seconds.numpy()), 2),
           **_scores(model, curve_x, budget.curve_samples)}
    log(f"{spec.name}: epoch {row['epoch']}/{spec.epochs}, training "
        f"{row['training_seconds']:.0f} s ({row['training_cpu_seconds']:.0f} CPU s), test log p(x) "
        f"{row['test_log_likelihood']:.2f} nats "
        f"(k={budget.curve_samples}, {len(curve_x)} images)")
    return row

  recorder = curves.CurveRecorder(
      run_dir / curves.CURVE_FILE,
      curves.epoch_steps(spec.epochs, budget.curve_points, steps_per_epoch),
      train_config.batch_size, evaluate)
  log(f"{spec.name}: training {spec.epochs} epochs of {len(data.train)} images")
  result = training.train(model_config, train_config, train_images=data.train,
                          validation_images=None, model_dir=run_dir, verbose=0,
                          callbacks=[recorder], clock=clock)
  recorder.record_if_due(result.model)  # the last point, if an interruption skipped it

  log(f"{spec.name}: test log p(x), k={budget.final_samples}, {budget.final_images} images")
  started = time.time()
  final_x = pipeline.evaluation_array(data.test[:budget.final_images], "dynamic")
  final = {
      "model": spec.name, "label": spec.label, "estimator": spec.estimator,
      "num_samples": spec.num_samples, "epochs": spec.epochs, "steps": result.steps,
      "batch_size": train_config.batch_size,
      "training_seconds": round(float(clock.seconds.numpy()), 1),
      "training_cpu_seconds": round(float(clock.cpu_seconds.numpy()), 1),
      "final_samples": budget.final_samples, "test_images": len(final_x),
      **_scores(result.model, final_x, budget.final_samples),
      "published": budgets_lib.PUBLISHED.get((spec.estimator, spec.num_samples)),
  }
  final["evaluation_seconds"] = round(time.time() - started, 1)
  run_folder.write_atomically(final_path, json.dumps(final, indent=2))
  log(f"{spec.name}: test log p(x) {final['test_log_likelihood']:.2f} nats "
      f"(published {final['published']})")
  return final


def run_table(budget: budgets_lib.TableBudget, output_dir: str | os.PathLike, *, seed: int = 0,
              data_dir: str | None = None, manual_dir: str | None = None,
              parallel_runs: int = 1, command: str = "",
              log: Callable[[str], None] = lambda message: None) -> list[Path]:
  """Trains and evaluates every model of `budget`; writes the table and curves.

  With `parallel_runs` > 1, that many models train at once, each in its own
  single-threaded process.
  """
  output_dir = Path(output_dir)
  load_data(budget, data_dir, manual_dir)  # prepares the data once, before any worker
  budgets_lib.record_budget(output_dir / budgets_lib.TABLE_BUDGET_FILE, budget, seed,
                            "a table")
  run = functools.partial(run_model, budget, output_dir=output_dir, seed=seed,
                          data_dir=data_dir, manual_dir=manual_dir, log=log)
  started = time.time()
  finals = workers.map_in_processes(run, budget.models, parallel_runs)
  curve_rows = {spec.name: sorted(
      run_folder.read_csv_rows(output_dir / RUNS_DIR / spec.name / curves.CURVE_FILE),
      key=lambda row: row["steps"]) for spec in budget.models}
  return write_outputs(budget, output_dir, finals, curve_rows, command, time.time() - started)


def write_outputs(budget: budgets_lib.TableBudget, output_dir: Path, finals: list[dict],
                  curve_rows: dict[str, list[dict]], command: str,
                  seconds: float) -> list[Path]:
  rows = [{"model": name, **row} for name, model_rows in curve_rows.items()
          for row in model_rows]
  written = [run_folder.write_csv_atomically(output_dir / "iwae_table.csv", finals),
             run_folder.write_csv_atomically(output_dir / "iwae_curves.csv", rows)]
  for x_key, x_label, file_name in (
      ("epoch", "epochs", "iwae_curves_epochs.png"),
      ("training_seconds", "training seconds (wall-clock)", "iwae_curves_seconds.png"),
      ("training_cpu_seconds", "training CPU seconds", "iwae_curves_cpu_seconds.png")):
    lines = [curve_charts.Line(spec.label, [row[x_key] for row in curve_rows[spec.name]],
                               [row["test_log_likelihood"] for row in curve_rows[spec.name]],
                               COLORS[spec.estimator], "-" if spec.num_samples < 50 else "--")
             for spec in budget.models]
    written.append(curve_charts.save_line_panels(
        {f"MNIST test log p(x), budget {budget.name}": lines}, output_dir / file_name,
        xlabel=x_label, ylabel="log p(x) (nats per image)", ncols=1))
  written.append(iwae_report.write(output_dir / "iwae_table.md", budget, finals, command,
                                   machine_description(), seconds))
  return written


def machine_description() -> str:
  import tensorflow as tf
  gpus = len(tf.config.list_physical_devices("GPU"))
  return (f"{os.cpu_count()} CPU cores ({platform.machine()}), {gpus or 'no'} GPU(s), "
          f"TensorFlow {tf.__version__}")
