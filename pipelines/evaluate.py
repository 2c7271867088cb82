"""Evaluates a trained VAE: test ELBO and importance-sampled log p(x).

  python -m pipelines.evaluate --model_dir=runs/mnist_nz20 --num_importance_samples=5000

log p(x) is estimated with k importance samples from q(z|x) (Burda et al.
2015), streamed in chunks so 10,000 images x 5,000 samples fit in memory.
Writes <model_dir>/evaluation.json and prints a short report.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

# TensorFlow's C++ start-up chatter would bury a one-line error.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run folder written by pipelines.train.")
flags.DEFINE_enum("split", "test", ["test", "validation"], "Data to evaluate on.")
flags.DEFINE_integer("num_importance_samples", 5000, "k, importance samples per image.",
                     lower_bound=1)
flags.DEFINE_integer("num_examples", None, "Evaluate on the first N images only.",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed for the Monte Carlo estimates.")
flags.DEFINE_string("data_dir", None, "TFDS data folder (default: TFDS's, or $TFDS_DATA_DIR).")
flags.DEFINE_string("manual_dir", None, "Folder with the raw data files, for preparing the "
                    "data offline (default: $VAE_TF_MANUAL_DIR).")
flags.mark_flag_as_required("model_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from vae_tf import evaluation, training
  from vae_tf.data import pipeline, sources

  started = time.time()
  try:
    model = training.load_trained_model(FLAGS.model_dir)
    _, train_config = training.load_configs(FLAGS.model_dir)
    if FLAGS.split == "test":
      images = sources.load_images(train_config.dataset, "test", FLAGS.data_dir, FLAGS.manual_dir)
    else:
      images = pipeline.split_validation(
          sources.load_images(train_config.dataset, "train", FLAGS.data_dir, FLAGS.manual_dir),
          sources.NUM_VALIDATION[train_config.dataset])[1]
  except (FileNotFoundError, ValueError, sources.DataUnavailableError) as error:
    sys.exit(f"error: {error}")
  x = pipeline.evaluation_array(images[:FLAGS.num_examples], train_config.binarization)
  elbo = evaluation.evaluate_elbo(model, x, seed=FLAGS.seed)
  log_likelihood = evaluation.importance_sampled_log_likelihood(
      model, x, num_samples=FLAGS.num_importance_samples, seed=FLAGS.seed)
  report = {
      "dataset": train_config.dataset,
      "split": FLAGS.split,
      "binarization": train_config.binarization,
      "num_examples": len(x),
      "steps": int(model.optimizer.iterations.numpy()),
      "elbo": elbo["elbo"],
      "reconstruction": elbo["reconstruction"],
      "kl": elbo["kl"],
      "num_importance_samples": FLAGS.num_importance_samples,
      "log_likelihood": float(log_likelihood.mean()),
      "seconds": time.time() - started,
  }
  training.write_atomically(pathlib.Path(FLAGS.model_dir) / "evaluation.json",
                            json.dumps(report, indent=2))
  print(f"{train_config.dataset} {FLAGS.split} ({len(x)} images, "
        f"{train_config.binarization} binarization), after {report['steps']} SGD steps:\n"
        f"  ELBO                      {report['elbo']:9.2f} nats "
        f"(reconstruction {report['reconstruction']:.2f}, KL {report['kl']:.2f})\n"
        f"  log p(x), IS k={FLAGS.num_importance_samples:<6}    {report['log_likelihood']:9.2f} nats\n"
        f"  outputs in {FLAGS.model_dir} (evaluation.json, *.png, metrics.csv, tensorboard/)")


if __name__ == "__main__":
  app.run(main)
