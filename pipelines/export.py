"""Exports a trained run as a SavedModel version for TensorFlow Serving.

  python -m pipelines.export --model_dir=runs/make_run

writes <export_base>/<model_name>/<version>/ (default runs/make_run/export/vae/N,
N one above the newest version there). Training exports the same way when it
finishes; this entry point re-exports, e.g. under another name or version.
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ start-up chatter would bury a one-line error.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from vae_tf import config as config_lib

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run folder written by pipelines.train.", required=True)
flags.DEFINE_string("export_base", None, "Folder of served models (default: <model_dir>/export).")
flags.DEFINE_string("model_name", "vae", "Served model name: the folder under --export_base.")
flags.DEFINE_integer("version", None, "Version number (default: one above the newest).",
                     lower_bound=1)
flags.register_validator("model_name", config_lib.is_model_name,
                         "must be letters, digits, '_', '.' or '-', not starting with '.' or '-'")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from vae_tf import training

  try:
    model = training.load_trained_model(FLAGS.model_dir)
    path = training.export_run(model, FLAGS.model_dir, FLAGS.export_base, FLAGS.model_name,
                               FLAGS.version)
  except (FileNotFoundError, FileExistsError, ValueError) as error:
    sys.exit(f"error: {error}")
  print(f"exported {path}")


if __name__ == "__main__":
  app.run(main)
