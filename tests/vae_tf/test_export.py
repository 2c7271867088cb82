"""The exported SavedModel: layout, signatures, numbers, warmup records."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import config as config_lib
from vae_tf import evaluation, export
from vae_tf.model import VAE


@pytest.fixture(scope="module")
def small_model() -> VAE:
  return VAE(config_lib.ModelConfig(latent_dim=3, hidden_units=(32,)), seed=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_model):
  base = tmp_path_factory.mktemp("exports")
  path = export.export_saved_model(small_model, base, "vae", config_json='{"k": 1}')
  return base, path, tf.saved_model.load(str(path))


def test_versions_count_up_and_are_never_overwritten(tmp_path, small_model):
  first = export.export_saved_model(small_model, tmp_path, "m")
  second = export.export_saved_model(small_model, tmp_path, "m")
  assert (first.name, second.name) == ("1", "2")
  assert export.export_saved_model(small_model, tmp_path, "m", version=7).name == "7"
  with pytest.raises(FileExistsError):
    export.export_saved_model(small_model, tmp_path, "m", version=2)
  # No staging folder is left behind, and only integer folders exist.
  assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "7"]
  assert export.latest_version(tmp_path / "m") == 7


def test_signatures_have_named_inputs_and_outputs(exported):
  _, _, loaded = exported
  expected = {
      "encode": ({"x"}, {"mean", "stddev", "z"}),
      "decode": ({"z"}, {"mean"}),
      "sample": ({"seed"}, {"x", "z"}),
      "reconstruct": ({"x"}, {"x_mean"}),
      "score": ({"x", "num_samples"}, {"elbo", "log_likelihood"}),
      "serving_default": ({"x"}, {"mean", "stddev", "z"}),
  }
  for name, (inputs, outputs) in expected.items():
    function = loaded.signatures[name]
    assert set(function.structured_input_signature[1]) == inputs, name
    assert set(function.structured_outputs) == outputs, name
    for spec in function.structured_input_signature[1].values():
      assert spec.shape[0] is None, f"{name}: every input needs a free batch axis"


def test_encode_and_decode_match_the_model(exported, small_model):
  _, _, loaded = exported
  x = np.random.default_rng(0).uniform(size=[5, 784]).astype(np.float32)
  encoded = loaded.signatures["encode"](x=tf.constant(x))
  posterior = small_model.encode(x)
  np.testing.assert_allclose(encoded["mean"], posterior.mean(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(encoded["stddev"], posterior.stddev(), rtol=1e-5, atol=1e-6)
  decoded = loaded.signatures["decode"](z=encoded["mean"])
  np.testing.assert_allclose(decoded["mean"], small_model.decode(encoded["mean"]).mean(),
                             rtol=1e-5, atol=1e-6)
  reconstructed = loaded.signatures["reconstruct"](x=tf.constant(x))["x_mean"]
  np.testing.assert_allclose(reconstructed, decoded["mean"], rtol=1e-5, atol=1e-6)


def test_randomness_is_per_row_so_batching_cannot_change_a_result(exported):
  _, _, loaded = exported
  x = np.random.default_rng(1).uniform(size=[4, 784]).astype(np.float32)
  together = loaded.signatures["encode"](x=tf.constant(x))["z"].numpy()
  alone = loaded.signatures["encode"](x=tf.constant(x[2:3]))["z"].numpy()
  # Same draw; the batch size may change matmul rounding in the last bits.
  np.testing.assert_allclose(together[2:3], alone, rtol=1e-5, atol=1e-6)
  assert not np.allclose(together[0], together[1])
  samples = loaded.signatures["sample"](seed=tf.constant([5, 6, 5], tf.int64))
  np.testing.assert_array_equal(samples["z"][0], samples["z"][2])
  assert not np.allclose(samples["z"][0], samples["z"][1])
  scores = loaded.signatures["score"](x=tf.constant(x), num_samples=tf.constant([50, 1, 50, 7]))
  single = loaded.signatures["score"](x=tf.constant(x[2:3]), num_samples=tf.constant([50]))
  np.testing.assert_allclose(scores["log_likelihood"][2], single["log_likelihood"][0], rtol=1e-6)


def reference_splitmix64(seed: int, count: int) -> list[int]:
  """splitmix64 as its authors' Java (and Vigna's C) steps it, one output at a time."""
  mask, outputs = 2**64 - 1, []
  for _ in range(count):
    seed = (seed + 0x9E3779B97F4A7C15) & mask
    z = seed
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    outputs.append(z ^ (z >> 31))
  return outputs


def test_row_generator_is_splitmix64_and_later_chunks_continue_the_stream():
  seeds = [0, 1, 2**64 - 1, 0x0123456789ABCDEF]
  keys = tf.constant(np.array(seeds, dtype=np.uint64))
  drawn = export._splitmix64(keys, 10).numpy()
  assert int(drawn[0, 0]) == 0xE220A8397B1DCDAF  # the generator's well-known first output
  for row, seed in zip(drawn, seeds):
    assert [int(v) for v in row] == reference_splitmix64(seed, 10)
  np.testing.assert_array_equal(export._splitmix64(keys, 4, offset=6).numpy(), drawn[:, 6:])


def test_row_normals_are_independent_standard_normals():
  keys = tf.constant(np.arange(20_000, dtype=np.uint64) * 7919)
  normals = export._row_normals(keys, [2, 3]).numpy().reshape(20_000, 6)
  # 120,000 draws: standard errors 0.003 for the mean, 0.002 for the stddev.
  assert abs(normals.mean()) < 0.015 and abs(normals.std() - 1) < 0.01
  assert abs(np.mean(np.abs(normals) > 1.96) - 0.05) < 0.003
  correlations = np.corrcoef(normals, rowvar=False)  # within a row, and across neighbours
  assert np.max(np.abs(correlations - np.eye(6))) < 0.03
  assert abs(np.corrcoef(normals[:-1, 0], normals[1:, 0])[0, 1]) < 0.03


def test_score_agrees_with_the_in_process_estimator(exported, small_model):
  _, _, loaded = exported
  x = (np.random.default_rng(2).uniform(size=[20, 784]) > 0.5).astype(np.float32)
  scores = loaded.signatures["score"](x=tf.constant(x), num_samples=tf.fill([20], 500))
  served = scores["log_likelihood"].numpy()
  reference = evaluation.importance_sampled_log_likelihood(small_model, x, num_samples=500)
  # Two independent 500-sample estimates of the same quantity.
  np.testing.assert_allclose(served, reference, atol=0.5)
  assert np.all(served >= scores["elbo"].numpy())


def test_bad_values_are_rejected_inside_the_graph(exported):
  _, _, loaded = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must lie in \[0, 1\]"):
    loaded.signatures["encode"](x=tf.fill([1, 784], np.nan))
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must be >= 1"):
    loaded.signatures["score"](x=tf.zeros([1, 784]), num_samples=tf.constant([0]))


def test_warmup_requests_cover_every_signature_and_config_is_stored(exported):
  from tensorflow_serving.apis import prediction_log_pb2

  _, path, loaded = exported
  records = list(tf.data.TFRecordDataset(str(path / "assets.extra" / export.WARMUP_FILE)))
  logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
  names = {log.predict_log.request.model_spec.signature_name for log in logs}
  assert names == {"encode", "decode", "sample", "reconstruct", "score", "serving_default"}
  for log in logs:  # each record is a valid call of its signature
    request = log.predict_log.request
    loaded.signatures[request.model_spec.signature_name](
        **{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
  assert json.loads(export.load_config_json(path)) == {"k": 1}


def test_a_process_that_imports_only_tensorflow_can_serve_it(exported):
  _, path, _ = exported
  script = textwrap.dedent(f"""
      import sys
      import numpy as np
      import tensorflow as tf
      loaded = tf.saved_model.load({str(path)!r})
      out = loaded.signatures["sample"](seed=tf.constant([1, 2], tf.int64))
      assert out["x"].shape == (2, 784), out["x"].shape
      leaked = [m for m in sys.modules if m.split(".")[0] in ("vae_tf", "tensorflow_probability")]
      assert not leaked, leaked
      print("ok")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin"})
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith("ok")
