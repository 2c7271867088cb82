"""vae_tf.sampling.draw: the same distribution as TFP's sample, reparameterized."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vae_tf import sampling

tfd = tfp.distributions
SEED = tf.constant([3, 4])


def test_normal_draws_have_the_distributions_moments_and_shape():
  loc = tf.constant([[0.0, 1.0, -2.0], [5.0, 0.5, 0.0]])
  scale = tf.constant([[1.0, 0.1, 3.0], [0.5, 2.0, 1e-3]])
  distribution = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
  z = sampling.draw(distribution, SEED, [40_000]).numpy()
  assert z.shape == (40_000, 2, 3)
  np.testing.assert_allclose(z.mean(axis=0), loc, atol=0.05)
  np.testing.assert_allclose(z.std(axis=0), scale, rtol=0.02)
  assert sampling.draw(distribution, SEED).shape == (2, 3)


def test_bernoulli_draws_have_the_distributions_means():
  probs = tf.constant([0.0, 0.05, 0.5, 0.93, 1.0])
  distribution = tfd.Independent(tfd.Bernoulli(probs=probs, dtype=tf.float32), 1)
  x = sampling.draw(distribution, SEED, [40_000]).numpy()
  assert x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
  np.testing.assert_allclose(x.mean(axis=0), probs, atol=0.01)
  assert x[:, 0].max() == 0 and x[:, -1].min() == 1


def test_normal_draws_are_reparameterized():
  loc, scale = tf.Variable([1.0, 2.0]), tf.Variable([0.5, 0.5])
  with tf.GradientTape() as tape:
    z = sampling.draw(tfd.Normal(loc, scale), SEED, [1000])
    total = tf.reduce_sum(z)
  d_loc, d_scale = tape.gradient(total, [loc, scale])
  np.testing.assert_allclose(d_loc, [1000.0, 1000.0])
  noise = (z - loc) / scale
  np.testing.assert_allclose(d_scale, tf.reduce_sum(noise, axis=0), rtol=1e-5)


def compiled_draw(distribution, sample_shape):
  """`draw` traced for XLA, where it takes the ThreeFry generator."""

  @sampling.xla_function
  def run(seed):
    return sampling.draw(distribution, seed, sample_shape)

  return run


def test_draws_are_a_function_of_the_seed_with_either_generator():
  distribution = tfd.Normal(tf.zeros([5]), 1.0)
  compiled = compiled_draw(distribution, [3])
  for run in (lambda seed: sampling.draw(distribution, seed, [3]), compiled):
    first = run(SEED)
    np.testing.assert_array_equal(first, run(SEED))
    assert not np.allclose(first, run(tf.constant([3, 5])))
  # Two generators, so two different draws of the same seed.
  assert not np.allclose(compiled(SEED), sampling.draw(distribution, SEED, [3]))


def test_the_xla_generator_draws_the_same_distributions():
  normal = tfd.Independent(tfd.Normal([0.0, 3.0], [1.0, 0.2]), 1)
  z = compiled_draw(normal, [40_000])(SEED).numpy()
  np.testing.assert_allclose(z.mean(axis=0), [0.0, 3.0], atol=0.03)
  np.testing.assert_allclose(z.std(axis=0), [1.0, 0.2], rtol=0.02)
  bernoulli = tfd.Independent(tfd.Bernoulli(probs=[0.1, 0.7], dtype=tf.float32), 1)
  x = compiled_draw(bernoulli, [40_000])(SEED).numpy()
  np.testing.assert_allclose(x.mean(axis=0), [0.1, 0.7], atol=0.01)


def test_other_distributions_are_refused():
  with pytest.raises(TypeError, match="no draw for Gamma"):
    sampling.draw(tfd.Gamma(1.0, 1.0), SEED)
