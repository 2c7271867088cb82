"""The hypermodel: a trial's hyperparameters onto our configs, and its fit."""

from __future__ import annotations

import dataclasses

import keras_tuner
import numpy as np

from vae_tf import callbacks as callbacks_lib
from vae_tf import config as config_lib
from vae_tf import learners, training
from vae_tf.data import pipeline
from vae_tf.model import VAE
from vae_tf.search_space import Choice, Dimension, value_type

OBJECTIVE = keras_tuner.Objective("val_elbo", direction="max")


def _register(hp: keras_tuner.HyperParameters, name: str, dim: Dimension):
  if isinstance(dim, Choice):
    if len(dim.values) == 1:
      return hp.Fixed(name, dim.values[0])
    return hp.Choice(name, list(dim.values))
  if value_type(name) is int:
    return hp.Int(name, int(dim.min), int(dim.max), step=int(dim.step or 1),
                  sampling=dim.sampling)
  return hp.Float(name, dim.min, dim.max, step=dim.step, sampling=dim.sampling)


class VAEHyperModel(keras_tuner.HyperModel):
  """Builds and fits our VAE from the preset's configs and a search space.

  `fit` takes the training and validation images (uint8, as loaded) and
  trains on the same stream as `vae_tf.training`; an epoch is one pass.
  """

  def __init__(self, base_model: config_lib.ModelConfig, base_train: config_lib.TrainConfig,
               search_space: dict[str, Dimension], num_train_examples: int | None = None):
    super().__init__(name="vae")
    # A learning-rate schedule spans base_train.epochs of this many examples.
    self.num_train_examples = num_train_examples
    self.base_model = base_model
    self.base_train = base_train
    self.search_space = search_space

  def configs(self, hp: keras_tuner.HyperParameters
              ) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
    values = {name: _register(hp, name, dim) for name, dim in self.search_space.items()}
    layers = values.get("hidden_layers", len(self.base_model.hidden_units))
    units = values.get("hidden_units", self.base_model.hidden_units[0])
    model = dataclasses.replace(
        self.base_model, hidden_units=(units,) * layers,
        **{k: values[k] for k in ("latent_dim", "estimator", "num_samples", "activation")
           if k in values})
    train = self.base_train
    if "learning_rate" in values:
      train = dataclasses.replace(train, learning_rate=values["learning_rate"])
    return model, train

  def build(self, hp: keras_tuner.HyperParameters) -> VAE:
    model_config, train = self.configs(hp)
    schedule_steps = None
    if self.num_train_examples:
      train = training.fit_updates_per_call(train, self.num_train_examples)
      schedule_steps = train.epochs * train.updates_per_call * pipeline.blocks_per_epoch(
          self.num_train_examples, train.batch_size, train.updates_per_call)
    return learners.build_model(model_config, train, total_steps=schedule_steps)

  def fit(self, hp, model, x, validation_data=None, epochs=1, initial_epoch=0, callbacks=(),
          verbose="auto", **kwargs):
    _, train = self.configs(hp)
    train = training.fit_updates_per_call(train, len(x))
    blocks = pipeline.blocks_per_epoch(len(x), train.batch_size, train.updates_per_call)
    stream = pipeline.training_blocks(
        x, batch_size=train.batch_size, updates_per_call=train.updates_per_call,
        binarization=train.binarization, seed=train.seed, start_block=initial_epoch * blocks)
    validation = pipeline.evaluation_batches(validation_data, train.binarization,
                                             batch_size=1000)
    steps_per_epoch = blocks * train.updates_per_call
    progress = callbacks_lib.ProgressReport.for_verbose(
        verbose, train.batch_size, epochs * steps_per_epoch, steps_per_epoch)
    history = model.fit(stream, epochs=epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=blocks, validation_data=validation, shuffle=False,
                        callbacks=[callbacks_lib.FixedValidationSeed(), *callbacks, *progress],
                        verbose=0)
    if not np.all(np.isfinite(history.history.get("val_elbo", [np.nan]))):
      # Deterministic, so a retry would diverge again.
      raise keras_tuner.errors.FailedTrialError(
          f"training diverged (validation ELBO {history.history.get('val_elbo')})")
    return history
