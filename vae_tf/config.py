"""Model and training configuration, with the paper's settings as presets.

Kingma & Welling (2013), section 5: one tanh hidden layer (500 units for MNIST,
200 for Frey Face), weights drawn from N(0, 0.01), Adagrad, minibatches of
M=100 with L=1 sample per datapoint, and an N(0, I) prior on the parameters.
"""

from __future__ import annotations

import dataclasses
import json
import re

DATASETS = ("mnist", "frey_face")
# SGVB estimators A and B (eq. 6, 7) and the k-sample importance-weighted
# bound of Burda et al. (2015), `vae_tf.objectives`.
ESTIMATORS = ("A", "B", "iwae")
LIKELIHOODS = ("bernoulli", "gaussian")
BINARIZATIONS = ("dynamic", "static", "none")
OPTIMIZERS = ("adagrad", "adam", "sgd")
# Learning algorithms for the same networks: AEVB (the paper's), and its two
# baselines, wake-sleep and Monte Carlo EM (`vae_tf.baselines`).
METHODS = ("aevb", "wake_sleep", "mcem")
ACTIVATIONS = ("tanh", "relu", "softplus", "elu")
# Learning-rate schedules over the run's `epochs` (`vae_tf.schedules`).
LR_SCHEDULES = ("constant", "burda", "cosine", "exponential")
# paper: Kingma & Welling; iwae_paper: Burda et al.'s MNIST recipe.
PRESETS = ("paper", "modern", "iwae_paper")
# Distribution strategies for training (`vae_tf.distribute`); auto picks from
# TF_CONFIG and the local GPUs.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")

INPUT_SHAPES = {"mnist": (28, 28), "frey_face": (28, 20)}


def is_model_name(name: str) -> bool:
  """Whether `name` can name a served model: one path segment, as in a URL."""
  return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name or ""))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that defines the networks and the training objective."""

  input_shape: tuple[int, ...] = (28, 28)
  likelihood: str = "bernoulli"
  latent_dim: int = 20
  hidden_units: tuple[int, ...] = (500,)
  activation: str = "tanh"
  # Standard deviation of the N(0, s^2) initialiser for all weights and
  # biases; None keeps Keras' Glorot-uniform kernels and zero biases.
  init_stddev: float | None = 0.01
  estimator: str = "B"
  # L (SGVB) or k (IWAE): draws of z per datapoint.
  num_samples: int = 1
  # Coefficient of 0.5 * ||theta||^2 added to the per-example loss. With
  # 1 / N_train this is exactly a N(0, I) prior on the parameters (MAP).
  weight_decay: float = 0.0

  def __post_init__(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    if self.latent_dim < 1:
      raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
    if not self.hidden_units or min(self.hidden_units) < 1:
      raise ValueError(f"hidden_units must be positive integers, got {self.hidden_units}")
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
    if self.weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
    if self.init_stddev is not None and self.init_stddev <= 0:
      raise ValueError(f"init_stddev must be > 0, got {self.init_stddev}")

  @property
  def event_size(self) -> int:
    size = 1
    for dim in self.input_shape:
      size *= dim
    return size

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> ModelConfig:
    values = dict(values)
    values["input_shape"] = tuple(values["input_shape"])
    values["hidden_units"] = tuple(values["hidden_units"])
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How the model is fitted: data handling, optimiser and schedule."""

  dataset: str = "mnist"
  method: str = "aevb"
  # Training used the first `train_examples` examples of the training split
  # (None: all of them). MCEM keeps one Markov chain per example, so needs it.
  train_examples: int | None = None
  binarization: str = "none"
  optimizer: str = "adagrad"
  learning_rate: float = 0.02
  # The schedule spans `epochs`, so it cannot change on resumption.
  lr_schedule: str = "constant"
  # Learning rate at the end of a cosine or exponential schedule, as a
  # fraction of `learning_rate`.
  lr_final_scale: float = 0.1
  adam_beta1: float = 0.9
  adam_beta2: float = 0.999
  # Added to sqrt(v) in Adam's denominator (Keras' and Burda et al.'s form).
  adam_epsilon: float = 1e-7
  # Start the decoder's output bias at the logits of the training data's mean
  # (Burda et al.), so the first updates need not learn the average image.
  decoder_bias_from_data: bool = False
  batch_size: int = 100
  epochs: int = 10
  # SGD updates fused into one compiled call of `train_step`; a speed knob:
  # every update still takes one minibatch of `batch_size`.
  updates_per_call: int = 50
  seed: int = 0
  checkpoint_every_steps: int = 1000

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
    if self.method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
    if self.train_examples is not None and self.train_examples < 1:
      raise ValueError(f"train_examples must be >= 1, got {self.train_examples}")
    if self.method == "mcem" and self.train_examples is None:
      raise ValueError("method 'mcem' keeps one Markov chain per training example, so "
                       "train_examples must be set")
    if self.binarization not in BINARIZATIONS:
      raise ValueError(f"binarization must be one of {BINARIZATIONS}, got {self.binarization!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.lr_schedule not in LR_SCHEDULES:
      raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
    if not 0 < self.lr_final_scale <= 1:
      raise ValueError(f"lr_final_scale must be in (0, 1], got {self.lr_final_scale}")
    for name in ("adam_beta1", "adam_beta2"):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
    if self.adam_epsilon <= 0:
      raise ValueError(f"adam_epsilon must be > 0, got {self.adam_epsilon}")
    for name in ("batch_size", "epochs", "updates_per_call", "checkpoint_every_steps"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def preset(name: str, dataset: str, num_train_examples: int) -> tuple[ModelConfig, TrainConfig]:
  """The `paper` settings of Kingma & Welling, a `modern` alternative, or
  `iwae_paper`, Burda et al.'s (2015) one-stochastic-layer recipe."""
  if name not in PRESETS:
    raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  is_mnist = dataset == "mnist"
  common = dict(
      input_shape=INPUT_SHAPES[dataset],
      likelihood="bernoulli" if is_mnist else "gaussian",
      latent_dim=20 if is_mnist else 10,
  )
  if name == "iwae_paper":
    return iwae_paper_preset(dataset, common)
  if name == "paper":
    model = ModelConfig(
        hidden_units=(500,) if is_mnist else (200,),
        activation="tanh",
        init_stddev=0.01,
        estimator="B",
        num_samples=1,
        weight_decay=1.0 / num_train_examples,
        **common,
    )
    train = TrainConfig(
        dataset=dataset,
        binarization="none",
        optimizer="adagrad",
        learning_rate=0.02 if is_mnist else 0.01,
        batch_size=100,
    )
  else:
    model = ModelConfig(
        hidden_units=(500, 500) if is_mnist else (200, 200),
        activation="relu",
        init_stddev=None,
        estimator="B",
        num_samples=1,
        weight_decay=0.0,
        **common,
    )
    train = TrainConfig(
        dataset=dataset,
        binarization="dynamic" if is_mnist else "none",
        optimizer="adam",
        learning_rate=1e-3,
        batch_size=100,
    )
  return model, train


def iwae_paper_preset(dataset: str, common: dict) -> tuple[ModelConfig, TrainConfig]:
  """Burda, Grosse & Salakhutdinov (2015), section 5 and their code (yburda/iwae):
  784-200-200-50 tanh, IWAE with k=5, minibatches of 20, Adam(beta1=0.99,
  epsilon=1e-4), 3,280 epochs in 8 stages of 3^i epochs with the learning
  rate 1e-3 * 10^(-i/7), decoder bias at the data mean's logits.
  """
  model = ModelConfig(
      **{**common, "latent_dim": 50}, hidden_units=(200, 200), activation="tanh",
      init_stddev=None, estimator="iwae", num_samples=5, weight_decay=0.0)
  train = TrainConfig(
      dataset=dataset, binarization="dynamic" if dataset == "mnist" else "none",
      optimizer="adam", learning_rate=1e-3, lr_schedule="burda", adam_beta1=0.99,
      adam_beta2=0.999, adam_epsilon=1e-4, decoder_bias_from_data=True, batch_size=20,
      epochs=BURDA_EPOCHS)
  return model, train


# Burda et al.'s 8 stages of 3^i epochs, i = 0..7.
BURDA_EPOCHS = sum(3**i for i in range(8))


def dumps(model: ModelConfig, train: TrainConfig) -> str:
  return json.dumps({"model": model.to_dict(), "train": train.to_dict()}, indent=2, sort_keys=True)
