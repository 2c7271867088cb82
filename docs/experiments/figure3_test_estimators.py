"""Three estimates of test log p(x) on a Figure 3 model, against a near-exact one:
the experiment behind docs/reproduction.md, "Figure 3", `medium`.

  VAE_TF_MANUAL_DIR=../shared/data python docs/experiments/figure3_test_estimators.py \\
      runs/reproduce_medium/runs/mnist_nz3_h100_n1000_aevb 100

Loads a trained Figure 3 run (Nz=3) and takes the first N test images, as the
figure does (grey levels). With 3 latent dimensions, importance sampling from
the prior with k=200,000 draws is close to exact; against it, prints the mean
and the per-image spread of: Figure 3's Appendix D estimator (2 chains x 50
draws, 100 burn-in transitions, 1,000 resampled starts), and IS with q(z|x)
as proposal at k=1,000 (the figure's) and k=20,000. Single-threaded.
"""

import math
import sys
import time

from pipelines import console  # noqa: F401  (first: a quiet console)

import numpy as np
import tensorflow as tf

from vae_tf import evaluation, training
from vae_tf.data import pipeline, splits

PRIOR_DRAWS = 200_000
CHUNK = 2_000


def prior_importance_sampled(model, x: np.ndarray, num_draws: int, seed: int = 0) -> np.ndarray:
  """log (1/K) sum_k p(x|z_k), z_k ~ p(z), per image, in chunks of draws."""

  @tf.function(jit_compile=True)
  def chunk_log_sum(x, chunk_seed):
    z = model.prior.sample([CHUNK, x.shape[0]], seed=chunk_seed)
    return tf.reduce_logsumexp(model.decode(z).log_prob(x), axis=0)

  x = tf.constant(x)
  totals = [chunk_log_sum(x, tf.constant([seed, i])) for i in range(num_draws // CHUNK)]
  return (tf.reduce_logsumexp(tf.stack(totals), axis=0).numpy().astype(np.float64)
          - math.log(num_draws // CHUNK * CHUNK))


def main(run_dir: str, num_images: int) -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  model = training.load_trained_model(run_dir)
  x = pipeline.evaluation_array(splits.load_splits("mnist", with_test=True).test[:num_images],
                                "none")
  started = time.time()
  reference = prior_importance_sampled(model, x, PRIOR_DRAWS)
  print(f"prior IS, k={PRIOR_DRAWS:,}: {reference.mean():.2f} nats "
        f"({time.time() - started:.0f} s)")
  estimates = {
      "Appendix D (Figure 3's)": lambda: evaluation.hmc_marginal_log_likelihood(
          model, x, num_samples_per_chain=50, num_chains=2, num_burnin_steps=100,
          num_initial_proposals=1000),
      "IS with q, k=1,000 (Figure 3's)": lambda: evaluation.importance_sampled_log_likelihood(
          model, x, num_samples=1000),
      "IS with q, k=20,000": lambda: evaluation.importance_sampled_log_likelihood(
          model, x, num_samples=20_000),
  }
  for name, estimate in estimates.items():
    started = time.time()
    values = estimate()
    difference = values - reference
    print(f"{name}: {values.mean():.2f} nats; minus prior IS per image: median "
          f"{np.median(difference):.2f}, lowest {difference.min():.2f}, highest "
          f"{difference.max():.2f} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
