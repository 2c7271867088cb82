"""Nanoseconds per random number for TensorFlow's stateless generators, inside and
outside XLA: the measurement behind vae_tf/sampling.py.

  python docs/experiments/xla_random_generators.py

Each line draws 500 x 100 x 784 uniforms (one MNIST minibatch of dreams per
draw) in a while loop, single-threaded, and prints the CPU nanoseconds per
number. ThreeFry has no kernel outside XLA, so it is timed compiled only.
"""

import time

from pipelines import console  # noqa: F401  (first: a quiet console)

import tensorflow as tf

SHAPE = [100, 784]
DRAWS = 500


def nanoseconds_per_number(generate, jit_compile: bool) -> float:
  @tf.function(jit_compile=jit_compile)
  def run(seed):
    def body(i, total):
      return i + 1, total + tf.reduce_sum(generate(tf.stack([seed, i])))
    return tf.while_loop(lambda i, _: i < DRAWS, body, (tf.constant(0), tf.constant(0.0)))[1]

  run(tf.constant(1))
  started = time.process_time()
  run(tf.constant(2))
  return (time.process_time() - started) / DRAWS / (SHAPE[0] * SHAPE[1]) * 1e9


def main() -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  for alg in ("auto_select", "philox", "threefry"):
    rate = nanoseconds_per_number(lambda s, a=alg: tf.random.stateless_uniform(SHAPE, s, alg=a),
                                  jit_compile=True)
    print(f"XLA, stateless_uniform alg={alg}: {rate:.2f} ns per number")
  rate = nanoseconds_per_number(lambda s: tf.random.stateless_uniform(SHAPE, s),
                                jit_compile=False)
  print(f"no XLA, stateless_uniform alg=auto_select: {rate:.2f} ns per number")


if __name__ == "__main__":
  main()
