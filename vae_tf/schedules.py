"""Learning-rate schedules over a run's SGD updates, as Keras schedules.

A schedule is a function of the optimizer's `iterations` (updates done
before the current one) and of the run's length in updates, both restored
from a checkpoint, so a resumed run follows the same schedule exactly.

  constant     `learning_rate` throughout;
  burda        Burda et al. (2015): 8 stages whose lengths are proportional
               to 3^i (i = 0..7; 3^i epochs each in their 3,280-epoch run),
               stage i at learning_rate * round(10^(1 - i/7), 1) / 10, the
               rounding of their code (1.0, 0.72, 0.52, ..., 0.1);
  cosine       keras CosineDecay from learning_rate to lr_final_scale times it;
  exponential  keras ExponentialDecay by lr_final_scale over the run.
"""

from __future__ import annotations

import keras
import numpy as np

from vae_tf.config import BURDA_EPOCHS, TrainConfig

BURDA_STAGES = 8


def burda_stage_boundaries(total_steps: int) -> list[int]:
  """The update index at which each of stages 1..7 starts."""
  ends = np.cumsum([3**i for i in range(BURDA_STAGES)])[:-1]
  return [int(round(total_steps * end / BURDA_EPOCHS)) for end in ends]


def burda_stage_scales() -> list[float]:
  return [round(10.0**(1 - i / 7), 1) / 10 for i in range(BURDA_STAGES)]


def make_schedule(train: TrainConfig, total_steps: int):
  """The learning rate of `train` for a run of `total_steps` SGD updates."""
  rate = train.learning_rate
  if train.lr_schedule == "constant":
    return rate
  if train.lr_schedule == "burda":
    # PiecewiseConstantDecay keeps values[i] up to and including
    # boundaries[i]; stage i + 1 starts at update index boundaries[i].
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [b - 1 for b in burda_stage_boundaries(total_steps)],
        [rate * scale for scale in burda_stage_scales()])
  if train.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(rate, total_steps, alpha=train.lr_final_scale)
  return keras.optimizers.schedules.ExponentialDecay(rate, total_steps, train.lr_final_scale)
