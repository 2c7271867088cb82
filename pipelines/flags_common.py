"""Flags that several pipelines share, defined once.

A pipeline calls the `define_*` functions it needs at import, then
`flags.adopt_module_key_flags(flags_common)`, so that --helpshort lists these
flags as its own. Imports nothing heavy: flag errors stay instant.
"""

from __future__ import annotations

from absl import flags

from vae_tf import config as config_lib


def define_data_flags(dataset_help: str | None = None) -> None:
  """--data_dir and --manual_dir; --dataset too, when given its help."""
  if dataset_help is not None:
    flags.DEFINE_enum("dataset", "mnist", config_lib.DATASETS, dataset_help)
  flags.DEFINE_string("data_dir", None, "TFDS data folder (default: TFDS's, or $TFDS_DATA_DIR).")
  flags.DEFINE_string("manual_dir", None, "Folder with the raw data files, for preparing the "
                      "data offline (default: $VAE_TF_MANUAL_DIR).")


def define_seed_flag(help_text: str) -> None:
  flags.DEFINE_integer("seed", 0, help_text)


def define_training_flags(preset_help: str) -> None:
  """--preset, --train_examples and --updates_per_call: how a model trains."""
  flags.DEFINE_enum("preset", "paper", config_lib.PRESETS, preset_help)
  flags.DEFINE_integer("train_examples", None, "Train on the first N training examples only.",
                       lower_bound=1)
  flags.DEFINE_integer("updates_per_call", 50, "SGD updates fused into one compiled call: a "
                       "speed knob; every update still takes one minibatch of M (the random "
                       "draws, and which examples an epoch drops, depend on it).", lower_bound=1)


def define_export_flags(default_base: str, export_help: str | None = None) -> None:
  """--export_base and --model_name; --export too, when given its help."""
  if export_help is not None:
    flags.DEFINE_bool("export", True, export_help)
  flags.DEFINE_string("export_base", None, f"Folder of served models (default: {default_base}); "
                      "the version goes to <export_base>/<model_name>/N.")
  flags.DEFINE_string("model_name", "vae", "Served model name: the folder under --export_base.")
  flags.register_validator("model_name", config_lib.is_model_name,
                           "must be letters, digits, '_', '.' or '-', not starting with '.' or "
                           "'-'")
