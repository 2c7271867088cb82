"""Training and resuming with `training.train` on slices of the real data sets."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import callbacks, evaluation, learners, run_folder, training
from vae_tf.data import pipeline, sources

METRIC_COLUMNS = ("elbo", "reconstruction", "kl", "val_elbo", "val_reconstruction", "val_kl")

# A small model for the resumption tests: 3000 images in blocks of 10 updates
# of 100 make 3 blocks (30 steps) per epoch.
RESUME_MODEL = dataclasses.replace(config_lib.preset("modern", "mnist", 3000)[0],
                                   hidden_units=(64, 64), latent_dim=5)
RESUME_TRAIN = dataclasses.replace(config_lib.preset("modern", "mnist", 3000)[1], epochs=3,
                                   updates_per_call=10, checkpoint_every_steps=20)
STEPS_PER_EPOCH = 30
TOTAL_STEPS = 3 * STEPS_PER_EPOCH


@pytest.fixture(scope="module")
def mnist(tfds_data_dir, shared_data_dir) -> tuple[np.ndarray, np.ndarray]:
  """3000 training and 500 validation images (from the end of `train`)."""
  images = sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))
  return images[:3000], images[-500:]


def read_metrics(model_dir: Path) -> list[dict[str, float]]:
  with open(model_dir / run_folder.METRICS_FILE) as f:
    return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def comparable(row: dict[str, float]) -> dict[str, float]:
  """A metrics row without its timings."""
  return {key: value for key, value in row.items() if key not in callbacks.TIMING_FIELDS}


def run(model_dir: Path, mnist, *, total_steps=None, model_config=RESUME_MODEL,
        train_config=RESUME_TRAIN) -> training.TrainingResult:
  train_images, validation_images = mnist
  return training.train(model_config, train_config, train_images=train_images,
                        validation_images=validation_images, model_dir=model_dir,
                        total_steps=total_steps, verbose=0)


def assert_same_state(first: training.TrainingResult, second: training.TrainingResult):
  """Weights, seed states, optimizer slots: bit for bit."""
  pairs = [*zip(first.model.variables, second.model.variables),
           *zip(first.model.optimizer.variables, second.model.optimizer.variables)]
  assert len(pairs) > 20
  for a, b in pairs:
    # Optimizer paths carry a per-process counter (adam_3/...); compare the rest.
    assert a.path.split("/", 1)[-1] == b.path.split("/", 1)[-1]
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist) -> tuple[training.TrainingResult, Path]:
  model_dir = tmp_path_factory.mktemp("uninterrupted")
  return run(model_dir, mnist), model_dir


def test_training_raises_the_validation_elbo(tmp_path, mnist):
  model_config, train_config = config_lib.preset("modern", "mnist", 3000)
  model_config = dataclasses.replace(model_config, hidden_units=(256, 256), latent_dim=10)
  train_config = dataclasses.replace(train_config, epochs=10, updates_per_call=10)
  validation = pipeline.evaluation_array(mnist[1], train_config.binarization)
  untrained = evaluation.evaluate_elbo(learners.build_model(model_config, train_config),
                                       validation)["elbo"]

  result = run(tmp_path, mnist, model_config=model_config, train_config=train_config)

  assert result.resumed_from_step == 0 and result.steps == 300
  rows = read_metrics(tmp_path)
  assert [row["epoch"] for row in rows] == list(range(10))
  assert [row["steps"] for row in rows] == [30 * (epoch + 1) for epoch in range(10)]
  assert [row["examples_seen"] for row in rows] == [3000 * (epoch + 1) for epoch in range(10)]
  for row, logs in zip(rows, result.history):
    assert row["val_elbo"] == pytest.approx(logs["val_elbo"])
    assert row["elbo"] == pytest.approx(row["reconstruction"] - row["kl"], abs=1e-3)
    assert row["val_elbo"] == pytest.approx(row["val_reconstruction"] - row["val_kl"], abs=1e-3)
  val_elbo = [row["val_elbo"] for row in rows]
  # Measured: about -545 untrained, -245 after one epoch, -155 after ten.
  assert untrained < -540
  assert val_elbo[-1] - val_elbo[0] > 50, val_elbo
  assert val_elbo[-1] > -175, val_elbo
  assert val_elbo[-1] > max(val_elbo[:5])
  # The final checkpoint holds the trained weights.
  restored = training.load_trained_model(tmp_path)
  assert int(restored.optimizer.iterations.numpy()) == 300
  for a, b in zip(restored.trainable_variables, result.model.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_resuming_mid_epoch_is_bit_exact(tmp_path, mnist, uninterrupted):
  reference, reference_dir = uninterrupted
  first = run(tmp_path, mnist, total_steps=50)  # stops 20 steps into the second epoch
  assert first.steps == 50
  resumed = run(tmp_path, mnist)
  assert resumed.resumed_from_step == 50 and resumed.steps == TOTAL_STEPS

  assert_same_state(reference, resumed)
  expected = [comparable(row) for row in read_metrics(reference_dir)]
  assert [row["steps"] for row in expected] == [30, 60, 90]
  rows = [comparable(row) for row in read_metrics(tmp_path)]
  # The stop at step 50 ran validation and logged a row for the part-epoch;
  # every row at an epoch end matches the uninterrupted run exactly.
  assert [row for row in rows if row["steps"] % STEPS_PER_EPOCH == 0] == expected
  assert [row["steps"] for row in rows if row["steps"] % STEPS_PER_EPOCH] == [50]
  assert tf.train.latest_checkpoint(tmp_path / run_folder.CHECKPOINT_DIR).endswith(
      f"ckpt-{TOTAL_STEPS}")


@pytest.fixture(scope="module")
def resumed_at_an_epoch_end(tmp_path_factory, mnist) -> tuple[training.TrainingResult, Path]:
  model_dir = tmp_path_factory.mktemp("resumed_at_an_epoch_end")
  assert run(model_dir, mnist, total_steps=2 * STEPS_PER_EPOCH).steps == 2 * STEPS_PER_EPOCH
  resumed = run(model_dir, mnist)
  assert resumed.resumed_from_step == 2 * STEPS_PER_EPOCH
  return resumed, model_dir


def test_resuming_at_an_epoch_end_trains_identically(uninterrupted, resumed_at_an_epoch_end):
  reference, reference_dir = uninterrupted
  resumed, model_dir = resumed_at_an_epoch_end
  for a, b in zip(reference.model.trainable_variables, resumed.model.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  training_columns = ("epoch", "steps", "elbo", "reconstruction", "kl")
  assert ([{k: row[k] for k in training_columns} for row in read_metrics(model_dir)]
          == [{k: row[k] for k in training_columns} for row in read_metrics(reference_dir)])


def test_resuming_at_an_epoch_end_validates_identically(uninterrupted, resumed_at_an_epoch_end):
  reference, reference_dir = uninterrupted
  resumed, model_dir = resumed_at_an_epoch_end
  assert [comparable(row) for row in read_metrics(model_dir)] == [
      comparable(row) for row in read_metrics(reference_dir)]
  assert_same_state(reference, resumed)


def test_rows_logged_after_the_last_checkpoint_are_not_repeated(
    uninterrupted, mnist, tmp_path):
  """A kill after an epoch's row was written but before its checkpoint."""
  _, reference_dir = uninterrupted
  model_dir = tmp_path / "run"
  shutil.copytree(reference_dir, model_dir)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(),
                                       model_dir / run_folder.CHECKPOINT_DIR, max_to_keep=None)
  kept = manager.checkpoints[-2]  # ckpt-80, mid-epoch 3, whose row came later
  tf.compat.v1.train.update_checkpoint_state(
      str(model_dir / run_folder.CHECKPOINT_DIR), kept,
      all_model_checkpoint_paths=manager.checkpoints[:-1])
  assert len(read_metrics(model_dir)) == 3

  resumed = run(model_dir, mnist)
  assert resumed.resumed_from_step == int(kept.rsplit("-", 1)[1]) < TOTAL_STEPS
  assert [comparable(row) for row in read_metrics(model_dir)] == [
      comparable(row) for row in read_metrics(reference_dir)]


def test_resuming_with_other_settings_is_refused(uninterrupted, mnist):
  _, model_dir = uninterrupted
  saved = (model_dir / run_folder.CONFIG_FILE).read_text()
  with pytest.raises(run_folder.ConfigMismatchError,
                     match=r"\(model\.latent_dim: saved 5, requested 6\); use another "
                           r"--model_dir to start a new run"):
    run(model_dir, mnist, model_config=dataclasses.replace(RESUME_MODEL, latent_dim=6))
  with pytest.raises(run_folder.ConfigMismatchError,
                     match=r"train\.learning_rate: saved 0\.001, requested 0\.002; "
                           r"train\.seed: saved 0, requested 1\)"):
    run(model_dir, mnist,
        train_config=dataclasses.replace(RESUME_TRAIN, learning_rate=0.002, seed=1))
  assert (model_dir / run_folder.CONFIG_FILE).read_text() == saved
  assert json.loads(saved) == json.loads(config_lib.dumps(RESUME_MODEL, RESUME_TRAIN))
  # `epochs` only says where to stop, so it may change.
  run_folder.save_or_check_config(model_dir, RESUME_MODEL,
                                  dataclasses.replace(RESUME_TRAIN, epochs=7))


def test_steps_must_be_whole_blocks(tmp_path, mnist):
  with pytest.raises(ValueError, match=r"steps \(55\) must be a multiple of updates_per_call "
                                       r"\(10\)"):
    run(tmp_path, mnist, total_steps=55)


def test_too_few_examples_for_one_block(tmp_path, mnist):
  with pytest.raises(ValueError, match="999 training examples do not fill 10 minibatch"):
    run(tmp_path, (mnist[0][:999], mnist[1]))
  assert not (tmp_path / run_folder.CONFIG_FILE).exists()


def test_gaussian_decoder_learns_frey_face(tmp_path, tfds_data_dir, shared_data_dir):
  images = sources.load_images("frey_face", "train", tfds_data_dir, str(shared_data_dir))
  train_images, validation_images = pipeline.split_validation(
      images, sources.NUM_VALIDATION["frey_face"])
  assert train_images.shape == (1565, 28, 20)
  model_config, train_config = config_lib.preset("paper", "frey_face", len(train_images))
  assert model_config.likelihood == "gaussian" and train_config.binarization == "none"
  # 1565 faces fill 3 blocks of 5 minibatches: 15 Adagrad steps per epoch.
  train_config = dataclasses.replace(train_config, epochs=8, updates_per_call=5)
  validation = pipeline.evaluation_array(validation_images, "none")
  untrained = evaluation.evaluate_elbo(learners.build_model(model_config, train_config),
                                       validation)["elbo"]

  result = run(tmp_path, (train_images, validation_images), model_config=model_config,
               train_config=train_config)

  assert result.steps == 8 * 15
  val_elbo = [logs["val_elbo"] for logs in result.history]
  # Measured: -526 untrained (unit variances), about -260 after one epoch and
  # +530 after eight, once the learned variances shrink below 1/(2 pi): pixel
  # densities above 1 give a positive log-likelihood.
  assert untrained < -500
  assert val_elbo[-1] - val_elbo[0] > 500, val_elbo
  assert val_elbo[-1] > 400, val_elbo
  assert result.history[-1]["val_reconstruction"] > 400
  decoded_mean = result.model.decode(result.model.encode(validation).mean()).mean().numpy()
  assert decoded_mean.min() > 0.0 and decoded_mean.max() < 1.0
  # Reconstructions are close to the faces (grey levels in [0, 1]).
  assert np.abs(decoded_mean - validation).mean() < 0.1
