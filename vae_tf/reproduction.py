"""The experiments of Kingma & Welling (2013) as resumable runs: Figures 2 to 5.

Every figure is drawn from training runs, each a `vae_tf.training` run folder
under `<output_dir>/runs/`, with the paper's settings (`config.preset("paper")`):
  Figure 2: the lower bound on train and test images against training
            examples seen, MNIST Nz in {3, 5, 10, 20, 200} and Frey Face Nz in
            {2, 5, 10, 20}, AEVB against wake-sleep;
  Figure 3: log p(x) by the Appendix D estimator against training examples
            seen, MNIST with Nz = 3 and 100 hidden units on the first 1,000
            and 50,000 training images, AEVB, wake-sleep and Monte Carlo EM
            (a batch algorithm: each sampling round covers the whole training
            set, as in Appendix E); AEVB and wake-sleep also get the IS estimate;
  Figure 4: decoder means over a 2-D latent grid (Appendix A), MNIST and
            Frey Face, Nz = 2;
  Figure 5: decoder means at random z ~ p(z), MNIST, Nz in {2, 5, 10, 20}.
A run trains once, along its evaluation schedule (points log-spaced in
training examples seen), and appends one row per point to `<run>/curve.csv`
as it passes it. Figures 2, 4 and 5 share their full-training-set runs, so
each run holds its Figure 2 curve whichever figure trained it. Rerunning
resumes: `training.train` continues from the latest checkpoint and points
already in curve.csv are not evaluated again.

A `Budget` says how much of this to run: `tiny` (seconds, for tests), `small`
(every figure in about a quarter of an hour on 2 cores) or `paper` (the
paper's 10^8 training examples per curve).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from vae_tf import charts, evaluation, plotting, training
from vae_tf import config as config_lib
from vae_tf.data import pipeline, sources

FIGURES = ("figure2", "figure3", "figure4", "figure5")
DATASETS = {"figure2": ("mnist", "frey_face"), "figure3": ("mnist",),
            "figure4": ("frey_face", "mnist"), "figure5": ("mnist",)}
RUNS_DIR = "runs"
CURVE_FILE = "curve.csv"
BUDGET_FILE = "reproduce.json"
REPORT_FILE = "report.md"
# Evaluation draws are fixed: a curve point depends on the weights alone.
EVALUATION_SEED = 0

MANIFOLD_LATENT_DIM = 2
SAMPLES_LATENT_DIMS = (2, 5, 10, 20)
LIKELIHOOD_LATENT_DIM = 3
LIKELIHOOD_HIDDEN_UNITS = 100

DATASET_NAMES = {"mnist": "MNIST", "frey_face": "Frey Face"}
METHOD_NAMES = {"aevb": "AEVB", "wake_sleep": "Wake-sleep", "mcem": "MCEM"}
METHOD_COLORS = {"aevb": "tab:red", "wake_sleep": "tab:blue", "mcem": "tab:green"}
SPLIT_LINESTYLES = {"train": "-", "test": "--"}


@dataclasses.dataclass(frozen=True)
class Budget:
  """How much of the paper's experiments to run."""

  name: str
  # Figures 2, 4 and 5: evaluation points log-spaced from the first to the last
  # count of training examples seen, each averaging the lower bound over this
  # many training and test images.
  bound_examples: tuple[int, int]
  bound_points: int
  bound_eval_images: int
  mnist_latent_dims: tuple[int, ...]
  frey_face_latent_dims: tuple[int, ...]
  samples_latent_dims: tuple[int, ...]
  # The final IS log p(x) of Figure 2's MNIST AEVB models: k, test images.
  final_is_samples: int
  final_is_images: int
  # Figure 3.
  likelihood_train_sizes: tuple[int, ...]
  likelihood_examples: tuple[int, int]
  likelihood_points: int
  likelihood_eval_images: int
  hmc_chains: int
  hmc_samples_per_chain: int
  hmc_burnin_steps: int
  is_samples: int


BUDGETS = {
    "tiny": Budget(
        name="tiny", bound_examples=(5_000, 10_000), bound_points=2, bound_eval_images=100,
        mnist_latent_dims=(3,), frey_face_latent_dims=(2,), samples_latent_dims=(2, 20),
        final_is_samples=10, final_is_images=100,
        likelihood_train_sizes=(100, 300), likelihood_examples=(600, 1_800),
        likelihood_points=2, likelihood_eval_images=10, hmc_chains=2,
        hmc_samples_per_chain=10, hmc_burnin_steps=20, is_samples=20),
    "small": Budget(
        name="small", bound_examples=(10_000, 300_000), bound_points=5, bound_eval_images=1_000,
        mnist_latent_dims=(3, 5, 10, 20, 200), frey_face_latent_dims=(2, 5, 10, 20),
        samples_latent_dims=SAMPLES_LATENT_DIMS, final_is_samples=1_000, final_is_images=300,
        likelihood_train_sizes=(1_000, 50_000), likelihood_examples=(10_000, 400_000),
        likelihood_points=5, likelihood_eval_images=100, hmc_chains=2,
        hmc_samples_per_chain=50, hmc_burnin_steps=100, is_samples=1_000),
    "paper": Budget(
        name="paper", bound_examples=(100_000, 100_000_000), bound_points=13,
        bound_eval_images=10_000, mnist_latent_dims=(3, 5, 10, 20, 200),
        frey_face_latent_dims=(2, 5, 10, 20), samples_latent_dims=SAMPLES_LATENT_DIMS,
        final_is_samples=5_000, final_is_images=10_000,
        likelihood_train_sizes=(1_000, 50_000), likelihood_examples=(100_000, 100_000_000),
        likelihood_points=13, likelihood_eval_images=1_000, hmc_chains=4,
        hmc_samples_per_chain=100, hmc_burnin_steps=200, is_samples=5_000),
}


class BudgetMismatchError(ValueError):
  """The output folder holds runs of another budget (or budget definition) or seed."""


def record_budget(path: Path, budget, seed: int, contents: str) -> None:
  """Records a budget (a dataclass with a `name`) and seed at `path`, or
  refuses a folder that holds `contents` of other ones.

  The whole definition is compared, so runs of an older definition are not
  extended along a new schedule.
  """
  requested = json.loads(json.dumps({"budget": dataclasses.asdict(budget), "seed": seed}))
  if path.exists():
    saved = json.loads(path.read_text())
    if saved != requested:
      raise BudgetMismatchError(
          f"{path.parent} holds {contents} of budget {saved['budget']['name']!r} with seed "
          f"{saved['seed']}, not of this definition of budget {budget.name!r} with seed "
          f"{seed}; use another --output_dir")
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  training.write_atomically(path, json.dumps(requested, indent=2))


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


@dataclasses.dataclass(frozen=True)
class Data:
  """uint8 images of one data set: training (validation held out) and test."""

  train: np.ndarray
  test: np.ndarray


def load_data(dataset: str, data_dir: str | None = None, manual_dir: str | None = None) -> Data:
  train, _ = pipeline.split_validation(sources.load_images(dataset, "train", data_dir, manual_dir),
                                       sources.NUM_VALIDATION[dataset])
  return Data(train, sources.load_images(dataset, "test", data_dir, manual_dir))


def run_configs(spec: RunSpec, num_train: int,
                seed: int) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
  model, train = config_lib.preset("paper", spec.dataset, num_train)
  model = dataclasses.replace(model, latent_dim=spec.latent_dim)
  if spec.hidden_units:
    model = dataclasses.replace(model, hidden_units=(spec.hidden_units,))
  # MCEM is a batch algorithm: a sampling round visits every training example.
  batch_size = num_train if spec.method == "mcem" else train.batch_size
  train = dataclasses.replace(train, method=spec.method, train_examples=num_train,
                              batch_size=batch_size, seed=seed)
  return model, training.fit_updates_per_call(train, num_train)


def evaluation_steps(examples: tuple[int, int], num_points: int, batch_size: int,
                     updates_per_call: int) -> list[int]:
  """SGD steps, whole blocks, nearest above `num_points` log-spaced example counts."""
  block = batch_size * updates_per_call
  counts = np.geomspace(examples[0], examples[1], num_points)
  return sorted({max(1, math.ceil(count / block - 1e-9)) * updates_per_call for count in counts})


def read_rows(path: Path) -> list[dict]:
  if not path.exists():
    return []
  with open(path, newline="") as f:
    return [{key: _parse(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _parse(value: str) -> int | float | str | None:
  """A CSV cell as written by `training.write_csv_atomically`: empty for None, else int, float or text."""
  if value == "":
    return None
  for kind in (int, float):
    try:
      return kind(value)
    except ValueError:
      pass
  return value


Evaluate = Callable[[keras.Model], dict]


class CurveRecorder(keras.callbacks.Callback):
  """Evaluates the model when training reaches one of its pending steps.

  Rows go to curve.csv at once, so a run stopped at any moment loses at most
  the point it was evaluating (which is redone, from the same weights, on
  resumption: a checkpoint is never beyond the first pending point, because
  every point is evaluated before training goes on).
  """

  def __init__(self, path: Path, steps: list[int], examples_per_step: int, evaluate: Evaluate):
    super().__init__()
    self.path = path
    self.rows = read_rows(path)
    done = {row["steps"] for row in self.rows}
    self.pending = [step for step in steps if step not in done]
    self.examples_per_step = examples_per_step
    self.evaluate = evaluate

  def record_if_due(self, model: keras.Model) -> None:
    steps = int(model.optimizer.iterations.numpy())
    if steps in self.pending:
      started = time.time()
      row = {"steps": steps, "examples_seen": steps * self.examples_per_step,
             **self.evaluate(model)}
      row["evaluation_seconds"] = round(time.time() - started, 2)
      self.rows.append(row)
      self.pending.remove(steps)
      training.write_csv_atomically(self.path, self.rows)

  def on_train_begin(self, logs=None):
    self.record_if_due(self.model)

  def on_train_batch_end(self, batch, logs=None):
    self.record_if_due(self.model)


def train_along_schedule(spec: RunSpec, data: Data, run_dir: Path, examples: tuple[int, int],
                         num_points: int, evaluate: Evaluate,
                         seed: int) -> tuple[keras.Model, list[dict]]:
  """Trains `spec` to the last point of its schedule, evaluating at every point.

  Returns the trained model and the run's curve rows, in order of steps.
  """
  train_images = data.train[:spec.train_examples]
  model_config, train_config = run_configs(spec, len(train_images), seed)
  steps = evaluation_steps(examples, num_points, train_config.batch_size,
                           train_config.updates_per_call)
  recorder = CurveRecorder(run_dir / CURVE_FILE, steps, train_config.batch_size, evaluate)
  # No validation during training: the curve's evaluations replace it.
  result = training.train(model_config, train_config, train_images=train_images,
                          validation_images=None, model_dir=run_dir, total_steps=steps[-1],
                          verbose=0, callbacks=[recorder])
  recorder.record_if_due(result.model)  # a point reached before an interruption
  return result.model, sorted(recorder.rows, key=lambda row: row["steps"])


def _evaluation_images(data: Data, num_images: int, binarization: str) -> tuple[np.ndarray, ...]:
  return tuple(pipeline.evaluation_array(images[:num_images], binarization)
               for images in (data.train, data.test))


def lower_bound_evaluation(data: Data, budget: Budget) -> Evaluate:
  # The paper's models see grey levels (binarization "none").
  train_x, test_x = _evaluation_images(data, budget.bound_eval_images, "none")

  def evaluate(model):
    return {"train_elbo": evaluation.evaluate_elbo(model, train_x, seed=EVALUATION_SEED)["elbo"],
            "test_elbo": evaluation.evaluate_elbo(model, test_x, seed=EVALUATION_SEED)["elbo"]}

  return evaluate


def likelihood_evaluation(data: Data, budget: Budget, importance_sampling: bool) -> Evaluate:
  """Appendix D's log p(x) and, for a model with a q(z|x), the IS estimate."""
  train_x, test_x = _evaluation_images(data, budget.likelihood_eval_images, "none")

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
    return row

  return evaluate


class Reproduction:
  """Figures of one budget in one output folder; data sets load on first use."""

  def __init__(self, budget: Budget, output_dir: str | os.PathLike, seed: int = 0,
               data_dir: str | None = None, manual_dir: str | None = None,
               log: Callable[[str], None] = lambda message: None):
    self.budget = budget
    self.output_dir = Path(output_dir)
    self.seed = seed
    self.data_dir = data_dir
    self.manual_dir = manual_dir
    self.log = log
    self._data: dict[str, Data] = {}

  def prepare(self, figures: list[str]) -> None:
    """Loads the figures' data sets, then records the budget and seed in the
    output folder, or refuses a folder that holds other ones.

    Raises:
      sources.DataUnavailableError: a data set cannot be prepared (nothing is written).
      BudgetMismatchError: the output folder holds runs of another budget or seed.
    """
    for figure in figures:
      for dataset in DATASETS[figure]:
        self.data(dataset)
    record_budget(self.output_dir / BUDGET_FILE, self.budget, self.seed, "runs")

  def data(self, dataset: str) -> Data:
    if dataset not in self._data:
      self._data[dataset] = load_data(dataset, self.data_dir, self.manual_dir)
    return self._data[dataset]

  def run_dir(self, spec: RunSpec) -> Path:
    return self.output_dir / RUNS_DIR / spec.name

  def lower_bound_run(self, spec: RunSpec) -> tuple[keras.Model, list[dict]]:
    """A full-training-set run of Figures 2, 4 and 5, with its lower-bound curve."""
    self.log(f"{spec.name}: training and evaluating the lower bound")
    data = self.data(spec.dataset)
    return train_along_schedule(spec, data, self.run_dir(spec), self.budget.bound_examples,
                                self.budget.bound_points, lower_bound_evaluation(data, self.budget),
                                self.seed)

  def figure2(self) -> list[Path]:
    budget = self.budget
    specs = [RunSpec(dataset, latent_dim, method)
             for dataset, dims in (("mnist", budget.mnist_latent_dims),
                                   ("frey_face", budget.frey_face_latent_dims))
             for latent_dim in dims for method in ("aevb", "wake_sleep")]
    rows, final_rows, panels = [], [], {"mnist": {}, "frey_face": {}}
    for spec in specs:
      model, curve = self.lower_bound_run(spec)
      rows += [{"dataset": spec.dataset, "latent_dim": spec.latent_dim, "method": spec.method,
                **row} for row in curve]
      lines = panels[spec.dataset].setdefault(
          f"{DATASET_NAMES[spec.dataset]}, Nz={spec.latent_dim}", [])
      for split in ("train", "test"):
        lines.append(charts.Line(f"{METHOD_NAMES[spec.method]} ({split})",
                                 [row["examples_seen"] for row in curve],
                                 [row[f"{split}_elbo"] for row in curve],
                                 METHOD_COLORS[spec.method], SPLIT_LINESTYLES[split]))
      if spec.dataset == "mnist" and spec.method == "aevb":
        final_rows.append(self._final_log_likelihood(spec, model, curve[-1]))
    directory = self.output_dir / "figure2"
    written = [training.write_csv_atomically(directory / "figure2.csv", rows),
               training.write_csv_atomically(directory / "figure2_final_log_likelihood.csv", final_rows)]
    for dataset, dataset_panels in panels.items():
      if not dataset_panels:
        continue  # a budget without this data set
      written.append(charts.save_line_panels(
          dataset_panels, directory / f"figure2_{dataset}.png",
          xlabel="training examples seen", ylabel="lower bound (nats per image)"))
    return written

  def _final_log_likelihood(self, spec: RunSpec, model, last: dict) -> dict:
    """The IS log p(x) on test images, the modern number published results quote."""
    path = self.run_dir(spec) / "final_log_likelihood.json"
    if path.exists():
      saved = json.loads(path.read_text())
      if saved["steps"] == last["steps"]:
        return saved
    self.log(f"{spec.name}: IS log-likelihood, k={self.budget.final_is_samples}")
    x = pipeline.evaluation_array(self.data(spec.dataset).test[:self.budget.final_is_images],
                                  "none")
    result = {
        "dataset": spec.dataset, "latent_dim": spec.latent_dim, "method": spec.method,
        "steps": last["steps"], "examples_seen": last["examples_seen"],
        "test_images": len(x), "test_elbo": evaluation.evaluate_elbo(
            model, x, seed=EVALUATION_SEED)["elbo"],
        "num_importance_samples": self.budget.final_is_samples,
        "test_is_log_likelihood": float(evaluation.importance_sampled_log_likelihood(
            model, x, num_samples=self.budget.final_is_samples, seed=EVALUATION_SEED).mean()),
    }
    training.write_atomically(path, json.dumps(result, indent=2))
    return result

  def figure3(self) -> list[Path]:
    budget = self.budget
    data = self.data("mnist")
    rows, panels = [], {}
    for train_examples in budget.likelihood_train_sizes:
      lines = panels.setdefault(f"MNIST Nz={LIKELIHOOD_LATENT_DIM}, N_train={train_examples}", [])
      for method in ("aevb", "wake_sleep", "mcem"):
        spec = RunSpec("mnist", LIKELIHOOD_LATENT_DIM, method, LIKELIHOOD_HIDDEN_UNITS,
                       train_examples)
        self.log(f"{spec.name}: training and estimating log p(x)")
        # MCEM has no q(z|x) to draw importance samples from.
        evaluate = likelihood_evaluation(data, budget, importance_sampling=method != "mcem")
        _, curve = train_along_schedule(spec, data, self.run_dir(spec),
                                        budget.likelihood_examples, budget.likelihood_points,
                                        evaluate, self.seed)
        rows += [{"train_examples": train_examples, "method": method, **row} for row in curve]
        for split in ("train", "test"):
          lines.append(charts.Line(f"{METHOD_NAMES[method]} ({split})",
                                   [row["examples_seen"] for row in curve],
                                   [row[f"{split}_hmc_log_likelihood"] for row in curve],
                                   METHOD_COLORS[method], SPLIT_LINESTYLES[split]))
    directory = self.output_dir / "figure3"
    return [training.write_csv_atomically(directory / "figure3.csv", rows),
            charts.save_line_panels(panels, directory / "figure3.png", ncols=2,
                                    xlabel="training examples seen",
                                    ylabel="log p(x), Appendix D estimate")]

  def _image_figure(self, name: str, specs: list[RunSpec],
                    draw: Callable[[keras.Model, RunSpec], tuple[np.ndarray, int]]) -> list[Path]:
    directory = self.output_dir / name
    rows, written = [], []
    for spec in specs:
      model, curve = self.lower_bound_run(spec)
      images, ncols = draw(model, spec)
      image_path = plotting.save_image_grid(
          images, directory / f"{name}_{spec.dataset}_nz{spec.latent_dim}.png", ncols=ncols,
          scale=2)
      rows.append({"dataset": spec.dataset, "latent_dim": spec.latent_dim, "method": spec.method,
                   "steps": curve[-1]["steps"], "examples_seen": curve[-1]["examples_seen"],
                   "test_elbo": curve[-1]["test_elbo"], "image": image_path.name})
      written.append(image_path)
    return [training.write_csv_atomically(directory / f"{name}.csv", rows), *written]

  def figure4(self) -> list[Path]:
    def manifold(model, spec):
      shape = config_lib.INPUT_SHAPES[spec.dataset]
      return plotting.latent_manifold(model, shape, grid_size=20), 20

    return self._image_figure("figure4", [RunSpec(dataset, MANIFOLD_LATENT_DIM)
                                          for dataset in ("frey_face", "mnist")], manifold)

  def figure5(self) -> list[Path]:
    def samples(model, spec):
      shape = config_lib.INPUT_SHAPES[spec.dataset]
      return plotting.prior_samples(model, shape, [EVALUATION_SEED, 1]), 10

    return self._image_figure("figure5", [RunSpec("mnist", latent_dim)
                                          for latent_dim in self.budget.samples_latent_dims],
                              samples)

  def write_report(self, seconds: dict[str, float]) -> Path:
    """report.md: every figure present in the output folder, with its numbers."""
    sections = [f"# Reproduction of Kingma & Welling (2013), budget `{self.budget.name}`\n",
                f"Seed {self.seed}. Written by `python -m pipelines.reproduce`; every number "
                "below comes from the CSV files beside the figures.\n"]
    for figure in FIGURES:
      if (self.output_dir / figure).is_dir():
        sections.append(getattr(self, f"_{figure}_section")(seconds.get(figure)))
    path = self.output_dir / REPORT_FILE
    training.write_atomically(path, "\n".join(sections))
    return path

  @staticmethod
  def _timing(seconds: float | None) -> str:
    return "" if seconds is None else f" This invocation spent {seconds:.0f} s on it."

  def _figure2_section(self, seconds) -> str:
    rows = read_rows(self.output_dir / "figure2" / "figure2.csv")
    last = {}
    for row in rows:
      last[(row["dataset"], row["latent_dim"], row["method"])] = row
    table = ["| data set | Nz | method | examples seen | train bound | test bound |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    table += [f"| {DATASET_NAMES[d]} | {nz} | {METHOD_NAMES[m]} | {r['examples_seen']:,} | "
              f"{r['train_elbo']:.2f} | {r['test_elbo']:.2f} |"
              for (d, nz, m), r in last.items()]
    final = read_rows(self.output_dir / "figure2" / "figure2_final_log_likelihood.csv")
    final_table = ["| Nz | examples seen | test images | test bound | IS log p(x) | k |",
                   "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    final_table += [f"| {r['latent_dim']} | {r['examples_seen']:,} | {r['test_images']} | "
                    f"{r['test_elbo']:.2f} | {r['test_is_log_likelihood']:.2f} | "
                    f"{r['num_importance_samples']} |" for r in final]
    return "\n".join([
        "## Figure 2: lower bound against training examples seen\n",
        f"AEVB against wake-sleep, paper settings (grey-level MNIST, Frey Face), lower bound "
        f"averaged over the first {self.budget.bound_eval_images} training and test images."
        f"{self._timing(seconds)} The paper (to 10^8 examples): AEVB converges considerably "
        "faster than wake-sleep and reaches a better bound for every Nz, and superfluous "
        "latent variables do not overfit.\n",
        *[f"![Figure 2, {DATASET_NAMES[dataset]}](figure2/figure2_{dataset}.png)\n"
          for dataset in ("mnist", "frey_face")
          if (self.output_dir / "figure2" / f"figure2_{dataset}.png").exists()],
        "Last point of each curve (`figure2/figure2.csv`):\n", *table, "",
        "Final MNIST AEVB models, importance-sampled log p(x) on test images "
        "(`figure2/figure2_final_log_likelihood.csv`):\n", *final_table, ""])

  def _figure3_section(self, seconds) -> str:
    rows = read_rows(self.output_dir / "figure3" / "figure3.csv")
    last = {}
    for row in rows:
      last[(row["train_examples"], row["method"])] = row
    table = ["| N_train | method | examples seen | train log p(x) | test log p(x) | "
             "test IS log p(x) |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for (n, m), r in last.items():
      test_is = "n/a" if r["test_is_log_likelihood"] is None else \
          f"{r['test_is_log_likelihood']:.2f}"
      table.append(f"| {n:,} | {METHOD_NAMES[m]} | {r['examples_seen']:,} | "
                   f"{r['train_hmc_log_likelihood']:.2f} | {r['test_hmc_log_likelihood']:.2f} | "
                   f"{test_is} |")
    budget = self.budget
    return "\n".join([
        "## Figure 3: marginal likelihood against training examples seen\n",
        f"MNIST, Nz={LIKELIHOOD_LATENT_DIM}, {LIKELIHOOD_HIDDEN_UNITS} hidden units. log p(x) by "
        f"the Appendix D estimator ({budget.hmc_chains} HMC chains x "
        f"{2 * budget.hmc_samples_per_chain} draws after {budget.hmc_burnin_steps} burn-in "
        f"transitions per image) on the first {budget.likelihood_eval_images} training and test "
        f"images; IS with k={budget.is_samples} beside it for the methods with a q(z|x). An MCEM "
        "round covers the whole training set and counts as that many examples seen."
        f"{self._timing(seconds)} The paper: MCEM is not an on-line algorithm and, unlike "
        "AEVB and wake-sleep, cannot be applied efficiently to the full MNIST training set.\n",
        "![Figure 3](figure3/figure3.png)\n",
        "Last point of each curve (`figure3/figure3.csv`):\n", *table, ""])

  def _image_section(self, figure: str, title: str, seconds) -> str:
    rows = read_rows(self.output_dir / figure / f"{figure}.csv")
    lines = [f"## {title}\n", f"Paper settings; AEVB.{self._timing(seconds)}\n"]
    for row in rows:
      lines.append(f"{DATASET_NAMES[row['dataset']]}, Nz={row['latent_dim']}, "
                   f"{row['examples_seen']:,} "
                   f"examples seen, test bound {row['test_elbo']:.2f}:\n")
      lines.append(f"![{row['dataset']} Nz={row['latent_dim']}]({figure}/{row['image']})\n")
    return "\n".join(lines)

  def _figure4_section(self, seconds) -> str:
    return self._image_section(
        "figure4", "Figure 4: learned 2-D manifolds (decoder means over the latent grid of "
        "Appendix A, through the inverse Gaussian CDF)", seconds)

  def _figure5_section(self, seconds) -> str:
    return self._image_section(
        "figure5", "Figure 5: random samples (decoder means at z ~ p(z))", seconds)
