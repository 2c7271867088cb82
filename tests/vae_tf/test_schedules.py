"""Learning-rate schedules: Burda et al.'s stages, exact at every boundary."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vae_tf import config as config_lib
from vae_tf import learners, schedules

BURDA = config_lib.TrainConfig(optimizer="adam", learning_rate=1e-3, lr_schedule="burda")


def rate(schedule, step: int) -> float:
  return float(schedule(step)) if callable(schedule) else schedule


def test_burda_stages_follow_their_code():
  # yburda/iwae experiments.py: stage i (1..8) runs 3^(i-1) epochs at
  # 1e-4 * round(10^(1 - (i-1)/7), 1).
  assert schedules.burda_stage_scales() == pytest.approx(
      [1.0, 0.72, 0.52, 0.37, 0.27, 0.19, 0.14, 0.1])
  steps_per_epoch = 3000  # 60,000 images in minibatches of 20
  starts = np.cumsum([3**i for i in range(8)])[:-1] * steps_per_epoch
  assert schedules.burda_stage_boundaries(3280 * steps_per_epoch) == list(starts)


@pytest.mark.parametrize("total_steps", [3280 * 3, 10_000, 300])
def test_burda_rate_is_exact_at_every_stage_boundary(total_steps):
  schedule = schedules.make_schedule(BURDA, total_steps)
  values = [np.float32(1e-3 * scale) for scale in schedules.burda_stage_scales()]
  starts = schedules.burda_stage_boundaries(total_steps)
  # Update s (0-based) belongs to the stage after every start <= s.
  probes = {0, total_steps - 1, *starts, *(start - 1 for start in starts if start > 0)}
  for step in sorted(probes):
    assert rate(schedule, step) == values[sum(start <= step for start in starts)], step
  assert rate(schedule, total_steps - 1) == values[-1]


def test_decaying_schedules_end_at_the_final_scale():
  for kind in ("cosine", "exponential"):
    train = dataclasses.replace(BURDA, lr_schedule=kind, lr_final_scale=0.05)
    schedule = schedules.make_schedule(train, 1000)
    assert rate(schedule, 0) == pytest.approx(1e-3)
    assert rate(schedule, 1000) == pytest.approx(5e-5, rel=1e-5)
    assert rate(schedule, 400) < rate(schedule, 300) < 1e-3
  constant = dataclasses.replace(BURDA, lr_schedule="constant")
  assert schedules.make_schedule(constant, 1000) == 1e-3


def test_the_optimizer_follows_the_schedule():
  model_config = config_lib.ModelConfig(input_shape=(4, 4), latent_dim=2, hidden_units=(8,))
  model = learners.build_model(model_config, BURDA, total_steps=3280)
  optimizer = model.optimizer
  assert optimizer.beta_1 == BURDA.adam_beta1 and optimizer.epsilon == BURDA.adam_epsilon
  for step, expected in ((0, 1e-3), (1, 7.2e-4), (3279, 1e-4)):
    optimizer.iterations.assign(step)
    assert float(optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("field, value", [("lr_schedule", "step"), ("lr_final_scale", 0.0),
                                          ("adam_beta1", 1.0), ("adam_epsilon", 0.0)])
def test_bad_settings_are_refused(field, value):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(BURDA, **{field: value})
