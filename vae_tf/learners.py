"""The learning methods by name, and the compiled model a run trains.

`LEARNERS` maps `TrainConfig.method` to its `vae_tf.learner_base.Learner`:
AEVB, the paper's algorithm (`vae_tf.model`), and its two baselines,
wake-sleep and Monte Carlo EM (`vae_tf.baselines`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import distribute, schedules
from vae_tf.baselines.mcem import MonteCarloEM
from vae_tf.baselines.wake_sleep import WakeSleep
from vae_tf.learner_base import AmortizedLearner, Learner
from vae_tf.model import VAE

LEARNERS: dict[str, type[Learner]] = {
    "aevb": VAE,
    "wake_sleep": WakeSleep,
    "mcem": MonteCarloEM,
}


def has_recognition_model(method: str) -> bool:
  """Whether `method` learns q(z|x): what validation ELBOs, reconstructions
  and the exported signatures need."""
  return issubclass(LEARNERS[method], AmortizedLearner)


def make_optimizer(train: config_lib.TrainConfig,
                   total_steps: int | None = None) -> keras.optimizers.Optimizer:
  """The optimizer of `train`, its schedule spanning `total_steps` SGD updates.

  Without `total_steps` (a model loaded for use, not training) the schedule
  is built over one step: only its kind matters then, since it decides which
  variables the optimizer checkpoints.
  """
  rate = schedules.make_schedule(train, total_steps or 1)
  if train.optimizer == "adagrad":
    return keras.optimizers.Adagrad(rate)
  if train.optimizer == "adam":
    return keras.optimizers.Adam(rate, beta_1=train.adam_beta1, beta_2=train.adam_beta2,
                                 epsilon=train.adam_epsilon)
  return keras.optimizers.SGD(rate)


def build_model(model_config: config_lib.ModelConfig, train: config_lib.TrainConfig,
                strategy: tf.distribute.Strategy | None = None,
                total_steps: int | None = None) -> Learner:
  """A compiled model trained by `train.method` whose optimizer slots exist, so
  checkpoints restore eagerly; its variables belong to `strategy`.
  `total_steps` is the length of the learning-rate schedule in SGD updates.
  """
  strategy = strategy or tf.distribute.get_strategy()
  keras.utils.set_random_seed(train.seed)  # the initial weights
  with strategy.scope():
    model = LEARNERS[train.method].for_training(model_config, train)
    # XLA does not compile the collectives that keep replicas in sync.
    model.compile(optimizer=make_optimizer(train, total_steps),
                  jit_compile=not distribute.is_distributed(strategy))
    model.optimizer.build(model.trainable_variables)
  return model
