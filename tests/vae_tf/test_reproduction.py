"""Schedules, run settings and budgets of `vae_tf.reproduction` (the figures run in
tests/pipelines)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vae_tf import run_folder
from vae_tf.reproduction import budgets, curves, figure_runs, figures


def test_evaluation_steps_are_whole_blocks_log_spaced_in_examples():
  steps = curves.evaluation_steps((10_000, 1_000_000), 5, batch_size=100,
                                  updates_per_call=50)
  assert steps == [100, 350, 1000, 3200, 10_000]
  assert all(step % 50 == 0 for step in steps)
  examples = np.array(steps) * 100
  # Each point is the first whole block at or past its target.
  targets = np.geomspace(10_000, 1_000_000, 5)
  assert np.all(examples >= targets - 1e-6) and np.all(examples < targets + 5000)


def test_points_closer_than_a_block_merge():
  # MCEM on 50,000 examples: one step is a round over all of them.
  assert curves.evaluation_steps((10_000, 200_000), 4, batch_size=50_000,
                                 updates_per_call=1) == [1, 2, 4]


@pytest.mark.parametrize("budget, init_stddev", [
    ("small", 0.01), ("medium", 0.1), ("paper", 0.1)])
def test_budgets_read_the_papers_initialisation_as_documented(budget, init_stddev):
  """N(0, 0.01): a standard deviation in `small` (its documented runs), a
  variance from `medium` on (docs/reproduction.md)."""
  assert budgets.FIGURE_BUDGETS[budget].init_stddev == init_stddev


@pytest.mark.parametrize("method, batch_size, updates_per_call", [
    ("aevb", 100, 10), ("wake_sleep", 100, 10), ("mcem", 1000, 1)])
def test_figure3_runs_use_the_paper_settings(method, batch_size, updates_per_call):
  spec = figure_runs.RunSpec("mnist", 3, method, hidden_units=100, train_examples=1000)
  assert spec.name == f"mnist_nz3_h100_n1000_{method}"
  model, train = figure_runs.run_configs(spec, 1000, seed=0, init_stddev=0.1)
  assert model.latent_dim == 3 and model.hidden_units == (100,)
  assert model.activation == "tanh" and model.init_stddev == 0.1
  assert model.weight_decay == pytest.approx(1 / 1000)
  assert train.optimizer == "adagrad" and train.learning_rate == 0.02
  assert train.method == method and train.train_examples == 1000
  # MCEM samples every example's chain in each round; the others take M = 100.
  assert (train.batch_size, train.updates_per_call) == (batch_size, updates_per_call)


def test_rows_round_trip_through_csv(tmp_path):
  rows = [{"dataset": "mnist", "steps": 100, "test_elbo": -123.456789012, "is": None},
          {"dataset": "frey_face", "steps": 105, "test_elbo": 530.0, "is": -1.5}]
  path = run_folder.write_csv_atomically(tmp_path / "rows.csv", rows)
  assert run_folder.read_csv_rows(path) == rows


def test_the_medium_table_budget_is_recorded_as_its_running_output_folder_holds_it():
  """runs/reproduce_medium resumes only while the definition stays byte for byte."""
  recorded = {
      "name": "medium", "train_examples": None, "hidden_units": [200, 200], "latent_dim": 50,
      "batch_size": 100,
      "models": [{"estimator": "A", "num_samples": 1, "epochs": 2000},
                 {"estimator": "iwae", "num_samples": 5, "epochs": 650}],
      "curve_points": 12, "curve_samples": 100, "curve_images": 1000, "final_samples": 5000,
      "final_images": 10000}
  assert json.loads(json.dumps(dataclasses.asdict(budgets.TABLE_BUDGETS["medium"]))) == recorded
  assert list(recorded) == [field.name for field in dataclasses.fields(budgets.TableBudget)]


def test_a_folder_of_another_budget_is_refused_and_left_as_it_is(tmp_path):
  path = tmp_path / budgets.FIGURE_BUDGET_FILE
  budgets.record_budget(path, budgets.FIGURE_BUDGETS["tiny"], 0, "runs")
  saved = path.read_text()
  budgets.record_budget(path, budgets.FIGURE_BUDGETS["tiny"], 0, "runs")  # the same: accepted
  with pytest.raises(budgets.BudgetMismatchError,
                     match=f"^{tmp_path} holds runs of budget 'tiny' with seed 0, not of this "
                           "definition of budget 'small' with seed 1; use another --output_dir$"):
    budgets.record_budget(path, budgets.FIGURE_BUDGETS["small"], 1, "runs")
  assert path.read_text() == saved
  assert [p.name for p in tmp_path.iterdir()] == [budgets.FIGURE_BUDGET_FILE]


def test_every_figure_and_budget_name_has_its_definition():
  assert tuple(figures.FIGURE_FUNCTIONS) == budgets.FIGURES == tuple(budgets.FIGURE_DATASETS)
  assert set(budgets.BUDGET_NAMES) == {*budgets.FIGURE_BUDGETS, *budgets.TABLE_BUDGETS}
  for table in (budgets.FIGURE_BUDGETS, budgets.TABLE_BUDGETS):
    assert all(budget.name == name for name, budget in table.items())
