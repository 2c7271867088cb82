"""Data-parallel training: which strategy, who writes, how minibatches are split.

`pipelines.train` picks `MultiWorkerMirroredStrategy` when TF_CONFIG names
several workers, `MirroredStrategy` when this machine has several GPUs, and
TensorFlow's default strategy otherwise.

The global minibatch is the per-replica batch times the replicas in sync.
Every worker builds the same global stream (a pure function of seed and
step, as in single-process training) and each replica takes its own
contiguous slice of every minibatch, so N replicas together see exactly the
examples a single process sees with an N-times larger batch, and a resumed
worker picks up at the same step as the others.

Only the chief writes the run folder. Every worker must still take part in
checkpoint saves (reading distributed variables can be a collective), so
the others save into a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import tensorflow as tf

from vae_tf.config import STRATEGIES


def cluster_size(environ=os.environ) -> int:
  """Chief and worker tasks that TF_CONFIG names (0 without TF_CONFIG)."""
  text = environ.get("TF_CONFIG")
  if not text:
    return 0
  try:
    cluster = json.loads(text).get("cluster", {})
  except (json.JSONDecodeError, AttributeError) as error:
    raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster': {error}") from None
  return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def make_strategy(name: str = "auto", environ=os.environ) -> tf.distribute.Strategy:
  """The strategy `name` asks for; 'auto' chooses from TF_CONFIG and the local GPUs."""
  if name not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
  if name == "auto":
    if cluster_size(environ) > 1:
      name = "multi_worker"
    elif len(tf.config.list_logical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "default"
  if name == "multi_worker":
    if cluster_size(environ) < 1:
      raise ValueError("--strategy=multi_worker needs TF_CONFIG naming the cluster and this "
                       "task")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                               tf.distribute.MirroredStrategy))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run folder: the chief task, else worker 0."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_global_batch(strategy: tf.distribute.Strategy, global_batch: int) -> int:
  """The per-replica batch; the global batch must split evenly."""
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise ValueError(f"the global batch {global_batch} does not split evenly over {replicas} "
                     "replicas")
  return global_batch // replicas


def distribute_minibatches(strategy: tf.distribute.Strategy,
                           make_stream: Callable[[], tf.data.Dataset],
                           global_batch: int) -> tf.distribute.DistributedDataset:
  """Each replica's slice of every global minibatch of `make_stream()`.

  Stream elements are minibatches [M, ...] (or tuples of them) with M the
  global batch; replica r gets rows [r * M/R, (r + 1) * M/R).

  One SGD update per element: a multi-worker dataset does not keep a static
  leading axis, which a block of K fused updates would need.
  """
  per_replica = check_global_batch(strategy, global_batch)

  def replica_slices(context: tf.distribute.InputContext) -> tf.data.Dataset:
    local_replicas = strategy.num_replicas_in_sync // context.num_input_pipelines
    first_replica = context.input_pipeline_id * local_replicas

    def slices(*minibatch):
      # One element per local replica, in replica order: a pipeline feeds its
      # replicas consecutive elements.
      parts = [tf.nest.map_structure(
          lambda t, r=r: t[(first_replica + r) * per_replica:
                           (first_replica + r + 1) * per_replica], minibatch)
               for r in range(local_replicas)]
      stacked = tf.nest.map_structure(lambda *ts: tf.stack(ts), *parts)
      dataset = tf.data.Dataset.from_tensor_slices(stacked)
      return dataset.map(lambda *t: t[0] if len(t) == 1 else t)

    options = tf.data.Options()
    # The slicing above is the sharding; TF's automatic sharding would drop
    # whole minibatches on top of it.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return make_stream().flat_map(slices).with_options(options)

  return strategy.distribute_datasets_from_function(replica_slices)
