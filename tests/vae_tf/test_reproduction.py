"""Schedules and run settings of `vae_tf.reproduction` (the figures run in tests/pipelines)."""

from __future__ import annotations

import numpy as np
import pytest

from vae_tf import reproduction, training


def test_evaluation_steps_are_whole_blocks_log_spaced_in_examples():
  steps = reproduction.evaluation_steps((10_000, 1_000_000), 5, batch_size=100,
                                        updates_per_call=50)
  assert steps == [100, 350, 1000, 3200, 10_000]
  assert all(step % 50 == 0 for step in steps)
  examples = np.array(steps) * 100
  # Each point is the first whole block at or past its target.
  targets = np.geomspace(10_000, 1_000_000, 5)
  assert np.all(examples >= targets - 1e-6) and np.all(examples < targets + 5000)


def test_points_closer_than_a_block_merge():
  # MCEM on 50,000 examples: one step is a round over all of them.
  assert reproduction.evaluation_steps((10_000, 200_000), 4, batch_size=50_000,
                                       updates_per_call=1) == [1, 2, 4]


@pytest.mark.parametrize("method, batch_size, updates_per_call", [
    ("aevb", 100, 10), ("wake_sleep", 100, 10), ("mcem", 1000, 1)])
def test_figure3_runs_use_the_paper_settings(method, batch_size, updates_per_call):
  spec = reproduction.RunSpec("mnist", 3, method, hidden_units=100, train_examples=1000)
  assert spec.name == f"mnist_nz3_h100_n1000_{method}"
  model, train = reproduction.run_configs(spec, 1000, seed=0)
  assert model.latent_dim == 3 and model.hidden_units == (100,)
  assert model.activation == "tanh" and model.init_stddev == 0.01
  assert model.weight_decay == pytest.approx(1 / 1000)
  assert train.optimizer == "adagrad" and train.learning_rate == 0.02
  assert train.method == method and train.train_examples == 1000
  # MCEM samples every example's chain in each round; the others take M = 100.
  assert (train.batch_size, train.updates_per_call) == (batch_size, updates_per_call)


def test_rows_round_trip_through_csv(tmp_path):
  rows = [{"dataset": "mnist", "steps": 100, "test_elbo": -123.456789012, "is": None},
          {"dataset": "frey_face", "steps": 105, "test_elbo": 530.0, "is": -1.5}]
  path = training.write_csv_atomically(tmp_path / "rows.csv", rows)
  assert reproduction.read_rows(path) == rows
