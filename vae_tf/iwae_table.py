"""Burda et al.'s (2015) MNIST log-likelihoods, obtained against published.

Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", Table 1,
one stochastic layer (784-200-200-50 tanh), dynamically binarized MNIST,
test log p(x) estimated with k=5000 importance samples. Each model here is
trained with their recipe (`config.preset("iwae_paper")`) on all 60,000
training images, along a budget's epochs, in its own resumable run folder
`<output_dir>/runs/<model>/`:
  - curve.csv: test log p(x) (IS, a few hundred samples, a fixed subset of
    test images) and the ELBO of the same draws at log-spaced epochs, with
    the run's training seconds (`callbacks_lib.TrainingClock`);
  - final.json: test log p(x) with `final_samples` draws and the ELBO.
A rerun of a finished budget trains and evaluates nothing. Models train in
parallel processes of one thread each when asked: on 2 cores, two
single-threaded runs do more examples per second in total than one run on
both cores (measured: docs/likelihood.md).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from vae_tf import callbacks as callbacks_lib
from vae_tf import charts, config as config_lib, evaluation, iwae_report, training
from vae_tf.data import pipeline, sources
from vae_tf.reproduction import CurveRecorder, read_rows, record_budget

RUNS_DIR = "runs"
BUDGET_FILE = "iwae_table.json"
CURVE_FILE = "curve.csv"
FINAL_FILE = "final.json"
EVALUATION_SEED = 0

# Burda et al. (2015), Table 1, one stochastic layer, MNIST, k=5000 evaluation.
PUBLISHED = {("A", 1): -86.76, ("A", 5): -86.47, ("A", 50): -86.35,
             ("iwae", 1): -86.76, ("iwae", 5): -85.54, ("iwae", 50): -84.78}
COLORS = {"A": "tab:blue", "iwae": "tab:red"}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One trained model: its objective, k and length."""

  estimator: str  # "A", the VAE's ELBO (Burda's VAE averages k log-weights), or "iwae"
  num_samples: int
  epochs: int

  @property
  def name(self) -> str:
    return f"{'vae' if self.estimator == 'A' else 'iwae'}_k{self.num_samples}"

  @property
  def label(self) -> str:
    return f"{'VAE' if self.estimator == 'A' else 'IWAE'} k={self.num_samples}"


@dataclasses.dataclass(frozen=True)
class Budget:
  name: str
  train_examples: int | None  # None: all 60,000, as Burda et al.
  hidden_units: tuple[int, ...]
  latent_dim: int
  batch_size: int
  models: tuple[ModelSpec, ...]
  # Learning curves: test log p(x) from curve_samples draws on the first
  # curve_images test images, at curve_points log-spaced epochs.
  curve_points: int
  curve_samples: int
  curve_images: int
  # The table: final_samples draws on the first final_images test images.
  final_samples: int
  final_images: int


BUDGETS = {
    "tiny": Budget("tiny", train_examples=1_000, hidden_units=(20, 20), latent_dim=5,
                   batch_size=20, models=(ModelSpec("A", 1, 3), ModelSpec("iwae", 5, 3)),
                   curve_points=2, curve_samples=10, curve_images=50, final_samples=50,
                   final_images=100),
    # About 15 minutes on 2 cores.
    "small": Budget("small", train_examples=None, hidden_units=(200, 200), latent_dim=50,
                    batch_size=100, models=(ModelSpec("A", 1, 60), ModelSpec("iwae", 5, 20)),
                    curve_points=6, curve_samples=100, curve_images=1_000, final_samples=5_000,
                    final_images=1_000),
    # At most 2 hours of training on 2 cores, the two models side by side:
    # equal time, so the VAE gets about 3 times the IWAE's epochs.
    "medium": Budget("medium", train_examples=None, hidden_units=(200, 200), latent_dim=50,
                     batch_size=100,
                     models=(ModelSpec("A", 1, 2_000), ModelSpec("iwae", 5, 650)),
                     curve_points=12, curve_samples=100, curve_images=1_000,
                     final_samples=5_000, final_images=10_000),
    # Burda et al.'s own: minibatches of 20, 3,280 epochs.
    "paper": Budget("paper", train_examples=None, hidden_units=(200, 200), latent_dim=50,
                    batch_size=20,
                    models=(ModelSpec("A", 1, config_lib.BURDA_EPOCHS),
                            ModelSpec("iwae", 5, config_lib.BURDA_EPOCHS),
                            ModelSpec("iwae", 50, config_lib.BURDA_EPOCHS)),
                    curve_points=12, curve_samples=100, curve_images=1_000,
                    final_samples=5_000, final_images=10_000),
}


@dataclasses.dataclass(frozen=True)
class Data:
  train: np.ndarray  # uint8 images
  test: np.ndarray


def load_data(budget: Budget, data_dir: str | None = None,
              manual_dir: str | None = None) -> Data:
  train = sources.load_images("mnist", "train", data_dir, manual_dir)
  return Data(train[:budget.train_examples], sources.load_images("mnist", "test", data_dir,
                                                                  manual_dir))


def run_configs(budget: Budget, spec: ModelSpec, num_train: int,
                seed: int) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
  model, train = config_lib.preset("iwae_paper", "mnist", num_train)
  model = dataclasses.replace(model, hidden_units=budget.hidden_units,
                              latent_dim=budget.latent_dim, estimator=spec.estimator,
                              num_samples=spec.num_samples)
  train = dataclasses.replace(train, batch_size=budget.batch_size, epochs=spec.epochs,
                              train_examples=num_train, seed=seed)
  return model, training.fit_updates_per_call(train, num_train)


def curve_steps(epochs: int, num_points: int, steps_per_epoch: int) -> list[int]:
  """SGD steps at whole epochs nearest `num_points` log-spaced epoch counts."""
  return sorted({int(round(e)) * steps_per_epoch
                 for e in np.geomspace(1, epochs, num_points)})


def _scores(model, x: np.ndarray, num_samples: int) -> dict[str, float]:
  scores = evaluation.importance_sampled_scores(model, x, num_samples=num_samples,
                                                seed=EVALUATION_SEED)
  return {"test_log_likelihood": float(scores["log_likelihood"].mean()),
          "test_elbo": float(scores["elbo"].mean())}


def run_model(budget: Budget, spec: ModelSpec, output_dir: str | os.PathLike, seed: int = 0,
              data_dir: str | None = None, manual_dir: str | None = None,
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

  recorder = CurveRecorder(
      run_dir / CURVE_FILE, curve_steps(spec.epochs, budget.curve_points, steps_per_epoch),
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
      "published": PUBLISHED.get((spec.estimator, spec.num_samples)),
  }
  final["evaluation_seconds"] = round(time.time() - started, 1)
  training.write_atomically(final_path, json.dumps(final, indent=2))
  log(f"{spec.name}: test log p(x) {final['test_log_likelihood']:.2f} nats "
      f"(published {final['published']})")
  return final


def _single_threaded() -> None:
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def run_table(budget: Budget, output_dir: str | os.PathLike, *, seed: int = 0,
              data_dir: str | None = None, manual_dir: str | None = None,
              parallel_runs: int = 1, command: str = "",
              log: Callable[[str], None] = lambda message: None) -> list[Path]:
  """Trains and evaluates every model of `budget`; writes the table and curves.

  With `parallel_runs` > 1, that many models train at once, each in its own
  single-threaded process.
  """
  output_dir = Path(output_dir)
  load_data(budget, data_dir, manual_dir)  # prepares the data once, before any worker
  record_budget(output_dir / BUDGET_FILE, budget, seed, "a table")
  run = functools.partial(run_model, budget, output_dir=output_dir, seed=seed,
                          data_dir=data_dir, manual_dir=manual_dir, log=log)
  started = time.time()
  if parallel_runs > 1:
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(parallel_runs, len(budget.models)),
        mp_context=multiprocessing.get_context("spawn"), initializer=_single_threaded) as pool:
      finals = list(pool.map(run, budget.models))
  else:
    finals = [run(spec) for spec in budget.models]
  curves = {spec.name: sorted(read_rows(output_dir / RUNS_DIR / spec.name / CURVE_FILE),
                              key=lambda row: row["steps"])
            for spec in budget.models}
  return write_outputs(budget, output_dir, finals, curves, command, time.time() - started)


def write_outputs(budget: Budget, output_dir: Path, finals: list[dict],
                  curves: dict[str, list[dict]], command: str, seconds: float) -> list[Path]:
  curve_rows = [{"model": name, **row} for name, rows in curves.items() for row in rows]
  written = [training.write_csv_atomically(output_dir / "iwae_table.csv", finals),
             training.write_csv_atomically(output_dir / "iwae_curves.csv", curve_rows)]
  for x_key, x_label, file_name in (
      ("epoch", "epochs", "iwae_curves_epochs.png"),
      ("training_seconds", "training seconds (wall-clock)", "iwae_curves_seconds.png"),
      ("training_cpu_seconds", "training CPU seconds", "iwae_curves_cpu_seconds.png")):
    lines = [charts.Line(spec.label, [row[x_key] for row in curves[spec.name]],
                         [row["test_log_likelihood"] for row in curves[spec.name]],
                         COLORS[spec.estimator], "-" if spec.num_samples < 50 else "--")
             for spec in budget.models]
    written.append(charts.save_line_panels(
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
