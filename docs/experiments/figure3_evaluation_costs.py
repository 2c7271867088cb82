"""CPU seconds per 100 images of Figure 3's evaluations at the `medium` budget's
sizes, and of their parts, on a 784-100-3 model (Figure 3's), single-threaded.

  python docs/experiments/figure3_evaluation_costs.py

Rows: the Appendix D estimator (2 chains x 50 + 50 draws after 100 burn-in
transitions of 10 leapfrog steps, starts resampled from 1,000 prior draws);
the same with plain prior starts; IS with 1,000 samples of q; and the 2,000
gradients of log p(x, z) in z that the chains' 200 transitions of 10 leapfrog
steps take, in a bare XLA loop. Best of two calls after one warm-up call.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # bench/ is not installed

from pipelines import console  # noqa: E402,F401  (first: a quiet console)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import matrix_products  # noqa: E402
from vae_tf import config as config_lib  # noqa: E402
from vae_tf import evaluation, hmc, learners, sampling  # noqa: E402

IMAGES = 100


def main() -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  model_config = config_lib.ModelConfig(
      input_shape=(28, 28), likelihood="bernoulli", latent_dim=3, hidden_units=(100,),
      activation="tanh", init_stddev=0.1, estimator="B", num_samples=1, weight_decay=0.0)
  model = learners.LEARNERS["aevb"](model_config, seed=0)
  model(tf.zeros([1, 784]))
  x = np.random.default_rng(0).random((IMAGES, 784), dtype=np.float32)
  x_tensor = tf.constant(x)
  medium = dict(num_samples_per_chain=50, num_chains=2, num_burnin_steps=100)

  @sampling.xla_function
  def gradients(z):
    for _ in tf.range(2 * 100 * hmc.NUM_LEAPFROG_STEPS):
      with tf.GradientTape() as tape:
        tape.watch(z)
        log_joint = hmc.log_joint(model, x_tensor, z)
      z = z + 1e-6 * tape.gradient(log_joint, z)
    return z

  rows = {
      "Appendix D": lambda: evaluation.hmc_marginal_log_likelihood(model, x, **medium),
      "Appendix D, prior starts": lambda: evaluation.hmc_marginal_log_likelihood(
          model, x, num_initial_proposals=0, **medium),
      "IS, 1,000 samples": lambda: evaluation.importance_sampled_log_likelihood(
          model, x, num_samples=1000),
      "2,000 z-gradients alone": lambda: gradients(tf.random.normal([2, IMAGES, 3])).numpy(),
  }
  for name, function in rows.items():
    seconds = matrix_products.best_seconds(function, repeats=2)
    print(f"{name:<28}{seconds:>8.2f} CPU s per {IMAGES} images")


if __name__ == "__main__":
  main()
