"""Wake-sleep (`vae_tf.baselines.wake_sleep`) on a real MNIST slice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import evaluation, learners
from vae_tf.baselines.wake_sleep import WakeSleep
from vae_tf.data import pipeline, sources

NUM_TRAIN = 3000
UPDATES_PER_CALL = 30


@pytest.fixture(scope="module")
def images(tfds_data_dir, shared_data_dir) -> np.ndarray:
  return sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))


def make_wake_sleep(init_stddev: float | None) -> WakeSleep:
  model_config, train_config = config_lib.preset("paper", "mnist", NUM_TRAIN)
  model_config = dataclasses.replace(model_config, latent_dim=5, hidden_units=(100,),
                                     init_stddev=init_stddev)
  train_config = dataclasses.replace(train_config, method="wake_sleep",
                                     updates_per_call=UPDATES_PER_CALL)
  return learners.build_model(model_config, train_config)


def objectives(model: WakeSleep, held_out: np.ndarray) -> dict[str, float]:
  """The two phases' losses (fixed draws) and the held-out ELBO."""
  seed = tf.constant([1, 2])
  return {"wake": float(model.wake_loss(tf.constant(held_out[:100]), seed)[0]),
          "sleep": float(model.sleep_loss(100, seed)),
          "elbo": evaluation.evaluate_elbo(model, held_out)["elbo"]}


def test_both_phases_improve_their_objectives(images):
  # Glorot initial weights: with the paper's N(0, 0.01^2) both networks start
  # nearly constant, z carries no information about the dreams, and the sleep
  # phase has nothing to learn until the wake phase breaks the symmetry,
  # which takes far longer than this test.
  model = make_wake_sleep(init_stddev=None)
  assert isinstance(model, WakeSleep)
  held_out = pipeline.evaluation_array(images[-500:], "none")
  before = objectives(model, held_out)
  blocks = pipeline.training_blocks(images[:NUM_TRAIN], batch_size=100,
                                    updates_per_call=UPDATES_PER_CALL, binarization="none",
                                    seed=0)
  history = model.fit(blocks, steps_per_epoch=10, epochs=1, verbose=0).history  # 300 updates
  after = objectives(model, held_out)

  assert int(model.optimizer.iterations.numpy()) == 300  # one step counts both phases
  # Measured: wake 553 -> 185, sleep 10.3 -> 4.4 nats, ELBO -546 -> -176.
  assert after["wake"] < before["wake"] - 300, (before, after)
  assert after["sleep"] < before["sleep"] - 4, (before, after)
  assert after["elbo"] > before["elbo"] + 300, (before, after)
  # The logged ELBO is the VAE's: same estimator, same metric names.
  assert set(history) == {"elbo", "reconstruction", "kl"}
  assert history["elbo"][0] == pytest.approx(history["reconstruction"][0] - history["kl"][0],
                                             abs=1e-3)


def test_each_phase_trains_only_its_own_network(images):
  model = make_wake_sleep(init_stddev=None)
  x = tf.constant(pipeline.evaluation_array(images[:100], "none"))
  encoder = [v.numpy() for v in model.encoder.trainable_variables]
  decoder = [v.numpy() for v in model.decoder.trainable_variables]
  with tf.GradientTape(persistent=True) as tape:
    wake, _ = model.wake_loss(x, tf.constant([3, 4]))
    sleep = model.sleep_loss(100, tf.constant([5, 6]))
  assert all(g is None for g in tape.gradient(wake, model.encoder.trainable_variables))
  assert all(g is None for g in tape.gradient(sleep, model.decoder.trainable_variables))
  model.train_step(x)
  assert all(np.abs(v.numpy() - old).max() > 0
             for v, old in zip(model.encoder.trainable_variables + model.decoder.trainable_variables,
                               encoder + decoder))
