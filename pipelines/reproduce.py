"""Reproduces the figures of Kingma & Welling (2013), Auto-Encoding Variational Bayes.

  python -m pipelines.reproduce all --budget=small --output_dir=runs/reproduce_small
  python -m pipelines.reproduce figure2 figure4 --budget=tiny

One subcommand per figure or table; give one or more, or `all` (the four figures):
  figure2  lower bound against training examples seen, AEVB against wake-sleep,
           MNIST (Nz 3, 5, 10, 20, 200) and Frey Face (Nz 2, 5, 10, 20)
  figure3  log p(x) (Appendix D's estimator) against training examples seen,
           MNIST, Nz=3, 100 hidden units, N_train 1,000 and 50,000, AEVB,
           wake-sleep and Monte Carlo EM
  figure4  learned 2-D manifolds of MNIST and Frey Face
  figure5  random samples of MNIST models with Nz 2, 5, 10, 20
  iwae_table  Burda et al.'s (2015) MNIST log-likelihoods, VAE and IWAE trained
           with their recipe, obtained against published, with learning curves
           against epochs and training seconds
--budget: `tiny` (seconds per figure, for tests), `small` (every figure in
about 15 minutes on 2 cores), `medium` (the figures from 10^5 to 10^7
examples, about 2 hours on 2 cores; iwae_table: 2 hours of training) or `paper`
(the paper's 10^8 examples per curve; Burda et al.'s 3,280 epochs).
Writes CSV files, PNG plots and report.md into --output_dir. Rerunning the
same command resumes: runs continue from their checkpoints and finished
evaluation points are kept. Offline, point --manual_dir (or
$VAE_TF_MANUAL_DIR) at the raw data files.
"""

from __future__ import annotations

import os
import sys
import time

# Shared with the worker processes (spawned, so they import this module
# afresh), so every log line counts from the command's start.
_START_TIME = float(os.environ.setdefault("VAE_TF_REPRODUCE_START", str(time.time())))
# First, before anything loads TensorFlow: a quiet console (see the module).
from pipelines import console  # noqa: F401

from absl import app, flags

from pipelines import flags_common
from vae_tf.reproduction import budgets

FLAGS = flags.FLAGS

flags.DEFINE_enum("budget", "small", budgets.BUDGET_NAMES, "How much to run: tiny (tests), "
                  "small (about 15 minutes for every figure), medium (figures from 10^5 to 10^7 "
                  "examples, about 2 hours on 2 cores; iwae_table: 2 hours of training), "
                  "paper (the papers' training lengths).")
flags.DEFINE_integer("parallel_runs", 2, "Runs trained at once, each in its own single-threaded "
                     "process (1: one after another, in this process).", lower_bound=1)
flags.DEFINE_string("output_dir", None, "Folder for runs, CSV files, plots and report.md. "
                    "Default: runs/reproduce_<budget>.")
flags_common.define_seed_flag("Seed of every run (initialisation, data order, sampling).")
flags_common.define_data_flags()
flags.adopt_module_key_flags(flags_common)


def _log(message: str) -> None:
  # One write per line: the worker processes share this stdout, and print's
  # separate writes of a line and its newline interleave between them.
  sys.stdout.write(f"[{time.time() - _START_TIME:7.1f} s] {message}\n")
  sys.stdout.flush()


def main(argv):
  requested = argv[1:]
  names = (*budgets.FIGURES, budgets.TABLE)
  unknown = [name for name in requested if name not in (*names, "all")]
  if not requested or unknown:
    sys.exit(f"error: {'unknown figure ' + repr(unknown[0]) if unknown else 'no figure given'}; "
             f"give one or more of {', '.join(names)}, or all")
  figures = [figure for figure in budgets.FIGURES if figure in requested or "all" in requested]
  table = budgets.TABLE in requested  # `all` is Kingma & Welling's figures
  # Heavy imports after the arguments are checked, so mistakes are reported at once.
  from vae_tf.data import sources
  from vae_tf.reproduction import figures_report, iwae_table
  from vae_tf.reproduction import figure_runs
  from vae_tf.reproduction import figures as figures_lib

  output_dir = FLAGS.output_dir or f"runs/reproduce_{FLAGS.budget}"
  seconds = {}
  try:
    if figures:
      setup = figure_runs.Setup(budgets.FIGURE_BUDGETS[FLAGS.budget], output_dir,
                                seed=FLAGS.seed, data_dir=FLAGS.data_dir,
                                manual_dir=FLAGS.manual_dir, log=_log,
                                parallel_runs=FLAGS.parallel_runs)
      figure_runs.prepare(setup, figures)
      started = time.time()
      _log(f"training and evaluating the runs of {', '.join(figures)} (budget "
           f"{FLAGS.budget}, {FLAGS.parallel_runs} at a time) in {output_dir}")
      figure_runs.train_runs(setup, figures)
      seconds["runs"] = time.time() - started
      _log(f"runs done in {seconds['runs']:.1f} s")
      for figure in figures:
        started = time.time()
        _log(f"{figure} (budget {FLAGS.budget}) in {output_dir}")
        written = figures_lib.FIGURE_FUNCTIONS[figure](setup)
        seconds[figure] = time.time() - started
        _log(f"{figure} done in {seconds[figure]:.1f} s: {', '.join(str(p) for p in written)}")
      report = figures_report.write_report(output_dir, setup.budget, setup.seed, seconds)
      _log(f"report: {report}")
    if table:
      _log(f"{budgets.TABLE} (budget {FLAGS.budget}) in {output_dir}")
      written = iwae_table.run_table(
          budgets.TABLE_BUDGETS[FLAGS.budget], output_dir, seed=FLAGS.seed,
          data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
          parallel_runs=FLAGS.parallel_runs, command=" ".join(["python -m pipelines.reproduce",
                                                               *sys.argv[1:]]), log=_log)
      _log(f"{budgets.TABLE} done: {', '.join(str(p) for p in written)}")
  except (ValueError, sources.DataUnavailableError) as error:
    sys.exit(f"error: {error}")

if __name__ == "__main__":
  app.run(main)
