"""Choosing a strategy and the chief; the multi-worker runs are in tests/pipelines."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from vae_tf import distribute


def tf_config(cluster: dict, task_type: str = "worker", index: int = 0) -> dict[str, str]:
  return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                   "task": {"type": task_type, "index": index}})}


@pytest.mark.parametrize("environ, size", [
    ({}, 0),
    (tf_config({"worker": ["a:1"]}), 1),
    (tf_config({"worker": ["a:1", "b:1", "c:1"]}), 3),
    (tf_config({"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]}), 2),
])
def test_cluster_size_counts_chief_and_workers(environ, size):
  assert distribute.cluster_size(environ) == size


def test_bad_tf_config_is_a_clear_error():
  with pytest.raises(ValueError, match="TF_CONFIG is not a JSON object with a 'cluster'"):
    distribute.cluster_size({"TF_CONFIG": "{not json"})


def test_auto_without_a_cluster_is_the_default_strategy():
  strategy = distribute.make_strategy("auto", environ=tf_config({"worker": ["a:1"]}))
  assert strategy is tf.distribute.get_strategy()
  assert not distribute.is_distributed(strategy)
  assert distribute.is_chief(strategy)


def test_multi_worker_needs_tf_config():
  with pytest.raises(ValueError, match="--strategy=multi_worker needs TF_CONFIG"):
    distribute.make_strategy("multi_worker", environ={})


def test_unknown_strategy_is_refused():
  with pytest.raises(ValueError, match="strategy must be one of"):
    distribute.make_strategy("parameter_server", environ={})


def test_global_batch_must_split_evenly():
  strategy = tf.distribute.get_strategy()
  assert distribute.check_global_batch(strategy, 100) == 100
