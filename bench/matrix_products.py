"""A model's update cut down to its matrix products: the ceiling no training
loop can beat on a machine (bench.train_throughput) and the floor of the
paper's figures (docs/experiments/medium_floor.py).

An update is a list of chains, each (layers, weight_gradients, input_gradients):
the forward products through `layers` (input and output widths), then, if
asked, each layer's weight gradient, and the input gradients of every layer
('all'), of every layer but the first ('hidden') or of none ('none'), each
applied as a plain SGD step so that every product is used. A chain may pass
from 2 Nz outputs to Nz inputs (q to p): the extra columns are dropped going
forward and padded back going backward. A tanh, the cheapest nonlinearity,
keeps XLA from fusing products together.
"""

from __future__ import annotations

import time
from typing import Callable

Chain = tuple[list[tuple[int, int]], bool, str]


def layers(*widths: int) -> list[tuple[int, int]]:
  return list(zip(widths[:-1], widths[1:]))


def update_block(chains: list[Chain], batch: int, updates: int) -> Callable[[], None]:
  """A function running `updates` updates of `chains` on `batch` rows in one
  XLA call and fetching the weights."""
  import tensorflow as tf

  weights = [[tf.random.normal(shape, stddev=0.01) for shape in chain_layers]
             for chain_layers, _, _ in chains]
  inputs = [tf.random.uniform([batch, chain_layers[0][0]]) for chain_layers, _, _ in chains]

  def update(weights):
    updated = []
    for (_, weight_gradients, input_gradients), chain, x in zip(chains, weights, inputs):
      h, layer_inputs = x, []
      for w in chain:
        layer_inputs.append(h[:, :w.shape[0]])
        h = tf.tanh(layer_inputs[-1] @ w)
      new_chain, gradient = list(chain), h
      for index in reversed(range(len(chain))):
        if weight_gradients:
          new_chain[index] -= 1e-9 * tf.matmul(layer_inputs[index], gradient, transpose_a=True)
        if input_gradients == "all" or (index and input_gradients == "hidden"):
          gradient = tf.matmul(gradient, chain[index], transpose_b=True)
          if index:
            width = chain[index - 1].shape[1]
            gradient = tf.pad(gradient, [[0, 0], [0, width - gradient.shape[1]]])
      # Keeps a chain with no weight gradient from being dead code.
      new_chain[0] -= 1e-9 * tf.reduce_mean(gradient)
      updated.append(new_chain)
    return updated

  # A while loop, as training runs its fused updates: unrolled, XLA fuses each
  # update's new weights into the next update's products, which then run
  # several times slower (docs/experiments/xla_unrolled_products.py).
  @tf.function(jit_compile=True)
  def block(weights):
    return tf.while_loop(lambda i, _: i < updates, lambda i, w: (i + 1, update(w)),
                         (0, weights))[1]

  def run() -> None:
    for chain in block(weights):
      for w in chain:
        w.numpy()

  return run


def best_seconds(function: Callable[[], object], repeats: int, warmups: int = 1,
                 clock: Callable[[], float] = time.process_time) -> float:
  """The shortest of `repeats` timed calls of `function`, after `warmups`
  untimed ones (compilation); CPU time by default."""
  for _ in range(warmups):
    function()
  best = float("inf")
  for _ in range(repeats):
    started = clock()
    function()
    best = min(best, clock() - started)
  return best
