"""Monte Carlo EM (`vae_tf.baselines.mcem`) on a real MNIST slice, through `training.train`."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import evaluation, hmc, learner_base, learners, run_folder, training
from vae_tf.baselines import mcem
from vae_tf.data import pipeline, sources

NUM_TRAIN = 500
BATCH_SIZE = 100  # 5 sampling rounds per epoch
ROUNDS = 40


def configs(checkpoint_every_steps: int = 1000):
  # The paper's Figure 3 model: Nz = 3, 100 hidden units.
  model_config, train_config = config_lib.preset("paper", "mnist", NUM_TRAIN)
  model_config = dataclasses.replace(model_config, latent_dim=3, hidden_units=(100,))
  train_config = dataclasses.replace(
      train_config, method="mcem", train_examples=NUM_TRAIN, batch_size=BATCH_SIZE,
      updates_per_call=1, checkpoint_every_steps=checkpoint_every_steps)
  return model_config, train_config


@pytest.fixture(scope="module")
def train_images(tfds_data_dir, shared_data_dir) -> np.ndarray:
  images = sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))
  return images[:NUM_TRAIN]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_images):
  model_dir = tmp_path_factory.mktemp("mcem")
  result = training.train(*configs(), train_images=train_images, validation_images=None,
                          model_dir=model_dir, total_steps=ROUNDS, verbose=0)
  return model_dir, result


def test_rounds_raise_the_log_joint_and_tune_acceptance(trained):
  model_dir, result = trained
  assert isinstance(result.model, mcem.MonteCarloEM)
  assert int(result.model.optimizer.iterations.numpy()) == ROUNDS  # rounds, not weight updates
  with open(model_dir / run_folder.METRICS_FILE) as f:
    # Trained without validation data: Keras still writes val_* columns, as NA.
    rows = [{key: float(row[key]) for key in ("log_joint", "acceptance", "step_size")}
            for row in csv.DictReader(f)]
  assert len(rows) == ROUNDS * BATCH_SIZE // NUM_TRAIN
  # Measured: log p(x, z) -445 nats in the first epoch, -211 in the 8th.
  assert rows[0]["log_joint"] < -350
  assert rows[-1]["log_joint"] > rows[0]["log_joint"] + 150
  # The warm-up, before the first counted round, adapts the step size from
  # 0.1 to the wide posteriors of the initial weights. Measured: 12
  # transitions, acceptance 0.906, step size 0.82.
  report = result.model.sampler_report()
  assert mcem.WARMUP_MIN_TRANSITIONS <= report["warmup_transitions"] < mcem.WARMUP_MAX_TRANSITIONS
  assert abs(report["warmup_acceptance"] - hmc.TARGET_ACCEPT_PROB) <= mcem.WARMUP_TOLERANCE
  # The first M-steps sharpen the posteriors, so that step size overshoots
  # (measured: acceptance 0.41 in the first epoch) until the rounds' slower
  # adaptation brings it back to the target (0.89 in the 8th).
  assert rows[0]["step_size"] > 5 * mcem.INITIAL_STEP_SIZE
  assert rows[0]["acceptance"] < 0.6
  assert abs(rows[-1]["acceptance"] - hmc.TARGET_ACCEPT_PROB) < 0.06


def test_training_raises_the_marginal_likelihood(trained, train_images):
  _, result = trained
  x = pipeline.evaluation_array(train_images[:50], "none")
  # Untrained, the N(0, 0.01^2) weights make every pixel's probability
  # about 1/2: log p(x) = 784 log(1/2) = -543 nats, whatever x and z.
  untrained = learners.build_model(*configs())
  np.testing.assert_allclose(hmc.log_joint(untrained, x, tf.zeros([50, 3])).numpy()
                             - untrained.prior.log_prob(tf.zeros([3])).numpy(),
                             784 * np.log(0.5), atol=1.0)
  estimate = evaluation.hmc_marginal_log_likelihood(
      result.model, x, num_samples_per_chain=50, num_chains=2, num_burnin_steps=100).mean()
  # Measured: -196.9 nats.
  assert estimate > 784 * np.log(0.5) + 250, estimate


def test_a_round_moves_only_its_examples_chains(train_images):
  model = learners.build_model(*configs())
  chains = model.latent_chains.numpy()
  indices = np.arange(0, NUM_TRAIN, 5, dtype=np.int32)  # 100 examples
  x = pipeline.evaluation_array(train_images[indices], "none")
  decoder = [v.numpy() for v in model.decoder.trainable_variables]
  model.train_step((tf.constant(x), tf.constant(indices)))

  moved = np.any(model.latent_chains.numpy() != chains, axis=1)
  # HMC at the initial step size accepts nearly every proposal.
  assert moved[indices].mean() > 0.9
  assert not np.delete(moved, indices).any()
  assert all(np.abs(v.numpy() - old).max() > 0
             for v, old in zip(model.decoder.trainable_variables, decoder))
  # The recognition network is not part of MCEM: there is none to train or to encode with.
  assert not isinstance(model, learner_base.AmortizedLearner)
  assert not hasattr(model, "encoder") and not hasattr(model, "encode")
  assert not any(v.path.startswith("encoder/") for v in model.variables)
  with pytest.raises(ValueError, match="no recognition model"):
    model.test_step(tf.constant(x))  # validation in `fit`


def test_resuming_continues_the_same_chains(tmp_path, train_images, trained):
  _, reference = trained
  model_dir = tmp_path / "resumed"
  # Two invocations with a checkpoint between them, the first ending mid-epoch.
  training.train(*configs(checkpoint_every_steps=15), train_images=train_images,
                 validation_images=None, model_dir=model_dir, total_steps=ROUNDS // 2 + 3,
                 verbose=0)
  resumed = training.train(*configs(checkpoint_every_steps=15), train_images=train_images,
                           validation_images=None, model_dir=model_dir, total_steps=ROUNDS,
                           verbose=0)
  assert resumed.resumed_from_step == ROUNDS // 2 + 3
  for a, b in zip(reference.model.variables, resumed.model.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  loaded = training.load_trained_model(model_dir)
  np.testing.assert_array_equal(loaded.latent_chains.numpy(),
                                reference.model.latent_chains.numpy())
  assert float(loaded.step_size.numpy()) == float(reference.model.step_size.numpy())


def test_a_checkpoint_from_before_the_warm_up_is_refused_with_a_clear_error(tmp_path,
                                                                           train_images):
  training.train(*configs(), train_images=train_images, validation_images=None,
                 model_dir=tmp_path, total_steps=1, verbose=0)
  # What the code before the warm-up saved: the same, less the warm-up's variables.
  model = learners.build_model(*configs())
  older = tf.train.Checkpoint(
      model={v.path: v for v in model.variables if not v.path.startswith("warmup_")},
      metrics={v.path: v for v in model.metrics_variables}, optimizer=model.optimizer)
  tf.train.CheckpointManager(older, tmp_path / run_folder.CHECKPOINT_DIR, max_to_keep=3).save()
  with pytest.raises(ValueError, match=f"^{tmp_path} holds a checkpoint of another version of "
                     "the mcem learner .* cannot resume; train into another folder"):
    training.train(*configs(), train_images=train_images, validation_images=None,
                   model_dir=tmp_path, total_steps=2, verbose=0)
