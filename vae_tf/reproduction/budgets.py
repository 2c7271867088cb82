"""How much of each experiment to run: budgets as plain values.

Pure Python (no TensorFlow), so `pipelines.reproduce` checks figure and
budget names before anything heavy loads. An output folder records the
budget it was run with (`record_budget`), so runs of one definition are never
extended along another's schedule.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vae_tf import config as config_lib
from vae_tf import run_folder

# --- Kingma & Welling (2013), Figures 2 to 5 (`figures.py`) ---------------------

FIGURES = ("figure2", "figure3", "figure4", "figure5")
FIGURE_DATASETS = {"figure2": ("mnist", "frey_face"), "figure3": ("mnist",),
                   "figure4": ("frey_face", "mnist"), "figure5": ("mnist",)}
FIGURE_BUDGET_FILE = "reproduce.json"

MANIFOLD_LATENT_DIM = 2
SAMPLES_LATENT_DIMS = (2, 5, 10, 20)
LIKELIHOOD_LATENT_DIM = 3
LIKELIHOOD_HIDDEN_UNITS = 100


@dataclasses.dataclass(frozen=True)
class FigureBudget:
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
  # Standard deviation of the initial weights. The paper writes N(0, 0.01);
  # 0.01 reads it as a standard deviation (as the authors' later code does),
  # 0.1 as a variance (the paper's own notation, as in its N(0, I) prior).
  # Under the first reading wake-sleep on Frey Face never leaves the
  # symmetric start (docs/reproduction.md, "Wake-sleep at the paper's
  # initialisation").
  init_stddev: float = 0.1


FIGURE_BUDGETS = {
    "tiny": FigureBudget(
        name="tiny", bound_examples=(5_000, 10_000), bound_points=2, bound_eval_images=100,
        mnist_latent_dims=(3,), frey_face_latent_dims=(2,), samples_latent_dims=(2, 20),
        final_is_samples=10, final_is_images=100,
        likelihood_train_sizes=(100, 300), likelihood_examples=(600, 1_800),
        likelihood_points=2, likelihood_eval_images=10, hmc_chains=2,
        hmc_samples_per_chain=10, hmc_burnin_steps=20, is_samples=20, init_stddev=0.01),
    "small": FigureBudget(
        name="small", bound_examples=(10_000, 300_000), bound_points=5, bound_eval_images=1_000,
        mnist_latent_dims=(3, 5, 10, 20, 200), frey_face_latent_dims=(2, 5, 10, 20),
        samples_latent_dims=SAMPLES_LATENT_DIMS, final_is_samples=1_000, final_is_images=300,
        likelihood_train_sizes=(1_000, 50_000), likelihood_examples=(10_000, 400_000),
        likelihood_points=5, likelihood_eval_images=100, hmc_chains=2,
        hmc_samples_per_chain=50, hmc_burnin_steps=100, is_samples=1_000, init_stddev=0.01),
    # Two of the paper's three decades, every panel: 3.5 hours on 2 cores
    # (`--parallel_runs=2`; docs/reproduction.md says where they go).
    "medium": FigureBudget(
        name="medium", bound_examples=(100_000, 10_000_000), bound_points=9,
        bound_eval_images=1_000, mnist_latent_dims=(3, 5, 10, 20, 200),
        frey_face_latent_dims=(2, 5, 10, 20), samples_latent_dims=SAMPLES_LATENT_DIMS,
        final_is_samples=1_000, final_is_images=1_000,
        likelihood_train_sizes=(1_000, 50_000), likelihood_examples=(100_000, 10_000_000),
        likelihood_points=5, likelihood_eval_images=1_000, hmc_chains=2,
        hmc_samples_per_chain=50, hmc_burnin_steps=100, is_samples=1_000),
    "paper": FigureBudget(
        name="paper", bound_examples=(100_000, 100_000_000), bound_points=13,
        bound_eval_images=10_000, mnist_latent_dims=(3, 5, 10, 20, 200),
        frey_face_latent_dims=(2, 5, 10, 20), samples_latent_dims=SAMPLES_LATENT_DIMS,
        final_is_samples=5_000, final_is_images=10_000,
        likelihood_train_sizes=(1_000, 50_000), likelihood_examples=(100_000, 100_000_000),
        likelihood_points=13, likelihood_eval_images=1_000, hmc_chains=4,
        hmc_samples_per_chain=100, hmc_burnin_steps=200, is_samples=5_000),
}

# --- Burda et al. (2015), Table 1 (`iwae_table.py`) -------------------------------

TABLE = "iwae_table"
TABLE_BUDGET_FILE = "iwae_table.json"

# Burda et al. (2015), Table 1, one stochastic layer, MNIST, k=5000 evaluation.
PUBLISHED = {("A", 1): -86.76, ("A", 5): -86.47, ("A", 50): -86.35,
             ("iwae", 1): -86.76, ("iwae", 5): -85.54, ("iwae", 50): -84.78}


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
class TableBudget:
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


TABLE_BUDGETS = {
    "tiny": TableBudget("tiny", train_examples=1_000, hidden_units=(20, 20), latent_dim=5,
                        batch_size=20, models=(ModelSpec("A", 1, 3), ModelSpec("iwae", 5, 3)),
                        curve_points=2, curve_samples=10, curve_images=50, final_samples=50,
                        final_images=100),
    # About 15 minutes on 2 cores.
    "small": TableBudget("small", train_examples=None, hidden_units=(200, 200), latent_dim=50,
                         batch_size=100,
                         models=(ModelSpec("A", 1, 60), ModelSpec("iwae", 5, 20)),
                         curve_points=6, curve_samples=100, curve_images=1_000,
                         final_samples=5_000, final_images=1_000),
    # At most 2 hours of training on 2 cores, the two models side by side:
    # equal time, so the VAE gets about 3 times the IWAE's epochs.
    "medium": TableBudget("medium", train_examples=None, hidden_units=(200, 200),
                          latent_dim=50, batch_size=100,
                          models=(ModelSpec("A", 1, 2_000), ModelSpec("iwae", 5, 650)),
                          curve_points=12, curve_samples=100, curve_images=1_000,
                          final_samples=5_000, final_images=10_000),
    # Burda et al.'s own: minibatches of 20, 3,280 epochs.
    "paper": TableBudget("paper", train_examples=None, hidden_units=(200, 200), latent_dim=50,
                         batch_size=20,
                         models=(ModelSpec("A", 1, config_lib.BURDA_EPOCHS),
                                 ModelSpec("iwae", 5, config_lib.BURDA_EPOCHS),
                                 ModelSpec("iwae", 50, config_lib.BURDA_EPOCHS)),
                         curve_points=12, curve_samples=100, curve_images=1_000,
                         final_samples=5_000, final_images=10_000),
}

# Every budget name the command line accepts, smallest first.
BUDGET_NAMES = tuple(dict.fromkeys([*TABLE_BUDGETS, *FIGURE_BUDGETS]))


class BudgetMismatchError(ValueError):
  """The output folder holds runs of another budget (or budget definition) or seed."""


def record_budget(path: Path, budget: FigureBudget | TableBudget, seed: int,
                  contents: str) -> None:
  """Records a budget and seed at `path`, or refuses a folder that holds
  `contents` of other ones.

  The whole definition is compared, so runs of an older definition are not
  extended along a new schedule.
  """
  run_folder.record_or_refuse(
      path, {"budget": dataclasses.asdict(budget), "seed": seed},
      lambda saved, differences: BudgetMismatchError(
          f"{path.parent} holds {contents} of budget {saved['budget']['name']!r} with seed "
          f"{saved['seed']}, not of this definition of budget {budget.name!r} with seed "
          f"{seed}; use another --output_dir"),
      sort_keys=False)
