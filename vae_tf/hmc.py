"""Hamiltonian Monte Carlo on a model's posterior p(z|x) ∝ p(x|z) p(z), with TFP.

Monte Carlo EM (`vae_tf.baselines.mcem`) and the Appendix D marginal-likelihood
estimator (`vae_tf.evaluation`) both sample z this way: HMC with a fixed number
of leapfrog steps (10 in the paper) under TFP's `SimpleStepSizeAdaptation`,
which after every transition multiplies the step size by (1 + rate) if the
mean acceptance probability beat the target (0.9 in the paper) and divides it
by (1 + rate) otherwise.

A model is anything with `decode(z) -> p(x|z)` and a `prior` p(z): the VAE,
wake-sleep and MCEM all qualify. Chains are batched: z [..., batch, latent]
against x [batch, D], every chain independent.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

NUM_LEAPFROG_STEPS = 10
TARGET_ACCEPT_PROB = 0.9
# A step size can move by a factor of 1.05 per transition: from 0.1 to 0.01
# (a sharp posterior) in under 50 transitions.
ADAPTATION_RATE = 0.05


def log_joint(model, x, z) -> tf.Tensor:
  """log p(x|z) + log p(z), the unnormalised log-posterior of z, [..., batch]."""
  return model.decode(z).log_prob(x) + model.prior.log_prob(z)


def adaptive_hmc(target_log_prob_fn, step_size, num_adaptation_steps,
                 num_leapfrog_steps: int = NUM_LEAPFROG_STEPS,
                 target_accept_prob: float = TARGET_ACCEPT_PROB,
                 adaptation_rate: float = ADAPTATION_RATE) -> tfp.mcmc.TransitionKernel:
  """HMC whose step size adapts during its first `num_adaptation_steps` transitions.

  The shape of `step_size` says which chains share one: a scalar is shared by
  all; [batch, 1] gives each datapoint of a [chains, batch, latent] state its
  own, adapted to the acceptance averaged over that datapoint's chains.
  """
  return tfp.mcmc.SimpleStepSizeAdaptation(
      tfp.mcmc.HamiltonianMonteCarlo(target_log_prob_fn, step_size=step_size,
                                     num_leapfrog_steps=num_leapfrog_steps),
      num_adaptation_steps=num_adaptation_steps,
      target_accept_prob=target_accept_prob,
      adaptation_rate=adaptation_rate)


def acceptance_probability(kernel_results) -> tf.Tensor:
  """Metropolis acceptance probability of each chain's last transition."""
  return tf.exp(tf.minimum(kernel_results.inner_results.log_accept_ratio, 0.0))


def initial_states(model, x, num_chains: int, num_proposals: int, seed) -> tf.Tensor:
  """Chain starts [num_chains, batch, latent] for x [batch, D]: each one of
  `num_proposals` prior draws, picked with probability proportional to p(x|z)
  (sampling-importance-resampling, so starts are approximate posterior draws).

  Started at plain prior draws, a chain of a multimodal posterior settles in
  whichever mode is nearest, and a minor mode holding one of few chains
  dominates the Appendix D estimate (measured: one image 187 nats low, on
  Figure 3's AEVB model after 10^7 examples; docs/reproduction.md). Resampled
  starts land in the modes in proportion to their mass.
  """
  proposal_seed, pick_seed = tf.unstack(tf.random.experimental.stateless_split(seed))
  batch_size = tf.shape(x)[0]
  proposals = model.prior.sample([num_proposals, batch_size], seed=proposal_seed)
  # One proposal at a time bounds memory to batch decoder outputs.
  log_likelihoods = tf.map_fn(lambda z: model.decode(z).log_prob(x), proposals)  # [K, batch]
  picks = tf.random.stateless_categorical(tf.transpose(log_likelihoods), num_chains,
                                          pick_seed)  # [batch, chains]
  starts = tf.gather(tf.transpose(proposals, [1, 0, 2]), picks, batch_dims=1)
  return tf.transpose(starts, [1, 0, 2])


def sample_posterior(model, x, num_results: int, num_burnin_steps: int, seed,
                     num_chains: int = 1, initial_step_size: float = 0.1,
                     num_leapfrog_steps: int = NUM_LEAPFROG_STEPS,
                     num_initial_proposals: int = 0) -> tf.Tensor:
  """Posterior draws [num_results, num_chains, batch, latent] for x [batch, D].

  Chains start at prior draws, or, with `num_initial_proposals` > 0, at
  resampled ones (`initial_states`). Each datapoint has its own step size,
  adapted during the first 80% of the burn-in and then fixed, so the kept
  draws come from a time-homogeneous (hence valid) Markov chain.
  """
  init_seed, chain_seed = tf.unstack(tf.random.experimental.stateless_split(seed))
  batch_size = tf.shape(x)[0]
  if num_initial_proposals:
    initial_z = initial_states(model, x, num_chains, num_initial_proposals, init_seed)
  else:
    initial_z = model.prior.sample([num_chains, batch_size], seed=init_seed)
  kernel = adaptive_hmc(
      lambda z: log_joint(model, x, z),
      step_size=tf.fill([batch_size, 1], initial_step_size),
      num_adaptation_steps=int(0.8 * num_burnin_steps),
      num_leapfrog_steps=num_leapfrog_steps)
  return tfp.mcmc.sample_chain(num_results, initial_z, kernel=kernel,
                               num_burnin_steps=num_burnin_steps, trace_fn=None,
                               seed=chain_seed)
