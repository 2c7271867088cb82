"""Training CPU microseconds per example of AEVB and wake-sleep updates, fused as
`fit` runs them: the before/after table for vae_tf/sampling.py in
docs/reproduction.md.

  python docs/experiments/update_cost.py <hidden units> <latent dim>

One block of 50 minibatches of 100 (random grey levels, 784 pixels), one
train_step call compiled by XLA, single-threaded; prints the best of three
calls after two warm-up calls. Run it from a git worktree of another commit
to time that commit's code.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # bench/ is not installed

from pipelines import console  # noqa: E402,F401  (first: a quiet console)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import matrix_products  # noqa: E402
from vae_tf import config as config_lib  # noqa: E402
from vae_tf import learners  # noqa: E402

BLOCK = (50, 100, 784)


def microseconds_per_example(method: str, hidden_units: int, latent_dim: int) -> float:
  model_config = config_lib.ModelConfig(
      input_shape=(28, 28), likelihood="bernoulli", latent_dim=latent_dim,
      hidden_units=(hidden_units,), activation="tanh", init_stddev=0.1, estimator="B",
      num_samples=1, weight_decay=0.0)
  model = learners.LEARNERS[method](model_config, seed=0)
  model.compile(optimizer=keras.optimizers.Adagrad(0.02), jit_compile=True)
  x = tf.constant(np.random.default_rng(0).random(BLOCK, dtype=np.float32))
  step = tf.function(lambda: model.train_step(x), jit_compile=True)
  return matrix_products.best_seconds(step, repeats=3, warmups=2) / (BLOCK[0] * BLOCK[1]) * 1e6


def main(hidden_units: int, latent_dim: int) -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  for method in ("aevb", "wake_sleep"):
    print(f"784-{hidden_units}-{latent_dim} {method}: "
          f"{microseconds_per_example(method, hidden_units, latent_dim):.1f} CPU us per example")


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]))
