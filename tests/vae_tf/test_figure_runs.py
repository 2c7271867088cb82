"""Figure runs on a real MNIST slice: what a curve point charges as examples
seen (docs/reproduction.md, "The x axis"), and resumption after an interruption."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vae_tf.baselines import mcem
from vae_tf.reproduction import budgets, figure_runs

TRAIN_EXAMPLES = 300
# Three points: 600, 1,200 and 2,400 examples seen.
BUDGET = dataclasses.replace(budgets.FIGURE_BUDGETS["tiny"], name="test",
                             likelihood_examples=(600, 2_400), likelihood_points=3)
TIMING = ("evaluation_seconds", "training_cpu_seconds")


class Interrupted(Exception):
  """Stands in for a kill: every file on disk is as a kill would leave it."""


def setup_in(path, tfds_data_dir, shared_data_dir) -> figure_runs.Setup:
  return figure_runs.Setup(BUDGET, path, data_dir=tfds_data_dir,
                           manual_dir=str(shared_data_dir))


def weights_fingerprint(model) -> dict:
  """Stands in for a curve's evaluation: equal only for the same weights, and
  compiles nothing (an HMC evaluation would cost more than the run)."""
  return {"weights": float(sum(np.abs(v.numpy()).astype(np.float64).sum()
                               for v in model.trainable_variables))}


def curve(setup: figure_runs.Setup, spec: figure_runs.RunSpec, interrupt_at: int | None = None):
  points = []

  def evaluate_or_stop(model):
    points.append(int(model.optimizer.iterations.numpy()))
    if len(points) == interrupt_at:
      raise Interrupted
    return weights_fingerprint(model)

  return figure_runs.train_along_schedule(setup, spec, BUDGET.likelihood_examples,
                                          BUDGET.likelihood_points, evaluate_or_stop)


def untimed(rows: list[dict]) -> list[dict]:
  return [{key: value for key, value in row.items() if key not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(request, tmp_path_factory, tfds_data_dir, shared_data_dir):
  spec = figure_runs.RunSpec("mnist", 3, request.param, 20, TRAIN_EXAMPLES)
  setup = setup_in(tmp_path_factory.mktemp(request.param), tfds_data_dir, shared_data_dir)
  model, rows = curve(setup, spec)
  return spec, model, rows


@pytest.mark.parametrize("uninterrupted", ["aevb", "wake_sleep", "mcem"], indirect=True)
def test_examples_seen_charge_what_the_doc_says(uninterrupted):
  spec, model, rows = uninterrupted
  assert [row["examples_seen"] for row in rows] == [600, 1_200, 2_400]
  steps = [row["steps"] for row in rows]
  if spec.method == "mcem":
    # A sampling round charges every training example once; its 5 weight
    # updates and its HMC transition are the round's cost, not more examples.
    assert steps == [2, 4, 8]
    # The warm-up transitions before the first round are not charged.
    assert model.sampler_report()["warmup_transitions"] >= mcem.WARMUP_MIN_TRANSITIONS
  else:
    # An update charges its minibatch of M = 100 data examples; wake-sleep's
    # 100 dreams (sleep phase) are not training examples.
    assert steps == [6, 12, 24]
  assert int(model.optimizer.iterations.numpy()) == steps[-1]


# AEVB's resumption is tested bit for bit in test_training.py.
@pytest.mark.parametrize("uninterrupted", ["wake_sleep", "mcem"], indirect=True)
def test_an_interrupted_run_resumes_to_the_same_curve(uninterrupted, tmp_path, tfds_data_dir,
                                                      shared_data_dir):
  spec, _, rows = uninterrupted
  setup = setup_in(tmp_path, tfds_data_dir, shared_data_dir)
  # Stopped while evaluating its second point, after training to it.
  with pytest.raises(Interrupted):
    curve(setup, spec, interrupt_at=2)
  assert len(setup.run_dir(spec).joinpath("curve.csv").read_text().splitlines()) == 2
  _, resumed = curve(setup, spec)
  assert untimed(resumed) == untimed(rows)
