"""The MLPs of the paper's Appendix C, returning TFP distributions.

The encoder is q(z|x), a diagonal Gaussian (C.2). The decoder is p(x|z):
Bernoulli for binary data (C.1) or Gaussian with a sigmoid-squashed mean and a
learned log-variance for real-valued data (C.2).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vae_tf.config import ModelConfig

tfd = tfp.distributions


def _initializer(config: ModelConfig):
  if config.init_stddev is None:
    return "glorot_uniform", "zeros"
  normal = keras.initializers.RandomNormal(stddev=config.init_stddev)
  return normal, normal


def _dense(units: int, config: ModelConfig, activation=None, name=None) -> keras.layers.Dense:
  kernel_init, bias_init = _initializer(config)
  return keras.layers.Dense(
      units,
      activation=activation,
      kernel_initializer=kernel_init,
      bias_initializer=bias_init,
      name=name,
  )


class MLP(keras.layers.Layer):
  """The hidden layers; applies to inputs with any number of batch axes."""

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    self.layers = [_dense(units, config, config.activation, name=f"dense_{i}")
                   for i, units in enumerate(config.hidden_units)]

  def build(self, input_shape):
    for layer in self.layers:
      layer.build(input_shape)
      input_shape = (*input_shape[:-1], layer.units)

  def call(self, x):
    for layer in self.layers:
      x = layer(x)
    return x


class DiagonalGaussianMLP(keras.layers.Layer):
  """N(mu(h), diag(sigma^2(h))) with h = MLP(input) and a learned log-variance.

  The encoder q(z|x) uses it as is (C.2); the real-valued decoder p(x|z)
  squashes the mean with a sigmoid (`sigmoid_mean`), since its data lie in
  [0, 1].
  """

  def __init__(self, config: ModelConfig, event_size: int, sigmoid_mean: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.config = config
    self.sigmoid_mean = sigmoid_mean
    self.hidden = MLP(config, name="hidden")
    self.loc = _dense(event_size, config, name="loc")
    self.log_variance = _dense(event_size, config, name="log_variance")

  def build(self, input_shape):
    self.hidden.build(input_shape)
    hidden_shape = (*input_shape[:-1], self.config.hidden_units[-1])
    self.loc.build(hidden_shape)
    self.log_variance.build(hidden_shape)

  def call(self, inputs: tf.Tensor) -> tfd.Distribution:
    h = self.hidden(inputs)
    loc = self.loc(h)
    if self.sigmoid_mean:
      loc = tf.sigmoid(loc)
    scale = tf.exp(0.5 * self.log_variance(h))
    return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

  def init_output_bias(self, data_mean: np.ndarray) -> None:
    """Starts the sigmoid mean at `data_mean` (flat [D], in [0, 1]) for every z."""
    self.loc.bias.assign(_logits(data_mean))


class BernoulliDecoder(keras.layers.Layer):
  """p(x|z) = prod_d Bernoulli(x_d; y_d(z)), parameterised by logits."""

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    self.hidden = MLP(config, name="hidden")
    self.logits = _dense(config.event_size, config, name="logits")

  def build(self, input_shape):
    self.hidden.build(input_shape)
    self.logits.build((*input_shape[:-1], self.config.hidden_units[-1]))

  def call(self, z: tf.Tensor) -> tfd.Distribution:
    logits = self.logits(self.hidden(z))
    return tfd.Independent(
        tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=1)

  def init_output_bias(self, data_mean: np.ndarray) -> None:
    """Starts the Bernoulli means at `data_mean` (flat [D], in [0, 1]) for every z."""
    self.logits.bias.assign(_logits(data_mean))


def _logits(probabilities: np.ndarray) -> np.ndarray:
  # Pixels that are always 0 (or 1) would need infinite logits.
  p = np.clip(probabilities, 1e-3, 1 - 1e-3)
  return np.log(p / (1 - p)).astype(np.float32)


def make_encoder(config: ModelConfig) -> keras.layers.Layer:
  """q(z|x), a diagonal Gaussian (Appendix C.2)."""
  return DiagonalGaussianMLP(config, config.latent_dim, name="encoder")


def make_decoder(config: ModelConfig) -> keras.layers.Layer:
  """p(x|z): Bernoulli (C.1) or Gaussian with a sigmoid-squashed mean (C.2)."""
  if config.likelihood == "bernoulli":
    return BernoulliDecoder(config, name="decoder")
  return DiagonalGaussianMLP(config, config.event_size, sigmoid_mean=True, name="decoder")
