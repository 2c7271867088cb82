"""The VAE's fused train_step, weight decay, decoders and saving, on real MNIST."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import evaluation, learners, sampling
from vae_tf.data import pipeline, sources

BATCH_SIZE = 100
EVENT_SIZE = 28 * 28


@pytest.fixture(scope="module")
def mnist(tfds_data_dir, shared_data_dir) -> np.ndarray:
  """5500 training images, binarized once: [5500, 784] in {0, 1}."""
  images = sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))
  return pipeline.evaluation_array(images[:5500], "dynamic")


def make_model(optimizer: str = "adam", learning_rate: float = 1e-3, weight_decay: float = 0.0,
               likelihood: str = "bernoulli", input_shape=(28, 28), seed: int = 3):
  model_config = config_lib.ModelConfig(
      input_shape=input_shape, likelihood=likelihood, latent_dim=5, hidden_units=(64,),
      init_stddev=None, weight_decay=weight_decay)
  train_config = config_lib.TrainConfig(optimizer=optimizer, learning_rate=learning_rate,
                                        seed=seed)
  return learners.build_model(model_config, train_config)


def fit(model, batches: np.ndarray) -> dict:
  """One `fit` epoch with one train_step call per element of `batches`."""
  history = model.fit(tf.data.Dataset.from_tensor_slices(batches), epochs=1, verbose=0)
  return {key: values[-1] for key, values in history.history.items()}


def weights(model) -> list[np.ndarray]:
  return [v.numpy() for v in model.trainable_variables]


def sequential_updates(model, block: np.ndarray) -> float:
  """K single SGD updates, minibatch by minibatch, under XLA like train_step.

  Update i draws z with the call's seed folded with i. Returns the mean over
  the K updates of the minibatch ELBOs computed before each update.
  """

  @sampling.xla_function
  def update(x, seed):
    with tf.GradientTape() as tape:
      elbo = tf.reduce_mean(model.elbo_terms(x, seed).elbo)
      loss = -elbo
    variables = model.trainable_variables
    model.optimizer.apply(tape.gradient(loss, variables), variables)
    return elbo

  call_seed = tf.cast(model.train_seed.next(), tf.int32)
  elbos = [update(tf.constant(x), tf.random.experimental.stateless_fold_in(call_seed, i))
           for i, x in enumerate(block)]
  return float(np.mean(elbos))


def test_build_model_is_deterministic():
  first, second = make_model(), make_model()
  for a, b in zip(first.weights, second.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  other_seed = make_model(seed=4)
  assert not np.array_equal(weights(first)[0], weights(other_seed)[0])


def test_a_block_is_k_sequential_updates(mnist):
  num_updates = 6
  block = mnist[:num_updates * BATCH_SIZE].reshape(num_updates, BATCH_SIZE, EVENT_SIZE)
  fused = make_model(learning_rate=0.01)
  reference = make_model(learning_rate=0.01)
  reversed_order = make_model(learning_rate=0.01)

  logs = fit(fused, block[np.newaxis])  # a single train_step call
  reference_elbo = sequential_updates(reference, block)
  sequential_updates(reversed_order, block[::-1])

  assert int(fused.optimizer.iterations.numpy()) == num_updates
  assert int(reference.optimizer.iterations.numpy()) == num_updates
  for a, b in zip(weights(fused), weights(reference)):
    np.testing.assert_array_equal(a, b)
  # The logged ELBO is the mean over the block's updates.
  assert logs["elbo"] == pytest.approx(reference_elbo, rel=1e-6)
  # The check can tell the order of the minibatches apart.
  assert max(np.abs(a - b).max() for a, b in zip(weights(fused), weights(reversed_order))) > 1e-3


def test_blocks_and_single_minibatch_calls_train_alike(mnist):
  # A block draws its K samples of z from one seed per call, folded with the
  # update index; K single-minibatch calls draw one seed each. The z differ,
  # so the weights do not match bit for bit, but the training is the same.
  num_blocks, num_updates = 5, 10
  train = mnist[:num_blocks * num_updates * BATCH_SIZE]
  held_out = mnist[-500:]
  untrained = evaluation.evaluate_elbo(make_model(), held_out)["elbo"]

  fused = make_model()
  single = make_model()
  fit(fused, train.reshape(num_blocks, num_updates, BATCH_SIZE, EVENT_SIZE))
  fit(single, train.reshape(num_blocks * num_updates, BATCH_SIZE, EVENT_SIZE))
  assert int(fused.optimizer.iterations.numpy()) == num_blocks * num_updates
  assert int(single.optimizer.iterations.numpy()) == num_blocks * num_updates

  fused_elbo = evaluation.evaluate_elbo(fused, held_out)["elbo"]
  single_elbo = evaluation.evaluate_elbo(single, held_out)["elbo"]
  # 50 Adam steps from about -545 nats (784 log 2 for p = 1/2) to about -260.
  assert untrained < -540
  assert fused_elbo - untrained > 250 and single_elbo - untrained > 250
  assert abs(fused_elbo - single_elbo) < 10, (fused_elbo, single_elbo)


def test_weight_decay_adds_decay_times_theta_to_the_gradient(mnist):
  learning_rate, decay = 0.1, 0.5
  minibatch = mnist[np.newaxis, :BATCH_SIZE]
  plain = make_model("sgd", learning_rate)
  decayed = make_model("sgd", learning_rate, weight_decay=decay)
  theta = weights(plain)
  for a, b in zip(theta, weights(decayed)):
    np.testing.assert_array_equal(a, b)

  plain_logs = fit(plain, minibatch)
  decayed_logs = fit(decayed, minibatch)
  # Same seeds, so the same z and data gradient g: SGD gives theta - lr * g
  # without decay and theta - lr * (g + decay * theta) with it.
  for before, after_plain, after_decayed in zip(theta, weights(plain), weights(decayed)):
    np.testing.assert_allclose(after_decayed - after_plain, -learning_rate * decay * before,
                               rtol=1e-3, atol=1e-7)
  # The penalty is part of the loss only: the logged ELBO is the data's.
  assert decayed_logs == plain_logs


def test_gaussian_decoder_mean_lies_in_the_unit_interval():
  model = make_model(likelihood="gaussian", input_shape=(28, 20))
  z = model.prior.sample(1000, seed=tf.constant([1, 2]))
  decoded = model.decode(z)
  mean = decoded.mean().numpy()
  assert mean.shape == (1000, 28 * 20)
  assert mean.min() > 0.0 and mean.max() < 1.0
  assert mean.std() > 0.02  # varies with z and across pixels
  assert np.all(decoded.stddev().numpy() > 0.0)
  # Far out in latent space the sigmoid may round to 0 or 1, never beyond.
  far = model.decode(100.0 * z).mean().numpy()
  assert far.min() >= 0.0 and far.max() <= 1.0


def test_save_and_load_round_trip(mnist, tmp_path):
  model = make_model()
  fit(model, mnist[:1000].reshape(2, 5, BATCH_SIZE, EVENT_SIZE))
  path = tmp_path / "model.keras"
  model.save(path)
  loaded = keras.saving.load_model(path)

  assert loaded.config == model.config and loaded.seed == model.seed
  assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
  for a, b in zip(model.weights, loaded.weights):  # including the seed states
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  x = tf.constant(mnist[-200:])
  seed = tf.constant([5, 6], tf.int32)
  for a, b in zip(model.elbo_terms(x, seed), loaded.elbo_terms(x, seed)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # `call` draws from the saved evaluation seed state, so it matches too.
  outputs, loaded_outputs = model(x), loaded(x)
  assert set(outputs) == {"elbo", "reconstruction", "kl"}
  for key, value in outputs.items():
    np.testing.assert_array_equal(value.numpy(), loaded_outputs[key].numpy())
  # The trained model is not just an untrained one.
  assert model.elbo_terms(x, seed).elbo.numpy().mean() > (
      make_model().elbo_terms(x, seed).elbo.numpy().mean() + 50)
