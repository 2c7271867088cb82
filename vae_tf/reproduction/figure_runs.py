"""The training runs behind Kingma & Welling's (2013) Figures 2 to 5.

Every run is a `vae_tf.training` run folder under `<output_dir>/runs/`, with
the paper's settings (`config.preset("paper")`) and the budget's initial
weights:
  Figure 2: the lower bound on train and test images against training
            examples seen, MNIST Nz in {3, 5, 10, 20, 200} and Frey Face Nz in
            {2, 5, 10, 20}, AEVB against wake-sleep; MNIST AEVB runs end with
            the IS log p(x);
  Figure 3: log p(x) by the Appendix D estimator against training examples
            seen, MNIST with Nz = 3 and 100 hidden units on the first 1,000
            and 50,000 training images, AEVB, wake-sleep and Monte Carlo EM
            (a batch algorithm: each sampling round covers the whole training
            set, as in Appendix E); AEVB and wake-sleep also get the IS estimate;
  Figures 4 and 5: AEVB runs of Figure 2's kind at the Nz they draw.
A run trains once, along its evaluation schedule (points log-spaced in
training examples seen), and appends one row per point to `<run>/curve.csv`
as it passes it. Figures 2, 4 and 5 share their full-training-set runs.
Rerunning resumes: `training.train` continues from the latest checkpoint and
points already in curve.csv are not evaluated again. `train_runs` trains the
runs of several figures side by side (`workers`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from vae_tf import callbacks as callbacks_lib
from vae_tf import config as config_lib
from vae_tf import evaluation, run_folder, training
from vae_tf.data import pipeline, splits
from vae_tf.reproduction import budgets as budgets_lib
from vae_tf.reproduction import curves, workers

RUNS_DIR = "runs"
# Evaluation draws are fixed: a curve point depends on the weights alone.
EVALUATION_SEED = 0

MCEM_SAMPLER_FIELDS = ("hmc_step_size", "warmup_transitions", "warmup_acceptance")


def _no_log(message: str) -> None:
  del message


@dataclasses.dataclass(frozen=True)
class Setup:
  """Where the figures of one budget go, and what every run shares."""

  budget: budgets_lib.FigureBudget
  output_dir: Path
  seed: int = 0
  data_dir: str | None = None
  manual_dir: str | None = None
  log: Callable[[str], None] = _no_log
  # Runs trained at once by `train_runs`, each in its own single-threaded
  # process; 1 trains them one after another, in this process.
  parallel_runs: int = 1

  def run_dir(self, spec: RunSpec) -> Path:
    return Path(self.output_dir) / RUNS_DIR / spec.name

  def data(self, dataset: str) -> splits.Splits:
    """Training images (validation held out) and test images; loaded once per process."""
    return splits.load_splits(dataset, data_dir=self.data_dir, manual_dir=self.manual_dir,
                              with_test=True)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run: the paper's settings for `dataset`, with these changes."""

  dataset: str
  latent_dim: int
  method: str = "aevb"
  hidden_units: int | None = None  # None: the paper's (500 MNIST, 200 Frey Face)
  train_examples: int | None = None  # None: the whole training set

  @property
  def name(self) -> str:
    parts = [self.dataset, f"nz{self.latent_dim}"]
    if self.hidden_units:
      parts.append(f"h{self.hidden_units}")
    if self.train_examples:
      parts.append(f"n{self.train_examples}")
    return "_".join([*parts, self.method])


def prepare(setup: Setup, figures: list[str]) -> None:
  """Loads the figures' data sets, then records the budget and seed in the
  output folder, or refuses a folder that holds other ones.

  Raises:
    sources.DataUnavailableError: a data set cannot be prepared (nothing is written).
    budgets.BudgetMismatchError: the output folder holds runs of another budget or seed.
  """
  for figure in figures:
    for dataset in budgets_lib.FIGURE_DATASETS[figure]:
      setup.data(dataset)
  budgets_lib.record_budget(Path(setup.output_dir) / budgets_lib.FIGURE_BUDGET_FILE,
                            setup.budget, setup.seed, "runs")


def run_configs(spec: RunSpec, num_train: int, seed: int,
                init_stddev: float) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
  model, train = config_lib.preset("paper", spec.dataset, num_train)
  model = dataclasses.replace(model, latent_dim=spec.latent_dim, init_stddev=init_stddev)
  if spec.hidden_units:
    model = dataclasses.replace(model, hidden_units=(spec.hidden_units,))
  # MCEM is a batch algorithm: a sampling round visits every training example.
  batch_size = num_train if spec.method == "mcem" else train.batch_size
  train = dataclasses.replace(train, method=spec.method, train_examples=num_train,
                              batch_size=batch_size, seed=seed)
  return model, training.fit_updates_per_call(train, num_train)


def train_along_schedule(setup: Setup, spec: RunSpec, examples: tuple[int, int],
                         num_points: int,
                         evaluate: curves.Evaluate) -> tuple[keras.Model, list[dict]]:
  """Trains `spec` to the last point of its schedule, evaluating at every point.

  Every row also holds the run's CPU seconds in training steps so far
  (`callbacks.TrainingClock`). Returns the trained model and the run's curve
  rows, in order of steps.
  """
  train_images = setup.data(spec.dataset).train[:spec.train_examples]
  model_config, train_config = run_configs(spec, len(train_images), setup.seed,
                                           setup.budget.init_stddev)
  steps = curves.evaluation_steps(examples, num_points, train_config.batch_size,
                                  train_config.updates_per_call)
  run_dir = setup.run_dir(spec)
  clock = callbacks_lib.TrainingClock()

  def evaluate_point(model) -> dict:
    row = {"training_cpu_seconds": round(float(clock.cpu_seconds.numpy()), 1),
           **evaluate(model)}
    seen = int(model.optimizer.iterations.numpy()) * train_config.batch_size
    setup.log(f"{spec.name}: {seen:,} examples seen, {row['training_cpu_seconds']:,.0f} CPU s "
              "of training")
    return row

  recorder = curves.CurveRecorder(run_dir / curves.CURVE_FILE, steps, train_config.batch_size,
                                  evaluate_point)
  # No validation during training: the curve's evaluations replace it.
  result = training.train(model_config, train_config, train_images=train_images,
                          validation_images=None, model_dir=run_dir, total_steps=steps[-1],
                          verbose=0, callbacks=[recorder], clock=clock)
  recorder.record_if_due(result.model)  # a point reached before an interruption
  return result.model, recorder.sorted_rows()


def _evaluation_images(data: splits.Splits, num_images: int) -> tuple[np.ndarray, ...]:
  # The paper's models see grey levels (binarization "none").
  return tuple(pipeline.evaluation_array(images[:num_images], "none")
               for images in (data.train, data.test))


def lower_bound_evaluation(setup: Setup, dataset: str) -> curves.Evaluate:
  train_x, test_x = _evaluation_images(setup.data(dataset), setup.budget.bound_eval_images)

  def evaluate(model):
    return {"train_elbo": evaluation.evaluate_elbo(model, train_x, seed=EVALUATION_SEED)["elbo"],
            "test_elbo": evaluation.evaluate_elbo(model, test_x, seed=EVALUATION_SEED)["elbo"]}

  return evaluate


def likelihood_evaluation(setup: Setup, importance_sampling: bool) -> curves.Evaluate:
  """Appendix D's log p(x) and, for a model with a q(z|x), the IS estimate."""
  budget = setup.budget
  train_x, test_x = _evaluation_images(setup.data("mnist"), budget.likelihood_eval_images)

  def evaluate(model):
    row = {}
    for split, x in (("train", train_x), ("test", test_x)):
      row[f"{split}_hmc_log_likelihood"] = float(evaluation.hmc_marginal_log_likelihood(
          model, x, num_samples_per_chain=budget.hmc_samples_per_chain,
          num_chains=budget.hmc_chains, num_burnin_steps=budget.hmc_burnin_steps,
          seed=EVALUATION_SEED).mean())
    for split, x in (("train", train_x), ("test", test_x)):
      row[f"{split}_is_log_likelihood"] = float(evaluation.importance_sampled_log_likelihood(
          model, x, num_samples=budget.is_samples, seed=EVALUATION_SEED).mean()
      ) if importance_sampling else None
    # MCEM's sampler: its step size, and what its warm-up reached.
    row.update(model.sampler_report() if hasattr(model, "sampler_report")
               else dict.fromkeys(MCEM_SAMPLER_FIELDS))
    return row

  return evaluate


def lower_bound_run(setup: Setup, spec: RunSpec) -> tuple[keras.Model, list[dict]]:
  """A full-training-set run of Figures 2, 4 and 5, with its lower-bound curve."""
  setup.log(f"{spec.name}: training and evaluating the lower bound")
  return train_along_schedule(setup, spec, setup.budget.bound_examples,
                              setup.budget.bound_points,
                              lower_bound_evaluation(setup, spec.dataset))


def figure2_specs(budget: budgets_lib.FigureBudget) -> list[RunSpec]:
  return [RunSpec(dataset, latent_dim, method)
          for dataset, dims in (("mnist", budget.mnist_latent_dims),
                                ("frey_face", budget.frey_face_latent_dims))
          for latent_dim in dims for method in ("aevb", "wake_sleep")]


def figure3_specs(budget: budgets_lib.FigureBudget) -> list[RunSpec]:
  return [RunSpec("mnist", budgets_lib.LIKELIHOOD_LATENT_DIM, method,
                  budgets_lib.LIKELIHOOD_HIDDEN_UNITS, train_examples)
          for train_examples in budget.likelihood_train_sizes
          for method in ("aevb", "wake_sleep", "mcem")]


def figure4_specs(budget: budgets_lib.FigureBudget) -> list[RunSpec]:
  return [RunSpec(dataset, budgets_lib.MANIFOLD_LATENT_DIM) for dataset in ("frey_face", "mnist")]


def figure5_specs(budget: budgets_lib.FigureBudget) -> list[RunSpec]:
  return [RunSpec("mnist", latent_dim) for latent_dim in budget.samples_latent_dims]


def has_final_log_likelihood(spec: RunSpec) -> bool:
  """Figure 2's MNIST AEVB models also get the IS log p(x) published results quote."""
  return spec.dataset == "mnist" and spec.method == "aevb" and not spec.train_examples


def _training_order(spec: RunSpec) -> tuple:
  """Longest first, roughly (measured on `medium`): Figure 3's MCEM runs (an
  HMC transition and 5 weight updates per counted example), Figure 3's other
  runs (HMC evaluations), then MNIST before Frey Face, wake-sleep (two
  phases) before AEVB, larger Nz first."""
  return (spec.method != "mcem", spec.train_examples is None, spec.dataset != "mnist",
          spec.method != "wake_sleep", -spec.latent_dim)


def _train_one(setup: Setup, spec: RunSpec) -> str:
  if spec.train_examples:
    likelihood_run(setup, spec)
  else:
    model, curve = lower_bound_run(setup, spec)
    if has_final_log_likelihood(spec):
      final_log_likelihood(setup, spec, model, curve[-1])
  return spec.name


def train_runs(setup: Setup, figures: list[str]) -> None:
  """Trains and evaluates every run of `figures`, `setup.parallel_runs` at a
  time; the figure functions then only read the finished runs."""
  specs = {spec.name: spec for figure in figures
           for spec in FIGURE_SPECS[figure](setup.budget)}
  ordered = sorted(specs.values(), key=_training_order)
  workers.map_in_processes(functools.partial(_train_one, setup), ordered,
                           setup.parallel_runs)


def final_log_likelihood(setup: Setup, spec: RunSpec, model, last: dict) -> dict:
  """The IS log p(x) on test images, the modern number published results quote."""
  budget = setup.budget
  path = setup.run_dir(spec) / "final_log_likelihood.json"
  if path.exists():
    saved = json.loads(path.read_text())
    if saved["steps"] == last["steps"]:
      return saved
  setup.log(f"{spec.name}: IS log-likelihood, k={budget.final_is_samples}")
  x = pipeline.evaluation_array(setup.data(spec.dataset).test[:budget.final_is_images], "none")
  result = {
      "dataset": spec.dataset, "latent_dim": spec.latent_dim, "method": spec.method,
      "steps": last["steps"], "examples_seen": last["examples_seen"],
      "test_images": len(x), "test_elbo": evaluation.evaluate_elbo(
          model, x, seed=EVALUATION_SEED)["elbo"],
      "num_importance_samples": budget.final_is_samples,
      "test_is_log_likelihood": float(evaluation.importance_sampled_log_likelihood(
          model, x, num_samples=budget.final_is_samples, seed=EVALUATION_SEED).mean()),
  }
  run_folder.write_atomically(path, json.dumps(result, indent=2))
  return result


def likelihood_run(setup: Setup, spec: RunSpec) -> tuple[keras.Model, list[dict]]:
  """A run of Figure 3 on its first `spec.train_examples` images, with its log p(x) curve."""
  setup.log(f"{spec.name}: training and estimating log p(x)")
  # MCEM has no q(z|x) to draw importance samples from.
  evaluate = likelihood_evaluation(setup, importance_sampling=spec.method != "mcem")
  return train_along_schedule(setup, spec, setup.budget.likelihood_examples,
                              setup.budget.likelihood_points, evaluate)


FIGURE_SPECS = {"figure2": figure2_specs, "figure3": figure3_specs,
                "figure4": figure4_specs, "figure5": figure5_specs}
