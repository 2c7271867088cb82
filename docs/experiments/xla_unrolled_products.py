"""Why the products-only ceilings (bench/train_throughput.py,
docs/experiments/medium_floor.py) loop with tf.while_loop: unrolled in Python,
XLA fuses each iteration's updated weights into the next iteration's matrix
product, which then runs several times slower on CPU.

  python docs/experiments/xla_unrolled_products.py

Single-threaded; CPU µs per iteration of a [100, 784] @ [784, 500] product
whose weights change every iteration, best of three calls of 200 iterations.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # bench/ is not installed

from pipelines import console  # noqa: E402,F401  (first: a quiet console)

import tensorflow as tf  # noqa: E402

from bench import matrix_products  # noqa: E402

ITERATIONS = 200
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
x = tf.random.uniform([100, 784])


def _step(w):
  return w - 1e-9 * tf.reduce_mean(tf.tanh(x @ w))


@tf.function(jit_compile=True)
def unrolled(w):
  for _ in range(ITERATIONS):
    w = _step(w)
  return w


@tf.function(jit_compile=True)
def while_loop(w):
  return tf.while_loop(lambda i, _: i < ITERATIONS, lambda i, w: (i + 1, _step(w)), (0, w))[1]


def main() -> None:
  weights = tf.random.normal([784, 500])
  for name, function in (("unrolled", unrolled), ("while loop", while_loop)):
    best = matrix_products.best_seconds(lambda: function(weights).numpy(), repeats=3)
    print(f"{name}: {best / ITERATIONS * 1e6:,.0f} CPU us per iteration")


if __name__ == "__main__":
  main()
