"""Exports a trained run as a SavedModel version for TensorFlow Serving.

  python -m pipelines.export --model_dir=runs/make_run

writes <export_base>/<model_name>/<version>/ (default runs/make_run/export/vae/N,
N one above the newest version there). Training exports the same way when it
finishes; this entry point re-exports, e.g. under another name or version.
"""

from __future__ import annotations

import sys

# First, before anything loads TensorFlow: a quiet console (see the module).
from pipelines import console  # noqa: F401

from absl import app, flags

from pipelines import flags_common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run folder written by pipelines.train.", required=True)
flags_common.define_export_flags(default_base="<model_dir>/export")
flags.adopt_module_key_flags(flags_common)
flags.DEFINE_integer("version", None, "Version number (default: one above the newest).",
                     lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from vae_tf import artifacts, training

  try:
    model = training.load_trained_model(FLAGS.model_dir)
    path = artifacts.export_run(model, FLAGS.model_dir, FLAGS.export_base, FLAGS.model_name,
                                FLAGS.version)
  except (FileNotFoundError, FileExistsError, ValueError) as error:
    sys.exit(f"error: {error}")
  print(f"exported {path}")


if __name__ == "__main__":
  app.run(main)
