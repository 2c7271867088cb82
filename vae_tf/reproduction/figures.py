"""Kingma & Welling (2013), Figures 2 to 5, drawn from finished runs (`figure_runs`).

  Figure 2: the lower bound against training examples seen, AEVB against
            wake-sleep, one panel per data set and Nz;
  Figure 3: log p(x) (Appendix D) against training examples seen, AEVB,
            wake-sleep and MCEM, one panel per N_train;
  Figure 4: decoder means over a 2-D latent grid (Appendix A);
  Figure 5: decoder means at random z ~ p(z).
Each figure function reads (or, for a run not trained yet, trains) its runs
and writes CSV files and PNGs under `<output_dir>/<figure>/`.

How much of this to run is a `budgets.FigureBudget`: `tiny` (seconds, for
tests), `small` (every figure in about a quarter of an hour on 2 cores),
`medium` (10^5 to 10^7 examples per curve) or `paper` (the paper's 10^8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import keras
import numpy as np

from vae_tf import config as config_lib
from vae_tf import curve_charts, image_grids, run_folder
from vae_tf.reproduction import figure_runs as runs_lib
from vae_tf.reproduction.figure_runs import EVALUATION_SEED, RunSpec, Setup
from vae_tf.reproduction.figures_report import DATASET_NAMES, METHOD_NAMES

METHOD_COLORS = {"aevb": "tab:red", "wake_sleep": "tab:blue", "mcem": "tab:green"}
SPLIT_LINESTYLES = {"train": "-", "test": "--"}


def _curve_lines(label: str, color: str, curve: list[dict], column: str) -> list[curve_charts.Line]:
  """The train and test curves of `column` ("{split}_..."), against examples seen."""
  return [curve_charts.Line(f"{label} ({split})", [row["examples_seen"] for row in curve],
                            [row[column.format(split=split)] for row in curve], color,
                            SPLIT_LINESTYLES[split])
          for split in ("train", "test")]


def figure2(setup: Setup) -> list[Path]:
  specs = runs_lib.figure2_specs(setup.budget)
  rows, final_rows, panels = [], [], {"mnist": {}, "frey_face": {}}
  for spec in specs:
    model, curve = runs_lib.lower_bound_run(setup, spec)
    rows += [{"dataset": spec.dataset, "latent_dim": spec.latent_dim, "method": spec.method,
              **row} for row in curve]
    panels[spec.dataset].setdefault(
        f"{DATASET_NAMES[spec.dataset]}, Nz={spec.latent_dim}", []).extend(
            _curve_lines(METHOD_NAMES[spec.method], METHOD_COLORS[spec.method], curve,
                         "{split}_elbo"))
    if runs_lib.has_final_log_likelihood(spec):
      final_rows.append(runs_lib.final_log_likelihood(setup, spec, model, curve[-1]))
  directory = Path(setup.output_dir) / "figure2"
  written = [run_folder.write_csv_atomically(directory / "figure2.csv", rows),
             run_folder.write_csv_atomically(directory / "figure2_final_log_likelihood.csv",
                                             final_rows)]
  for dataset, dataset_panels in panels.items():
    if not dataset_panels:
      continue  # a budget without this data set
    written.append(curve_charts.save_line_panels(
        dataset_panels, directory / f"figure2_{dataset}.png",
        xlabel="training examples seen", ylabel="lower bound (nats per image)"))
  return written


def figure3(setup: Setup) -> list[Path]:
  rows, panels = [], {}
  for spec in runs_lib.figure3_specs(setup.budget):
    lines = panels.setdefault(
        f"MNIST Nz={spec.latent_dim}, N_train={spec.train_examples}", [])
    _, curve = runs_lib.likelihood_run(setup, spec)
    rows += [{"train_examples": spec.train_examples, "method": spec.method, **row}
             for row in curve]
    lines.extend(_curve_lines(METHOD_NAMES[spec.method], METHOD_COLORS[spec.method], curve,
                              "{split}_hmc_log_likelihood"))
  directory = Path(setup.output_dir) / "figure3"
  return [run_folder.write_csv_atomically(directory / "figure3.csv", rows),
          curve_charts.save_line_panels(panels, directory / "figure3.png", ncols=2,
                                        xlabel="training examples seen",
                                        ylabel="log p(x), Appendix D estimate")]


def _image_figure(setup: Setup, name: str, specs: list[RunSpec],
                  draw: Callable[[keras.Model, RunSpec], tuple[np.ndarray, int]]) -> list[Path]:
  directory = Path(setup.output_dir) / name
  rows, written = [], []
  for spec in specs:
    model, curve = runs_lib.lower_bound_run(setup, spec)
    images, ncols = draw(model, spec)
    image_path = image_grids.save_image_grid(
        images, directory / f"{name}_{spec.dataset}_nz{spec.latent_dim}.png", ncols=ncols,
        scale=2)
    rows.append({"dataset": spec.dataset, "latent_dim": spec.latent_dim, "method": spec.method,
                 "steps": curve[-1]["steps"], "examples_seen": curve[-1]["examples_seen"],
                 "test_elbo": curve[-1]["test_elbo"], "image": image_path.name})
    written.append(image_path)
  return [run_folder.write_csv_atomically(directory / f"{name}.csv", rows), *written]


def figure4(setup: Setup) -> list[Path]:
  def manifold(model, spec):
    shape = config_lib.INPUT_SHAPES[spec.dataset]
    return image_grids.latent_manifold(model, shape, grid_size=20), 20

  return _image_figure(setup, "figure4", runs_lib.figure4_specs(setup.budget), manifold)


def figure5(setup: Setup) -> list[Path]:
  def samples(model, spec):
    shape = config_lib.INPUT_SHAPES[spec.dataset]
    return image_grids.prior_samples(model, shape, [EVALUATION_SEED, 1]), 10

  return _image_figure(setup, "figure5", runs_lib.figure5_specs(setup.budget), samples)


FIGURE_FUNCTIONS = {"figure2": figure2, "figure3": figure3, "figure4": figure4,
                    "figure5": figure5}
