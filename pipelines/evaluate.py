"""Evaluates a trained VAE: test ELBO and importance-sampled log p(x).

  python -m pipelines.evaluate --model_dir=runs/mnist_nz20 --num_importance_samples=5000

log p(x) is estimated with k importance samples from q(z|x) (Burda et al.
2015), streamed in chunks so 10,000 images x 5,000 samples fit in memory.
Writes <model_dir>/evaluation.json and prints a short report.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

# First, before anything loads TensorFlow: a quiet console (see the module).
from pipelines import console  # noqa: F401

from absl import app, flags

from pipelines import flags_common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run folder written by pipelines.train.")
flags.DEFINE_enum("split", "test", ["test", "validation"], "Data to evaluate on.")
flags.DEFINE_integer("num_importance_samples", 5000, "k, importance samples per image.",
                     lower_bound=1)
flags.DEFINE_integer("num_examples", None, "Evaluate on the first N images only.",
                     lower_bound=1)
flags_common.define_seed_flag("Seed for the Monte Carlo estimates.")
flags_common.define_data_flags()
flags.adopt_module_key_flags(flags_common)
flags.mark_flag_as_required("model_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from vae_tf import evaluation, run_folder, training
  from vae_tf.data import pipeline, sources, splits
  from vae_tf.learner_base import AmortizedLearner

  started = time.time()
  try:
    model = training.load_trained_model(FLAGS.model_dir)
    if not isinstance(model, AmortizedLearner):
      raise ValueError(f"{FLAGS.model_dir} holds an MCEM run, and MCEM has no encoder: the "
                       "ELBO and IS log p(x) need q(z|x); use pipelines.reproduce figure3 for "
                       "its marginal likelihood")
    _, train_config = run_folder.load_configs(FLAGS.model_dir)
    data = splits.load_splits(train_config.dataset, data_dir=FLAGS.data_dir,
                              manual_dir=FLAGS.manual_dir, with_test=FLAGS.split == "test")
    images = data.test if FLAGS.split == "test" else data.validation
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
  run_folder.write_atomically(pathlib.Path(FLAGS.model_dir) / "evaluation.json",
                              json.dumps(report, indent=2))
  print(f"{train_config.dataset} {FLAGS.split} ({len(x)} images, "
        f"{train_config.binarization} binarization), after {report['steps']} SGD steps:\n"
        f"  ELBO                      {report['elbo']:9.2f} nats "
        f"(reconstruction {report['reconstruction']:.2f}, KL {report['kl']:.2f})\n"
        f"  log p(x), IS k={FLAGS.num_importance_samples:<6}    {report['log_likelihood']:9.2f} nats\n"
        f"  outputs in {FLAGS.model_dir} (evaluation.json, *.png, metrics.csv, tensorboard/)")


if __name__ == "__main__":
  app.run(main)
