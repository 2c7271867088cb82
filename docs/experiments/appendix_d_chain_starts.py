"""Appendix D's estimate against IS, with chains started at plain or resampled
prior draws: the experiment behind docs/reproduction.md, "Limits of both
estimators".

  VAE_TF_MANUAL_DIR=../shared/data python docs/experiments/appendix_d_chain_starts.py \\
      runs/reproduce_medium/runs/mnist_nz3_h100_n1000_aevb 100

Loads a trained run (here Figure 3's AEVB model on 1,000 training images, after
10^7 examples), estimates log p(x) on its first N training images by IS
(k=5,000) and by the Appendix D estimator (2 chains x 50 draws) with 100 or
1,000 burn-in transitions and 0 (plain prior draws) or 1,000 resampled chain
starts, and prints each estimator's mean and its per-image difference to IS.
Single-threaded.
"""

import sys
import time

from pipelines import console  # noqa: F401  (first: a quiet console)

import numpy as np
import tensorflow as tf

from vae_tf import evaluation, training
from vae_tf.data import pipeline, splits


def main(run_dir: str, num_images: int) -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  model = training.load_trained_model(run_dir)
  x = pipeline.evaluation_array(splits.load_splits("mnist").train[:num_images], "none")
  importance_sampled = evaluation.importance_sampled_log_likelihood(model, x, num_samples=5000)
  print(f"IS, k=5,000: {importance_sampled.mean():.2f} nats")
  for burnin, proposals in ((100, 0), (1000, 0), (100, 1000)):
    started = time.time()
    estimate = evaluation.hmc_marginal_log_likelihood(
        model, x, num_samples_per_chain=50, num_chains=2, num_burnin_steps=burnin,
        num_initial_proposals=proposals)
    difference = estimate - importance_sampled
    print(f"Appendix D, {burnin} burn-in, {proposals} proposals: {estimate.mean():.2f} nats; "
          f"minus IS per image: median {np.median(difference):.2f}, lowest "
          f"{difference.min():.2f}, highest {difference.max():.2f} "
          f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
