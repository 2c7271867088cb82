"""Searches VAE hyperparameters, latent dimensionality first, with KerasTuner.

  python -m pipelines.tune --dataset=mnist --tuner=hyperband --max_epochs=9

Trials are scored by their best validation ELBO. When the search ends, the
best model is restored from its trial's checkpoint, evaluated on the test
set, written as a run folder (<tuner_dir>/<project_name>/best_model) and
exported for serving. Rerunning the same command resumes an interrupted
search without repeating finished trials; --overwrite starts afresh.

Distributed: start one chief and any number of workers with the same flags
and a shared --tuner_dir, and KerasTuner's environment variables:
  KERASTUNER_TUNER_ID=chief    KERASTUNER_ORACLE_IP=0.0.0.0  KERASTUNER_ORACLE_PORT=8000
  KERASTUNER_TUNER_ID=worker0  KERASTUNER_ORACLE_IP=<chief>  KERASTUNER_ORACLE_PORT=8000
The chief runs the oracle and writes the results; workers run trials.
"""

from __future__ import annotations

import json
import sys
import time

_START_TIME = time.time()
# First, before anything loads TensorFlow: a quiet console (see the module).
from pipelines import console  # noqa: F401

from absl import app, flags

from pipelines import flags_common
from vae_tf import config as config_lib
from vae_tf import search_space as space_lib
from vae_tf.tuning import roles

FLAGS = flags.FLAGS

flags_common.define_data_flags(dataset_help="Data set to tune on.")
flags_common.define_training_flags(preset_help="Settings not searched come from this preset "
                                   "(see pipelines.train).")
flags_common.define_seed_flag("Seed of the tuner and of every trial's training.")
flags_common.define_export_flags(
    default_base="<best_model>/export",
    export_help="Export the best model as a SavedModel version for serving.")
flags.adopt_module_key_flags(flags_common)
flags.DEFINE_integer("validation_examples", None, "Score trials on the first N validation "
                     "examples only.", lower_bound=1)
flags.DEFINE_integer("test_examples", None, "Evaluate the best model on the first N test "
                     "examples only.", lower_bound=1)

flags.DEFINE_string("search_space", None, "JSON or YAML file mapping parameter to a list of "
                    "choices, a single value, or {min, max, step, sampling}. Default: latent_dim "
                    "2..200, hidden_units 100/200/500, learning_rate 0.01/0.02/0.1.")
flags.DEFINE_list("latent_dims", None, "Choices of latent_dim (overrides the file).")
flags.DEFINE_list("hidden_units", None, "Choices of units per hidden layer.")
flags.DEFINE_list("hidden_layers", None, "Choices of the number of hidden layers.")
flags.DEFINE_list("learning_rates", None, "Choices of step size.")
flags.DEFINE_list("estimators", None, "Choices of training objective (A, B, iwae).")
flags.DEFINE_list("sample_counts", None, "Choices of num_samples (L for A and B, k for iwae).")
flags.DEFINE_list("activations", None, "Choices of hidden activation.")

flags.DEFINE_enum("tuner", "hyperband", space_lib.TUNERS, "Search algorithm.")
flags.DEFINE_integer("max_trials", 10, "Trials for --tuner=bayesian or random (Hyperband's "
                     "count follows from --max_epochs and --hyperband_factor).", lower_bound=1)
flags.DEFINE_integer("max_epochs", 10, "Most epochs one configuration trains.", lower_bound=1)
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor.", lower_bound=2)
flags.DEFINE_integer("hyperband_iterations", 1, "Hyperband's full passes.", lower_bound=1)
flags.DEFINE_integer("early_stopping_patience", 3, "Stop a trial after N epochs without a "
                     "better validation ELBO; 0 turns early stopping off.", lower_bound=0)
flags.DEFINE_string("tuner_dir", "runs/tune", "Folder of searches; share it between the chief "
                    "and the workers.")
flags.DEFINE_string("project_name", None, "Search folder inside --tuner_dir (default: "
                    "<dataset>_<tuner>).")
flags.DEFINE_bool("overwrite", False, "Delete the search in --tuner_dir/--project_name and "
                  "start afresh (default: resume it).")

flags.DEFINE_integer("rescore_top", 0, "Re-rank the N best trials by importance-sampled "
                     "validation log-likelihood before choosing the best model.", lower_bound=0)
flags.DEFINE_integer("num_importance_samples", 200, "k for the importance-sampled "
                     "log-likelihood (rescoring and the test report).", lower_bound=1)
flags.DEFINE_float("worker_timeout_seconds", 900, "Chief only: a worker silent this long "
                   "(workers report every epoch) is lost and its trial retried; with no worker "
                   "heard from this long the chief stops.", lower_bound=1)

_LIST_FLAGS = {  # flag -> (search-space parameter, type of its values)
    "latent_dims": ("latent_dim", int),
    "hidden_units": ("hidden_units", int),
    "hidden_layers": ("hidden_layers", int),
    "learning_rates": ("learning_rate", float),
    "estimators": ("estimator", str),
    "sample_counts": ("num_samples", int),
    "activations": ("activation", str),
}


def _parses_as(kind: type):
  def check(values: list[str] | None) -> bool:
    if values is None:
      return True
    try:
      return bool(values) and all(kind(value) is not None for value in values)
    except ValueError:
      return False
  return check


for _name, (_, _kind) in _LIST_FLAGS.items():
  if _kind is not str:
    flags.register_validator(_name, _parses_as(_kind), f"must be a comma-separated list of "
                             f"{'integers' if _kind is int else 'numbers'}")


def search_space_spec() -> dict:
  """The search space as given: the file (or the default), then the flags."""
  spec = (space_lib.load_search_space_file(FLAGS.search_space) if FLAGS.search_space
          else dict(space_lib.DEFAULT_SEARCH_SPACE))
  for flag, (parameter, kind) in _LIST_FLAGS.items():
    if FLAGS[flag].value is not None:
      spec[parameter] = [kind(value) for value in FLAGS[flag].value]
  return spec


def _check_flags() -> None:
  if FLAGS.tuner == "hyperband" and FLAGS["max_trials"].present:
    raise ValueError("--max_trials applies to --tuner=bayesian or random; Hyperband's trial "
                     "count follows from --max_epochs, --hyperband_factor and "
                     "--hyperband_iterations")


def _check_role(role: str) -> None:
  if role == "worker" and FLAGS.overwrite:
    raise ValueError("--overwrite would delete the chief's search; only the chief (or a "
                     "single process) may pass it")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    _check_flags()
    space = space_lib.parse_search_space(search_space_spec())
    role = roles.distributed_role()
    _check_role(role)
  except ValueError as error:
    sys.exit(f"error: {error}")
  # Heavy imports after checking flags, the search space and the role, so
  # those errors are instant.
  import dataclasses

  from vae_tf.data import sources, splits
  from vae_tf.tuning import distributed, hypermodel as hypermodel_lib, tuners

  try:
    # Workers only train; the chief or a single process also tests the best model.
    data = splits.load_splits(FLAGS.dataset, data_dir=FLAGS.data_dir,
                              manual_dir=FLAGS.manual_dir, with_test=role != "worker",
                              train_examples=FLAGS.train_examples,
                              validation_examples=FLAGS.validation_examples,
                              test_examples=FLAGS.test_examples)
    train_images, validation_images = data.train, data.validation
    base_model, base_train = config_lib.preset(FLAGS.preset, FLAGS.dataset, len(train_images))
    base_train = dataclasses.replace(base_train, epochs=FLAGS.max_epochs, seed=FLAGS.seed,
                                     updates_per_call=FLAGS.updates_per_call)
    hypermodel = hypermodel_lib.VAEHyperModel(base_model, base_train, space, len(train_images))
    project_name = FLAGS.project_name or f"{FLAGS.dataset}_{FLAGS.tuner}"
    tuner = tuners.make_tuner(
        FLAGS.tuner, hypermodel, directory=FLAGS.tuner_dir, project_name=project_name,
        max_epochs=FLAGS.max_epochs, max_trials=FLAGS.max_trials,
        hyperband_factor=FLAGS.hyperband_factor,
        hyperband_iterations=FLAGS.hyperband_iterations, seed=FLAGS.seed,
        overwrite=FLAGS.overwrite)
    tuners.record_settings(tuner.project_dir, {
        "dataset": FLAGS.dataset,
        "train_examples": len(train_images),
        "validation_examples": len(validation_images),
        "base_model": base_model.to_dict(),
        "base_train": base_train.to_dict(),
        "search_space": space_lib.search_space_to_dict(space),
        "tuner": FLAGS.tuner,
        "max_epochs": FLAGS.max_epochs,
        "hyperband_factor": FLAGS.hyperband_factor,
        "hyperband_iterations": FLAGS.hyperband_iterations,
        "early_stopping_patience": FLAGS.early_stopping_patience,
        "seed": FLAGS.seed,
    })
  except (ValueError, RuntimeError, sources.DataUnavailableError) as error:
    sys.exit(f"error: {error}")

  print(f"{role}: search {tuner.project_dir} ({FLAGS.tuner}) over "
        f"{json.dumps(space_lib.search_space_to_dict(space))}", flush=True)
  if role == "chief":
    outcome = distributed.serve_oracle(tuner, FLAGS.worker_timeout_seconds)
    for tuner_id in outcome.lost_workers:
      print(f"chief: lost worker {tuner_id}; its trial went back for retry")
    if not outcome.finished:
      print(f"chief: no worker for {FLAGS.worker_timeout_seconds:g} s, so the search is "
            "incomplete; restart the chief and workers to resume it (finished trials are "
            "kept)")
  else:
    callbacks = tuners.early_stopping(FLAGS.early_stopping_patience)
    tuner.search(train_images, validation_data=validation_images, epochs=FLAGS.max_epochs,
                 callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
  if role == "worker":
    print(f"worker {tuner.tuner_id}: no trials left; done in {time.time() - _START_TIME:.1f} s")
    return
  report_results(tuner, hypermodel, validation_images, data.test, role)


def report_results(tuner, hypermodel, validation_images, test_images, role: str) -> None:
  """Summary table and plot, then the best model: restored, tested, exported."""
  from pathlib import Path

  import numpy as np

  from vae_tf import artifacts, curve_charts, evaluation, run_folder
  from vae_tf.data import pipeline
  from vae_tf.tuning import results as search_results

  project = Path(tuner.project_dir)
  rows = search_results.trial_rows(tuner, hypermodel)
  completed = [row for row in rows if row.status == "COMPLETED"]
  if not completed:
    sys.exit(f"error: no trial of {project} has completed")
  binarization = hypermodel.base_train.binarization
  x_validation = pipeline.evaluation_array(validation_images, binarization)
  by_id = {row.trial_id: row for row in rows}
  candidates = tuner.oracle.get_best_trials(max(1, FLAGS.rescore_top))
  if FLAGS.rescore_top:
    for trial in candidates:
      model = tuner.load_model(trial)
      by_id[trial.trial_id].val_log_likelihood = float(np.mean(
          evaluation.importance_sampled_log_likelihood(
              model, x_validation, FLAGS.num_importance_samples, seed=FLAGS.seed)))
    candidates.sort(key=lambda t: by_id[t.trial_id].val_log_likelihood, reverse=True)
  best_trial = candidates[0]
  best_row = by_id[best_trial.trial_id]

  epochs_run = sum(row.epochs or 0 for row in rows)
  notes = [f"best: trial {best_row.trial_id}, {best_row.hyperparameters}, validation ELBO "
           f"{best_row.best_val_elbo:.2f} nats" + (
               f", validation IS log-likelihood (k={FLAGS.num_importance_samples}) "
               f"{best_row.val_log_likelihood:.2f} nats" if FLAGS.rescore_top else ""),
           f"{len(completed)} of {len(rows)} trials completed, {epochs_run} epochs in all"]
  grid = space_lib.grid_size(hypermodel.search_space)
  if FLAGS.tuner == "hyperband" and grid:
    grid_epochs = grid * FLAGS.max_epochs
    notes.append(f"a plain grid over the same {grid} configurations at {FLAGS.max_epochs} "
                 f"epochs each would run {grid_epochs} epochs; Hyperband ran {epochs_run} "
                 f"({grid_epochs - epochs_run} saved, {1 - epochs_run / grid_epochs:.0%})")
  fixed = {**hypermodel.base_model.to_dict(), **hypermodel.base_train.to_dict()}
  notes.append("not searched: " + ", ".join(
      f"{key}={value}" for key, value in fixed.items()
      if key not in hypermodel.search_space and key not in ("hidden_units", "epochs")))
  parameters = list(hypermodel.search_space)
  written = search_results.write_summary(rows, parameters, project, notes)
  base_latent_dim = hypermodel.base_model.latent_dim
  points = [(row.hyperparameters.get("latent_dim", base_latent_dim), row.best_val_elbo)
            for row in completed]
  written.append(curve_charts.save_best_by_parameter(
      [x for x, _ in points], [y for _, y in points], project / search_results.PLOT_FILE,
      xlabel="latent dimensionality Nz", ylabel="best validation ELBO (nats)",
      title=f"{FLAGS.dataset}: {FLAGS.tuner} search", log_x=True))

  model = tuner.load_model(best_trial)
  best_dir = search_results.save_best_model(model, hypermodel, best_trial.hyperparameters,
                                            project / search_results.BEST_MODEL_DIR)
  x_test = pipeline.evaluation_array(test_images, binarization)
  test_elbo = evaluation.evaluate_elbo(model, x_test, seed=FLAGS.seed)["elbo"]
  test_log_likelihood = float(np.mean(evaluation.importance_sampled_log_likelihood(
      model, x_test, FLAGS.num_importance_samples, seed=FLAGS.seed)))
  artifacts.save_artifacts(model, best_dir, validation_images, binarization, FLAGS.seed)
  exported = (artifacts.export_run(model, best_dir, FLAGS.export_base, FLAGS.model_name)
              if FLAGS.export else None)
  results = {
      "best_trial": best_row.trial_id,
      "hyperparameters": best_row.hyperparameters,
      "val_elbo": best_row.best_val_elbo,
      "val_log_likelihood": best_row.val_log_likelihood,
      "test_examples": len(x_test),
      "test_elbo": test_elbo,
      "num_importance_samples": FLAGS.num_importance_samples,
      "test_log_likelihood": test_log_likelihood,
      "trials": len(rows),
      "completed_trials": len(completed),
      "epochs": epochs_run,
      "best_model": str(best_dir),
      "export": str(exported) if exported else None,
  }
  run_folder.write_atomically(project / "results.json", json.dumps(results, indent=2))
  print(f"{role}: {len(completed)}/{len(rows)} trials completed; best trial "
        f"{best_row.trial_id} {best_row.hyperparameters}: validation ELBO "
        f"{best_row.best_val_elbo:.2f}, test ELBO {test_elbo:.2f}, test log p(x) "
        f"(IS k={FLAGS.num_importance_samples}) {test_log_likelihood:.2f} nats")
  print(f"wrote {', '.join(str(path) for path in written)}")
  print(f"best model {best_dir}" + (f"; exported {exported}" if exported else ""))
  print(f"done in {time.time() - _START_TIME:.1f} s")


if __name__ == "__main__":
  app.run(main)
