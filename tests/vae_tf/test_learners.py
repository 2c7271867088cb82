"""The learner registry, and the names each learner's state is checkpointed under.

`vae_tf.training.make_checkpoint` keys the model's variables and running
metrics by path and the optimizer's variables by position: a run folder
written earlier resumes only if a rebuilt model has the same paths, its
optimizer slots in the same order. The lists below are those of the
checkpoints written so far.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vae_tf import config as config_lib
from vae_tf import learners
from vae_tf.learner_base import AmortizedLearner, Learner

SEEDS = ["train_seed/seed_generator_state", "eval_seed/seed_generator_state"]
RECOGNITION = ["encoder/hidden/dense_0/kernel", "encoder/hidden/dense_0/bias",
               "encoder/loc/kernel", "encoder/loc/bias",
               "encoder/log_variance/kernel", "encoder/log_variance/bias"]
GENERATIVE = ["decoder/hidden/dense_0/kernel", "decoder/hidden/dense_0/bias",
              "decoder/logits/kernel", "decoder/logits/bias"]
ELBO_METRICS = ["elbo/total", "elbo/count", "reconstruction/total", "reconstruction/count",
                "kl/total", "kl/count"]
MCEM_METRICS = ["log_joint/total", "log_joint/count", "acceptance/total", "acceptance/count",
                "step_size/total", "step_size/count"]
# method: (model variables, trained variables in optimizer-slot order, metric variables)
CHECKPOINTED = {
    "aevb": (SEEDS + RECOGNITION + GENERATIVE, RECOGNITION + GENERATIVE, ELBO_METRICS),
    "wake_sleep": (SEEDS + RECOGNITION + GENERATIVE, RECOGNITION + GENERATIVE, ELBO_METRICS),
    # The warm-up's two variables came in with the warm-up (docs/reproduction.md):
    # MCEM checkpoints from before it do not resume, and say so (test_training).
    "mcem": (["latent_chains", "hmc_step_size", "warmup_transitions", "warmup_acceptance"]
             + SEEDS + GENERATIVE, GENERATIVE, MCEM_METRICS),
}
NUM_TRAIN = 50


def build(method: str, seed: int = 0) -> Learner:
  # The paper's preset: Adagrad, one accumulator slot per trained variable.
  model_config, train_config = config_lib.preset("paper", "mnist", NUM_TRAIN)
  model_config = dataclasses.replace(model_config, latent_dim=3, hidden_units=(8,))
  train_config = dataclasses.replace(train_config, method=method, train_examples=NUM_TRAIN,
                                     seed=seed)
  return learners.build_model(model_config, train_config)


def test_every_method_has_a_learner():
  assert set(learners.LEARNERS) == set(config_lib.METHODS)
  assert all(issubclass(learner, Learner) for learner in learners.LEARNERS.values())


@pytest.mark.parametrize("method", config_lib.METHODS)
def test_checkpointed_names_are_those_of_earlier_runs(method):
  variables, trained, metrics = CHECKPOINTED[method]
  model = build(method)
  assert type(model) is learners.LEARNERS[method]
  assert sorted(v.path for v in model.variables) == sorted(variables)
  assert [v.path for v in model.trainable_variables] == trained
  # Slot paths are prefixed with the optimizer's unique name (adagrad, adagrad_1, ...).
  slots = [v.path.split("/", 1)[1] for v in model.optimizer.variables]
  assert slots == ["iteration", "learning_rate",
                   *(f"{path.replace('/', '_')}_accumulator" for path in trained)]
  assert sorted(v.path for v in model.metrics_variables) == sorted(metrics)


def test_only_mcem_has_no_recognition_model_and_keeps_state_per_example():
  for method, learner in learners.LEARNERS.items():
    assert issubclass(learner, AmortizedLearner) == (method != "mcem"), method
    assert learner.needs_example_indices == (method == "mcem"), method


def test_at_one_seed_every_learner_starts_from_the_same_generative_model():
  decoders = {method: [v.numpy() for v in build(method, seed=7).decoder.weights]
              for method in config_lib.METHODS}
  for method, weights in decoders.items():
    for a, b in zip(decoders["aevb"], weights):
      np.testing.assert_array_equal(a, b, err_msg=method)
  other_seed = build("mcem", seed=8).decoder.weights[0].numpy()
  assert not np.array_equal(decoders["mcem"][0], other_seed)
