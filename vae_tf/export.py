"""Exports a trained VAE as a versioned SavedModel for TensorFlow Serving.

Layout: `<export_base>/<model_name>/<version>/`, integer versions, newest
highest. Each version is written under a temporary name in the same folder
and renamed into place, so a server polling the folder never loads half a
model (TF Serving ignores folder names that are not integers).

Signatures (all loadable by plain `tf.saved_model.load`, no project code):

  encode(x)                       -> mean, stddev, z     q(z|x) and one draw
  decode(z)                       -> mean [, stddev]     p(x|z); stddev for a
                                                         Gaussian decoder
  sample(seed)                    -> x, z                z ~ N(0, I), x = E[x|z]
  reconstruct(x)                  -> x_mean              E[x|z] at z = E[z|x]
  score(x, num_samples)           -> elbo, log_likelihood
  serving_default                 =  encode

`x` is flat float32 [batch, D] in [0, 1]; `z` is float32 [batch, Nz].

Every input has a leading batch axis, including `seed` and `num_samples`
(one per row): TF Serving's server-side batching concatenates requests along
axis 0 and rejects rank-0 inputs. For the same reason each row's randomness
comes from that row alone (its seed, or a fingerprint of its x), so a result
never depends on which other requests shared its batch, and equal requests
get equal answers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vae_tf import objectives
from vae_tf.model import VAE

WARMUP_FILE = "tf_serving_warmup_requests"
CONFIG_FILE = "vae_tf_config.json"
ASSETS_EXTRA = "assets.extra"
DEFAULT_MODEL_NAME = "vae"
# Importance samples per step of `score`; bounds its memory to
# batch * SCORE_CHUNK decoder outputs whatever num_samples is.
SCORE_CHUNK = 100


# splitmix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number
# generators"): its i-th output from seed s is mix(s + i * gamma), so every
# row's draws come from one vectorised expression. TensorFlow's stateless
# samplers take one seed per call, which cost a loop over rows (as many ops
# per row as the sampler has; twice the whole encode call at 64 rows), and
# its batched-seed index_shuffle gives correlated draws (0.44 between a row's
# first two).
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MIX_MULTIPLIERS = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def _row_keys_from_data(x: tf.Tensor) -> tf.Tensor:
  """One generator seed (uint64) per row, from a fingerprint of the row."""
  return tf.bitcast(tf.fingerprint(x), tf.uint64)


def _splitmix64(keys: tf.Tensor, count: int, offset: tf.Tensor | int = 0) -> tf.Tensor:
  """uint64 [batch, count]: outputs offset+1 .. offset+count of each key's generator."""

  def shift_xor(value, bits):
    shifted = tf.bitwise.right_shift(value, tf.constant(bits, tf.uint64))
    return tf.bitwise.bitwise_xor(value, shifted)

  steps = tf.cast(tf.range(1, count + 1, dtype=tf.int64) + tf.cast(offset, tf.int64), tf.uint64)
  state = keys[:, tf.newaxis] + steps[tf.newaxis, :] * tf.constant(_GOLDEN_GAMMA, tf.uint64)
  state = shift_xor(state, 30) * tf.constant(_MIX_MULTIPLIERS[0], tf.uint64)
  state = shift_xor(state, 27) * tf.constant(_MIX_MULTIPLIERS[1], tf.uint64)
  return shift_xor(state, 31)


def _row_normals(keys: tf.Tensor, shape: list[int], offset: tf.Tensor | int = 0) -> tf.Tensor:
  """Standard normals [batch, *shape]: row i's are its generator's draws after
  the first `offset`, so later chunks of one row continue its stream."""
  count = int(np.prod(shape))
  bits = _splitmix64(keys, count, offset)
  # The top 24 bits, centred in their interval: uniform on (0, 1) in float32.
  uniform = (tf.cast(tf.bitwise.right_shift(bits, tf.constant(40, tf.uint64)), tf.float32)
             + 0.5) * 2.0**-24
  return tf.reshape(tf.math.ndtri(uniform), tf.concat([tf.shape(keys), shape], 0))


def _check_unit_interval(x: tf.Tensor) -> list[tf.Operation]:
  # NaN fails both comparisons, so it is rejected too.
  return [tf.debugging.assert_greater_equal(x, 0.0, message="x must lie in [0, 1]"),
          tf.debugging.assert_less_equal(x, 1.0, message="x must lie in [0, 1]")]


def serving_functions(model: VAE) -> dict[str, tf.types.experimental.GenericFunction]:
  """The exported signatures, keyed by name."""
  event_size = model.config.event_size
  latent_dim = model.config.latent_dim
  gaussian = model.config.likelihood == "gaussian"
  x_spec = tf.TensorSpec([None, event_size], tf.float32, name="x")

  @tf.function(input_signature=[x_spec])
  def encode(x):
    with tf.control_dependencies(_check_unit_interval(x)):
      posterior = model.encode(x)
    mean, stddev = posterior.mean(), posterior.stddev()
    epsilon = _row_normals(_row_keys_from_data(x), [latent_dim])
    return {"mean": mean, "stddev": stddev, "z": mean + stddev * epsilon}

  def decoded(z):
    likelihood = model.decode(z)
    outputs = {"mean": likelihood.mean()}
    if gaussian:
      outputs["stddev"] = likelihood.stddev()
    return outputs

  @tf.function(input_signature=[tf.TensorSpec([None, latent_dim], tf.float32, name="z")])
  def decode(z):
    with tf.control_dependencies([tf.debugging.assert_all_finite(z, "z must be finite")]):
      return decoded(tf.identity(z))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="seed")])
  def sample(seed):
    z = _row_normals(tf.bitcast(seed, tf.uint64), [latent_dim])
    return {"x": decoded(z)["mean"], "z": z}

  @tf.function(input_signature=[x_spec])
  def reconstruct(x):
    with tf.control_dependencies(_check_unit_interval(x)):
      z = model.encode(x).mean()
    return {"x_mean": decoded(z)["mean"]}

  @tf.function(input_signature=[x_spec, tf.TensorSpec([None], tf.int32, name="num_samples")])
  def score(x, num_samples):
    checks = _check_unit_interval(x) + [
        tf.debugging.assert_greater_equal(num_samples, 1, message="num_samples must be >= 1"),
        tf.debugging.assert_equal(tf.shape(num_samples)[0], tf.shape(x)[0],
                                  message="x and num_samples need one row each"),
    ]
    with tf.control_dependencies(checks):
      return _importance_sampled_scores(model, x, num_samples)

  return {"encode": encode, "decode": decode, "sample": sample,
          "reconstruct": reconstruct, "score": score}


def _importance_sampled_scores(model: VAE, x: tf.Tensor, num_samples: tf.Tensor) -> dict:
  """Row i: log-weights of num_samples[i] draws z ~ q(z|x_i), reduced two ways.

  log_likelihood = logsumexp(log w) - log K, the importance-sampled log p(x)
  of Burda et al. (2015); elbo = mean(log w), the estimator-A bound (eq. 6)
  with L = K. Both use the same draws, so log_likelihood >= elbo row by row.
  Draws come in chunks of SCORE_CHUNK; rows that need fewer mask the rest.
  """
  posterior = model.encode(x)
  mean, stddev = posterior.mean(), posterior.stddev()
  row_keys = _row_keys_from_data(x)
  most = tf.reduce_max(num_samples)
  batch = tf.shape(x)[0]

  def body(first, log_total, weight_sum):
    epsilon = _row_normals(row_keys, [SCORE_CHUNK, model.config.latent_dim],
                           offset=first * model.config.latent_dim)  # [batch, chunk, Nz]
    z = tf.transpose(mean[:, tf.newaxis] + stddev[:, tf.newaxis] * epsilon, [1, 0, 2])
    log_weights = objectives.log_importance_weights(
        x, z, posterior, model.decode, model.prior)  # [chunk, batch]
    used = (first + tf.range(SCORE_CHUNK))[:, tf.newaxis] < num_samples[tf.newaxis, :]
    chunk_total = tf.reduce_logsumexp(
        tf.where(used, log_weights, tf.constant(-np.inf, tf.float32)), axis=0)
    log_total = tf.reduce_logsumexp(tf.stack([log_total, chunk_total]), axis=0)
    weight_sum += tf.reduce_sum(tf.where(used, log_weights, 0.0), axis=0)
    return first + SCORE_CHUNK, log_total, weight_sum

  _, log_total, weight_sum = tf.while_loop(
      lambda first, *_: first < most, body,
      (tf.constant(0), tf.fill([batch], tf.constant(-np.inf, tf.float32)), tf.zeros([batch])))
  count = tf.cast(num_samples, tf.float32)
  return {"elbo": weight_sum / count, "log_likelihood": log_total - tf.math.log(count)}


def _model_versions(model_path: Path) -> list[int]:
  if not model_path.is_dir():
    return []
  return sorted(int(p.name) for p in model_path.iterdir() if p.name.isdigit() and p.is_dir())


def latest_version(model_path: str | os.PathLike) -> int | None:
  """The highest integer version folder under `model_path`, or None."""
  versions = _model_versions(Path(model_path))
  return versions[-1] if versions else None


def warmup_requests(model: VAE, model_name: str) -> list:
  """One `PredictionLog` per signature, in the file format TF Serving replays."""
  from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

  x = np.full([2, model.config.event_size], 0.5, np.float32)
  inputs = {
      "encode": {"x": x},
      "decode": {"z": np.zeros([2, model.config.latent_dim], np.float32)},
      "sample": {"seed": np.array([0, 1], np.int64)},
      "reconstruct": {"x": x},
      "score": {"x": x, "num_samples": np.array([1, 2], np.int32)},
      "serving_default": {"x": x},
  }
  logs = []
  for signature_name, tensors in inputs.items():
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
    for name, value in tensors.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    logs.append(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)))
  return logs


def _write_saved_model(model: VAE, path: Path, model_name: str, config_json: str | None) -> None:
  archive = keras.export.ExportArchive()
  archive.track(model)
  functions = serving_functions(model)
  for name, function in functions.items():
    archive.add_endpoint(name, function)
  archive.add_endpoint("serving_default", functions["encode"])
  archive.write_out(str(path), verbose=False)
  extra = path / ASSETS_EXTRA
  extra.mkdir()
  with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
    for log in warmup_requests(model, model_name):
      writer.write(log.SerializeToString())
  if config_json is not None:
    (extra / CONFIG_FILE).write_text(config_json)


def export_saved_model(model: VAE, export_base: str | os.PathLike,
                       model_name: str = DEFAULT_MODEL_NAME, version: int | None = None,
                       config_json: str | None = None) -> Path:
  """Writes `<export_base>/<model_name>/<version>/` atomically; returns its path.

  Args:
    model: the trained model.
    export_base: folder of models, as TF Serving's --model_config_file sees it.
    model_name: the served model's name.
    version: defaults to one above the newest existing version (1 if none).
    config_json: the training configuration, stored in assets.extra.

  Raises:
    FileExistsError: `version` is given and already exported.
  """
  model_path = Path(export_base) / model_name
  model_path.mkdir(parents=True, exist_ok=True)
  if version is not None and version < 1:
    raise ValueError(f"version must be >= 1, got {version}")
  staging = model_path / f".tmp-export-{uuid.uuid4().hex}"
  try:
    _write_saved_model(model, staging, model_name, config_json)
    while True:
      target = model_path / str(version if version is not None
                                else (latest_version(model_path) or 0) + 1)
      try:
        # rename(2) of a folder fails if the target exists: a concurrent
        # export that took this number first is never overwritten.
        os.rename(staging, target)
        return target
      except OSError:
        if not target.exists():
          raise
        if version is not None:
          raise FileExistsError(f"{target} already exists") from None
  finally:
    if staging.exists():
      tf.io.gfile.rmtree(str(staging))


def load_config_json(version_path: str | os.PathLike) -> str:
  """The training configuration stored with an exported version."""
  return (Path(version_path) / ASSETS_EXTRA / CONFIG_FILE).read_text()

