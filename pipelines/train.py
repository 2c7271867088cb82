"""Trains a VAE with AEVB (Kingma & Welling 2013) on MNIST or Frey Face.

  python -m pipelines.train --dataset=mnist --latent_dim=20 --model_dir=runs/mnist

Flags left unset take their value from --preset (`paper`: the paper's
settings; `modern`: ReLU, Adam, two hidden layers, dynamic binarization).
Rerunning with the same --model_dir resumes from the last checkpoint.
Offline, point --manual_dir (or $VAE_TF_MANUAL_DIR) at the raw data files.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

_START_TIME = time.time()
# First, before anything loads TensorFlow: a quiet console (see the module).
from pipelines import console  # noqa: F401

from absl import app, flags

from pipelines import flags_common
from vae_tf import config as config_lib

FLAGS = flags.FLAGS

flags_common.define_data_flags(dataset_help="Data set to train on.")
flags_common.define_training_flags(preset_help="Defaults for every flag left unset: paper "
                                   "(Kingma & Welling), modern, or iwae_paper (Burda et al. "
                                   "2015).")
flags_common.define_seed_flag("Seed for initialisation, shuffling, binarization and sampling.")
flags_common.define_export_flags(
    default_base="<model_dir>/export",
    export_help="Export a SavedModel version for serving when training ends.")
flags.adopt_module_key_flags(flags_common)
flags.DEFINE_enum("method", None, config_lib.METHODS, "Learning algorithm: aevb (the paper's), "
                  "or its baselines wake_sleep and mcem (mcem needs --train_examples).")
flags.DEFINE_string("model_dir", None, "Run folder: checkpoints, logs, images, saved model. "
                    "Default: runs/<dataset>_nz<latent_dim>.")
flags.DEFINE_integer("latent_dim", None, "Nz, the number of latent variables.", lower_bound=1)
flags.DEFINE_list("hidden_units", None, "Units per hidden layer, e.g. 500 or 500,500.")
flags.DEFINE_enum("activation", None, config_lib.ACTIVATIONS, "Hidden-layer activation.")
flags.DEFINE_float("init_stddev", None, "Stddev of the N(0, s^2) weight initialiser; 0 keeps "
                   "Keras' Glorot default.", lower_bound=0)
flags.DEFINE_enum("estimator", None, config_lib.ESTIMATORS, "Training objective: SGVB "
                  "estimator A (eq. 6, Monte Carlo KL), B (eq. 7, analytic KL), or iwae, the "
                  "k-sample importance-weighted bound of Burda et al. (2015).")
flags.DEFINE_integer("num_samples", None, "Draws of z per datapoint: L for A and B, k for iwae.",
                     lower_bound=1)
flags.DEFINE_string("weight_decay", None, "Coefficient of 0.5*||theta||^2 per example, or "
                    "'prior' for 1/N_train, the paper's N(0, I) parameter prior.")
flags.DEFINE_enum("binarization", None, config_lib.BINARIZATIONS, "MNIST pixels: dynamic, "
                  "static, or none (grey levels, the paper's treatment).")
flags.DEFINE_enum("optimizer", None, config_lib.OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", None, "Step size (the schedule's first).", lower_bound=0)
flags.DEFINE_enum("lr_schedule", None, config_lib.LR_SCHEDULES, "Learning rate over the run's "
                  "--epochs: constant; burda (8 stages of 3^i epochs' share, rate "
                  "x10^(-i/7)); cosine or exponential decay to --lr_final_scale of it.")
flags.DEFINE_float("lr_final_scale", None, "Final learning rate of the cosine and exponential "
                   "schedules, as a fraction of --learning_rate.")
flags.DEFINE_float("adam_beta1", None, "Adam's first-moment decay.")
flags.DEFINE_float("adam_beta2", None, "Adam's second-moment decay.")
flags.DEFINE_float("adam_epsilon", None, "Adam's epsilon, added to sqrt(v).")
flags.DEFINE_bool("decoder_bias_from_data", None, "Start the decoder's output bias at the "
                  "logits of the training data's mean (Burda et al.).")
flags.DEFINE_integer("batch_size", None, "M, examples per minibatch.", lower_bound=1)
flags.DEFINE_integer("epochs", None, "Passes over the training set.", lower_bound=1)
flags.DEFINE_integer("steps", None, "Total SGD updates; overrides --epochs.", lower_bound=1)
flags.DEFINE_integer("checkpoint_every_steps", 1000, "Checkpoint every N SGD updates (and after "
                     "the last).", lower_bound=1)
flags.DEFINE_enum("strategy", "auto", config_lib.STRATEGIES, "Distribution: auto picks "
                  "multi_worker (MultiWorkerMirroredStrategy) when TF_CONFIG names several "
                  "workers, mirrored for several local GPUs, else default. --batch_size is per "
                  "replica.")


def _is_weight_decay(value: str | None) -> bool:
  if value is None or value == "prior":
    return True
  try:
    return float(value) >= 0
  except ValueError:
    return False


def _is_hidden_units(values: list[str] | None) -> bool:
  return values is None or (bool(values) and all(v.isdigit() and int(v) > 0 for v in values))


flags.register_validator("weight_decay", _is_weight_decay,
                         "must be a number >= 0 or 'prior'")
flags.register_validator("hidden_units", _is_hidden_units,
                         "must be positive integers separated by commas, e.g. 500,500")
flags.register_multi_flags_validator(
    ["dataset", "binarization"],
    lambda f: not (f["dataset"] == "frey_face" and f["binarization"] in ("dynamic", "static")),
    "--binarization applies to MNIST; Frey Face is real-valued (leave it unset or use none)")


def _weight_decay(value: str, num_train: int) -> float:
  return 1.0 / num_train if value == "prior" else float(value)


def configs_from_flags(num_train: int) -> tuple[config_lib.ModelConfig, config_lib.TrainConfig]:
  model, train = config_lib.preset(FLAGS.preset, FLAGS.dataset, num_train)
  model_overrides = {
      "latent_dim": FLAGS.latent_dim,
      "hidden_units": FLAGS.hidden_units and tuple(int(u) for u in FLAGS.hidden_units),
      "activation": FLAGS.activation,
      "estimator": FLAGS.estimator,
      "num_samples": FLAGS.num_samples,
  }
  if FLAGS.init_stddev is not None:
    model_overrides["init_stddev"] = FLAGS.init_stddev or None
  if FLAGS.weight_decay is not None:
    model_overrides["weight_decay"] = _weight_decay(FLAGS.weight_decay, num_train)
  train_overrides = {
      "method": FLAGS.method,
      "train_examples": FLAGS.train_examples,
      "binarization": FLAGS.binarization,
      "optimizer": FLAGS.optimizer,
      "learning_rate": FLAGS.learning_rate,
      "lr_schedule": FLAGS.lr_schedule,
      "lr_final_scale": FLAGS.lr_final_scale,
      "adam_beta1": FLAGS.adam_beta1,
      "adam_beta2": FLAGS.adam_beta2,
      "adam_epsilon": FLAGS.adam_epsilon,
      "decoder_bias_from_data": FLAGS.decoder_bias_from_data,
      "batch_size": FLAGS.batch_size,
      "epochs": FLAGS.epochs,
      "updates_per_call": FLAGS.updates_per_call,
      "checkpoint_every_steps": FLAGS.checkpoint_every_steps,
      "seed": FLAGS.seed,
  }
  model = dataclasses.replace(model, **{k: v for k, v in model_overrides.items() if v is not None})
  train = dataclasses.replace(train, **{k: v for k, v in train_overrides.items() if v is not None})
  return model, train


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Heavy imports after flag parsing, so --help and flag errors are instant.
  import tensorflow as tf

  from vae_tf import artifacts, distribute, learners, training
  from vae_tf.data import sources, splits

  try:
    # First: a multi-worker strategy configures TF's runtime, which must not
    # have started yet.
    strategy = distribute.make_strategy(FLAGS.strategy)
    chief = distribute.is_chief(strategy)
    data = splits.load_splits(FLAGS.dataset, data_dir=FLAGS.data_dir,
                              manual_dir=FLAGS.manual_dir, train_examples=FLAGS.train_examples)
    train_images, validation_images = data.train, data.validation
    model_config, train_config = configs_from_flags(len(train_images))
    replicas = strategy.num_replicas_in_sync
    train_config = training.fit_updates_per_call(train_config, len(train_images), strategy)
    model_dir = FLAGS.model_dir or f"runs/{FLAGS.dataset}_nz{model_config.latent_dim}"
    settings = {"model": model_config.to_dict(), "train": train_config.to_dict()}
    print(f"training {model_dir}: {json.dumps(settings)}")
    if distribute.is_distributed(strategy):
      print(f"{type(strategy).__name__}: {replicas} replicas, global batch "
            f"{train_config.batch_size * replicas}; "
            f"{'chief' if chief else 'not the chief: writes nothing to ' + model_dir}")
    # MCEM has no q(z|x): no ELBO to validate, nothing to export.
    amortized = learners.has_recognition_model(train_config.method)
    result = training.train(
        model_config, train_config, train_images=train_images,
        validation_images=validation_images if amortized else None, model_dir=model_dir, total_steps=FLAGS.steps,
        verbose=1 if sys.stdout.isatty() else 2, start_time=_START_TIME, strategy=strategy)
  except (ValueError, sources.DataUnavailableError) as error:
    sys.exit(f"error: {error}")
  except tf.errors.UnavailableError as error:
    sys.exit(f"error: lost a worker ({error.message.strip().splitlines()[0]}); restart every "
             "worker to resume from the last checkpoint")
  if not chief:
    print(f"trained {result.steps} steps in {time.time() - _START_TIME:.1f} s")
    return
  artifacts.save_artifacts(result.model, model_dir, validation_images,
                           train_config.binarization, train_config.seed)
  exported = artifacts.export_run(result.model, model_dir, FLAGS.export_base,
                                  FLAGS.model_name) if FLAGS.export and amortized else None
  final = result.history[-1] if result.history else {}
  validation = (f"validation ELBO {final['val_elbo']:.2f} nats; " if "val_elbo" in final
                else "")
  print(f"trained {result.steps} steps (resumed from {result.resumed_from_step}) in "
        f"{time.time() - _START_TIME:.1f} s; {validation}outputs in {model_dir}")
  if exported:
    print(f"exported {exported}")
  elif FLAGS.export and not amortized:
    print(f"not exported: {train_config.method} learns no encoder, which every signature needs")


if __name__ == "__main__":
  app.run(main)
