"""Peak memory of the `medium` budget's largest process: Figure 3's MCEM run
at N_train = 50,000 (full-batch rounds over all 50,000 images), cut to 4
rounds and 2 evaluation points, the paper's 1,000 + 1,000 images each.

  /usr/bin/time -v python docs/experiments/figure3_mcem_peak_memory.py <output folder>

Single-threaded, as `pipelines.reproduce --parallel_runs=2` runs it.
"""

import dataclasses
import sys

from pipelines import console  # noqa: F401  (first: a quiet console)

import tensorflow as tf

from vae_tf.reproduction import budgets, figure_runs


def main(output_dir: str) -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  budget = dataclasses.replace(budgets.FIGURE_BUDGETS["medium"], name="mcem_peak_memory",
                               likelihood_examples=(100_000, 200_000), likelihood_points=2)
  setup = figure_runs.Setup(budget, output_dir, log=print)
  figure_runs.likelihood_run(setup, figure_runs.RunSpec(
      "mnist", budgets.LIKELIHOOD_LATENT_DIM, "mcem", budgets.LIKELIHOOD_HIDDEN_UNITS, 50_000))


if __name__ == "__main__":
  main(sys.argv[1])
