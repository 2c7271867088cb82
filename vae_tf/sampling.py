"""Draws from the models' distributions, as TFP draws them, with a faster generator under XLA.

Inside an XLA-compiled function on CPU, the stateless generator that TFP's
samplers use (`alg="auto_select"`) costs 42 ns per uniform number, Philox
18 and ThreeFry 3.4 (docs/experiments/xla_random_generators.py, single
thread). Where a step draws many numbers, that dominates it: wake-sleep's
dreams (a whole image per example) were two thirds of its update, and the
k draws per image of importance-sampled evaluation are k x Nz normals.
TensorFlow's kernels outside XLA have no ThreeFry, so code that is traced
for XLA says so with `compiled_by_xla()` (or is an `xla_function`), and `draw`
picks ThreeFry there and TensorFlow's default elsewhere (eager calls,
distributed training).

`draw` takes the same kind of draw as `distribution.sample(sample_shape,
seed)` for the distributions the models use: reparameterized Normals
(gradients reach loc and scale, as with TFP) and Bernoullis, each possibly
`Independent`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterator

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

_TRACING = threading.local()


@contextlib.contextmanager
def compiled_by_xla(compiled: bool = True) -> Iterator[None]:
  """While tracing a function XLA will compile, `draw` uses ThreeFry."""
  previous = getattr(_TRACING, "xla", False)
  _TRACING.xla = compiled
  try:
    yield
  finally:
    _TRACING.xla = previous


def xla_function(function: Callable) -> Callable:
  """`tf.function(function, jit_compile=True)`, traced under `compiled_by_xla`."""

  @functools.wraps(function)
  def traced(*args, **kwargs):
    with compiled_by_xla():
      return function(*args, **kwargs)

  return tf.function(traced, jit_compile=True)


def _algorithm() -> str:
  return "threefry" if getattr(_TRACING, "xla", False) else "auto_select"


def draw(distribution: tfd.Distribution, seed, sample_shape=()) -> tf.Tensor:
  """A sample [*sample_shape, *batch, *event] of an (Independent) Normal or Bernoulli."""
  inner = distribution.distribution if isinstance(distribution, tfd.Independent) \
      else distribution
  sample_shape = tf.cast(tf.reshape(sample_shape, [-1]), tf.int32)
  if isinstance(inner, tfd.Normal):
    loc = tf.convert_to_tensor(inner.loc)
    scale = tf.convert_to_tensor(inner.scale)
    shape = tf.concat([sample_shape, tf.broadcast_dynamic_shape(tf.shape(loc),
                                                                tf.shape(scale))], 0)
    return loc + scale * tf.random.stateless_normal(shape, seed, dtype=loc.dtype,
                                                    alg=_algorithm())
  if isinstance(inner, tfd.Bernoulli):
    probs = inner.probs_parameter()
    shape = tf.concat([sample_shape, tf.shape(probs)], 0)
    uniform = tf.random.stateless_uniform(shape, seed, dtype=probs.dtype, alg=_algorithm())
    return tf.cast(uniform < probs, inner.dtype)
  raise TypeError(f"no draw for {type(inner).__name__}; use its own sample()")
