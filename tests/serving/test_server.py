"""Contract tests: the real server on loopback, spoken to as TF Serving's
clients speak to it (plain HTTP and the official tensorflow_serving.apis
gRPC stubs)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving_helpers import LATENT_DIM, MAX_BODY_BYTES, REPO, http


def predict_url(server, model="vae", suffix=""):
  return f"{server.rest}/v1/models/{model}{suffix}:predict"


def post(server, body, model="vae", suffix=""):
  status, raw = http("POST", predict_url(server, model, suffix), body)
  return status, json.loads(raw)


def grpc_stubs(server):
  channel = grpc.insecure_channel(server.grpc_target)
  return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
          model_service_pb2_grpc.ModelServiceStub(channel))


def predict_request(signature, model="vae", **inputs):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return request


# --- status and metadata -----------------------------------------------------


def test_status_over_rest_and_grpc(vae_server):
  status, body = http("GET", f"{vae_server.rest}/v1/models/vae")
  assert status == 200
  assert json.loads(body) == {"model_version_status": [
      {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
  assert http("GET", f"{vae_server.rest}/v1/models/vae/versions/1")[0] == 200
  _, models = grpc_stubs(vae_server)
  response = models.GetModelStatus(
      get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "vae"}))
  (version,) = response.model_version_status
  assert (version.version, version.state) == (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)


def test_metadata_over_rest_and_grpc(vae_server):
  status, body = http("GET", f"{vae_server.rest}/v1/models/vae/metadata")
  assert status == 200
  metadata = json.loads(body)
  assert metadata["model_spec"] == {"name": "vae", "signature_name": "", "version": "1"}
  signatures = metadata["metadata"]["signature_def"]["signature_def"]
  assert {"encode", "decode", "sample", "reconstruct", "score", "serving_default"} <= set(signatures)
  x = signatures["encode"]["inputs"]["x"]
  assert x["dtype"] == "DT_FLOAT"
  assert [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "784"]
  prediction, _ = grpc_stubs(vae_server)
  response = prediction.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
      model_spec={"name": "vae"}, metadata_field=["signature_def"]))
  unpacked = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(unpacked)
  assert set(unpacked.signature_def) == set(signatures)
  assert response.model_spec.version.value == 1


# --- predict -------------------------------------------------------------------


def test_row_and_columnar_formats_give_the_model_numbers(vae_server, trained_model, mnist_test_x):
  x = mnist_test_x[:3]
  status, rows = post(vae_server, {"signature_name": "encode", "instances": x.tolist()})
  assert status == 200
  assert [set(r) for r in rows["predictions"]] == [{"mean", "stddev", "z"}] * 3
  status, columns = post(vae_server, {"signature_name": "encode", "inputs": {"x": x.tolist()}})
  assert status == 200
  np.testing.assert_array_equal([r["mean"] for r in rows["predictions"]],
                                columns["outputs"]["mean"])
  np.testing.assert_allclose(columns["outputs"]["mean"], trained_model.encode(x).mean(),
                             rtol=1e-5, atol=1e-5)
  assert np.array(columns["outputs"]["z"]).shape == (3, LATENT_DIM)

  # One output: rows and columns carry the bare value.
  status, single = post(vae_server, {"signature_name": "reconstruct", "instances": x.tolist()})
  assert status == 200 and np.array(single["predictions"]).shape == (3, 784)
  status, single = post(vae_server, {"signature_name": "reconstruct", "inputs": x.tolist()})
  assert status == 200 and np.array(single["outputs"]).shape == (3, 784)


def test_every_signature_over_rest(vae_server, mnist_test_x):
  x = mnist_test_x[:2].tolist()
  status, body = post(vae_server, {"signature_name": "score", "instances": [
      {"x": x[0], "num_samples": 200}, {"x": x[1], "num_samples": 1}]})
  assert status == 200
  for row in body["predictions"]:
    assert row["log_likelihood"] >= row["elbo"] and row["elbo"] < 0
  status, body = post(vae_server, {"signature_name": "sample", "inputs": {"seed": [3, 4, 3]}})
  assert status == 200
  assert body["outputs"]["x"][0] == body["outputs"]["x"][2] != body["outputs"]["x"][1]
  status, body = post(vae_server, {"signature_name": "decode",
                                   "instances": [[0.0] * LATENT_DIM]})
  assert status == 200 and len(body["predictions"][0]) == 784
  status, body = post(vae_server, {"instances": x})  # serving_default is encode
  assert status == 200 and set(body["predictions"][0]) == {"mean", "stddev", "z"}


def test_grpc_predict_matches_rest_and_filters_outputs(vae_server, mnist_test_x):
  x = mnist_test_x[:4]
  prediction, _ = grpc_stubs(vae_server)
  request = predict_request("encode", x=x)
  request.output_filter.append("mean")
  response = prediction.Predict(request)
  assert set(response.outputs) == {"mean"}
  assert response.model_spec.version.value == 1
  assert response.model_spec.signature_name == "encode"
  _, body = post(vae_server, {"signature_name": "encode", "inputs": x.tolist()})
  np.testing.assert_allclose(tf.make_ndarray(response.outputs["mean"]),
                             body["outputs"]["mean"], rtol=1e-6)


# --- errors ----------------------------------------------------------------------

ROW = [0.5] * 784


@pytest.mark.parametrize("body, status, message", [
    ("{", 400, "JSON Parse error"),
    ("", 400, "JSON Parse error: The document is empty"),
    ("[1, 2]", 400, "Is not object"),
    ({"instances": [ROW], "inputs": [ROW]}, 400,
     "expecting only one of 'inputs' or 'instances' keys to exist"),
    ({"signature_name": "encode"}, 400, "Missing 'inputs' or 'instances' key"),
    ({"instances": ROW[0]}, 400, "Excepting 'instances' to be an list/array"),
    ({"instances": []}, 400, "No values in 'instances' array"),
    ({"signature_name": "nope", "instances": [ROW]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ({"signature_name": 7, "instances": [ROW]}, 400, "'signature_name' key must be a string"),
    ({"instances": [[0.5] * 10]}, 400, "expects shape [-1,784] but got [1,10]"),
    ({"instances": [ROW, [0.5] * 10]}, 400, "Expecting tensor size: 784 but got: 10"),
    ({"instances": [["a"] * 784]}, 400, 'JSON Value: "a" Type: String is not of expected '
     "type: float"),
    ({"instances": [[True] * 784]}, 400, "Type: True is not of expected type: float"),
    ('{"instances": [[NaN' + ", 0.5" * 783 + "]]}", 400, "x must lie in [0, 1]"),
    ({"instances": [[2.0] * 784]}, 400, "x must lie in [0, 1]"),
    ({"signature_name": "score", "inputs": {"x": [ROW]}}, 400,
     "Missing named input: num_samples in 'inputs' object."),
    ({"signature_name": "score", "instances": [{"x": ROW}]}, 400, "must only have keys: "
     "num_samples,x"),
    ({"signature_name": "score", "instances": [ROW]}, 400, "instances is a plain list, but "
     "expecting list of objects"),
    ({"signature_name": "score", "inputs": {"x": [ROW], "num_samples": [0]}}, 400,
     "num_samples must be >= 1"),
    ({"signature_name": "sample", "inputs": {"seed": [1.5]}}, 400,
     "Type: Number is not of expected type: int64"),
])
def test_bad_requests_get_tf_serving_errors(vae_server, body, status, message):
  got_status, got = post(vae_server, body)
  assert got_status == status
  assert message in got["error"]


@pytest.mark.parametrize("method, path, status, message", [
    ("POST", "/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/vae/versions/9:predict", 404,
     "Servable not found for request: Specific(vae, 9)"),
    ("POST", "/v1/models/vae/labels/stable:predict", 400,
     "Unrecognized servable version label: stable"),
    ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/vae/versions/9", 404, "Could not find version 9 of model vae"),
    ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models", 400, "Missing model name in request."),
    ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
    ("PUT", "/v1/models/vae", 400, "Malformed request: PUT /v1/models/vae"),
    ("POST", "/v1/models/vae:predict?x=1", 400, "Malformed request: POST /v1/models/vae:predict?x=1"),
    ("POST", "/v1/models/vae:classify", 501, "classify is not supported"),
])
def test_bad_paths_get_tf_serving_errors(vae_server, method, path, status, message):
  got_status, raw = http(method, vae_server.rest + path, {"instances": [ROW]})
  assert got_status == status
  assert message in json.loads(raw)["error"]


def test_paths_outside_the_api_get_the_plain_404_page(vae_server):
  status, body = http("GET", f"{vae_server.rest}/index.html")
  assert status == 404 and b"<H1>Not Found</H1>" in body


@pytest.mark.parametrize("signature, inputs, code, message", [
    ("nope", {"x": np.zeros([1, 784], np.float32)}, grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    ("encode", {"x": np.zeros([1, 784], np.float64)}, grpc.StatusCode.INVALID_ARGUMENT,
     "Expects arg[0] to be float but double is provided"),
    ("encode", {"y": np.zeros([1, 784], np.float32)}, grpc.StatusCode.INVALID_ARGUMENT,
     "input tensor alias not found in signature: y. Inputs expected to be in the set {x}."),
    ("score", {"x": np.zeros([1, 784], np.float32)}, grpc.StatusCode.INVALID_ARGUMENT,
     "input size does not match signature: 1!=2 len({x}) != len({num_samples,x}). Sent extra: "
     "{}. Missing but required: {num_samples}."),
    ("encode", {"x": np.zeros([784], np.float32)}, grpc.StatusCode.INVALID_ARGUMENT,
     "expects shape [-1,784] but got [784]"),
])
def test_bad_grpc_requests_get_tf_serving_status(vae_server, signature, inputs, code, message):
  prediction, _ = grpc_stubs(vae_server)
  with pytest.raises(grpc.RpcError) as error:
    prediction.Predict(predict_request(signature, **inputs))
  assert error.value.code() == code
  assert message in error.value.details()


def test_grpc_model_spec_errors(vae_server):
  prediction, models = grpc_stubs(vae_server)
  cases = [
      (lambda: prediction.Predict(predict_request("encode", model="nope",
                                                  x=np.zeros([1, 784], np.float32))),
       grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
      (lambda: prediction.Predict(predict_pb2.PredictRequest()),
       grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
      (lambda: models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
          model_spec={"name": "vae", "version": {"value": 5}})),
       grpc.StatusCode.NOT_FOUND, "Could not find version 5 of model vae"),
      (lambda: prediction.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
          model_spec={"name": "vae"})),
       grpc.StatusCode.INVALID_ARGUMENT, "must specify at least one metadata_field"),
  ]
  for call, code, message in cases:
    with pytest.raises(grpc.RpcError) as error:
      call()
    assert error.value.code() == code and message in error.value.details()


def test_oversized_slow_and_dropped_clients_leave_the_server_serving(vae_server):
  status, raw = http("POST", predict_url(vae_server), b" " * (MAX_BODY_BYTES + 1))
  assert status == 413 and "exceeds the limit" in json.loads(raw)["error"]
  # A client that promises a body and vanishes, and one that stalls mid-body.
  dropped = socket.create_connection(("127.0.0.1", vae_server.rest_port))
  dropped.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000"
                  b"\r\n\r\n{\"instances\": [[0.5,")
  dropped.close()
  stalled = socket.create_connection(("127.0.0.1", vae_server.rest_port))
  stalled.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000"
                  b"\r\n\r\n{\"instances\"")
  try:
    status, body = post(vae_server, {"instances": [ROW]})
    assert status == 200 and len(body["predictions"]) == 1
  finally:
    stalled.close()
  assert http("GET", f"{vae_server.rest}/v1/models/vae")[0] == 200


# --- several models, batching, labels, b64, monitoring ---------------------------


@pytest.fixture(scope="module")
def echo_base(tmp_path_factory):
  """A SavedModel with a DT_STRING input, for the {"b64": ...} encoding."""

  class Echo(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text_bytes")])
    def serve(self, text_bytes):
      return {"length": tf.strings.length(text_bytes), "echo_bytes": text_bytes}

  base = tmp_path_factory.mktemp("echo")
  module = Echo()
  tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
  return base


def write(path, text):
  path.write_text(text)
  return path


def test_config_file_with_batching_labels_b64_and_metrics(start_server, tmp_path, export_base,
                                                          echo_base, mnist_test_x,
                                                          trained_model):
  models = write(tmp_path / "models.config", f"""
      model_config_list {{
        config {{
          name: "vae"  base_path: "{export_base / 'vae'}"  model_platform: "tensorflow"
          model_version_policy {{ specific {{ versions: 1 }} }}
          version_labels {{ key: "stable" value: 1 }}
        }}
        config {{ name: "echo"  base_path: "{echo_base}"  model_platform: "tensorflow" }}
      }}""")
  batching = write(tmp_path / "batching.config", """
      max_batch_size { value: 16 }
      batch_timeout_micros { value: 20000 }
      max_enqueued_batches { value: 100 }
      num_batch_threads { value: 1 }""")
  monitoring = write(tmp_path / "monitoring.config",
                     'prometheus_config { enable: true, path: "/metrics" }')
  server = start_server(f"--model_config_file={models}", "--enable_batching",
                        f"--batching_parameters_file={batching}",
                        f"--monitoring_config_file={monitoring}")

  # Concurrent requests are merged, and each gets its own rows back.
  x = mnist_test_x[:32]
  results, failures = [None] * 32, []

  def call(i):
    status, body = post(server, {"signature_name": "encode", "instances": [x[i].tolist()]})
    if status != 200:
      failures.append(body)
    else:
      results[i] = body["predictions"][0]["mean"]

  threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not failures
  np.testing.assert_allclose(results, trained_model.encode(x).mean(), rtol=1e-5, atol=1e-5)
  status, labelled = post(server, {"signature_name": "encode", "inputs": x[:16].tolist()},
                          suffix="/labels/stable")
  assert status == 200
  np.testing.assert_allclose(labelled["outputs"]["mean"], results[:16], rtol=1e-5, atol=1e-6)

  status, body = post(server, {"signature_name": "encode", "inputs": x[:17].tolist()})
  assert status == 400
  assert body["error"] == "Task size 17 is larger than maximum input batch size 16"
  status, body = post(server, {"inputs": {"b64": "aGk="}}, model="echo")
  assert status == 400
  assert body["error"] == "Batching session Run() input tensors must have at least one dimension"

  text = "héllo".encode()
  status, body = post(server, {"instances": [{"b64": base64.b64encode(text).decode()}]},
                      model="echo")
  assert status == 200
  assert body["predictions"] == [{"length": len(text),
                                  "echo_bytes": {"b64": base64.b64encode(text).decode()}}]

  status, raw = http("GET", f"{server.rest}/metrics")
  metrics = raw.decode()
  assert status == 200
  assert ':tensorflow:serving:request_count{model_name="vae",status="OK"}' in metrics
  batches = [line for line in metrics.splitlines() if line.startswith(
      ':tensorflow:serving:batching_session:processed_batch_size_count{model_name="vae"}')]
  (batch_count,) = [int(line.split()[-1]) for line in batches]
  assert batch_count < 32, "32 concurrent single-row requests should share model calls"


# --- versions ------------------------------------------------------------------------


def status_of(server, version=None):
  suffix = f"/versions/{version}" if version else ""
  status, body = http("GET", f"{server.rest}/v1/models/vae{suffix}")
  return json.loads(body)["model_version_status"] if status == 200 else []


def wait_for(condition, timeout=60):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return
    time.sleep(0.1)
  raise TimeoutError("condition not met")


def test_new_versions_swap_in_under_load_and_broken_ones_are_skipped(
    start_server, tmp_path, export_base, trained_model):
  from vae_tf import export

  base = tmp_path / "models"
  shutil.copytree(export_base, base)
  server = start_server("--model_name=vae", f"--model_base_path={base / 'vae'}",
                        "--file_system_poll_wait_seconds=0.2", "--enable_batching")
  prediction, _ = grpc_stubs(server)
  stop, failures, versions_seen, counts = threading.Event(), [], set(), [0, 0]
  row = np.full([1, 784], 0.5, np.float32)

  def grpc_load():
    while not stop.is_set():
      try:
        response = prediction.Predict(predict_request("encode", x=row), timeout=30)
        versions_seen.add(response.model_spec.version.value)
        counts[0] += 1
      except grpc.RpcError as error:
        failures.append(f"gRPC {error.code()}: {error.details()}")

  def rest_load():
    while not stop.is_set():
      status, raw = http("POST", predict_url(server), {"instances": row.tolist()})
      counts[1] += 1
      if status != 200:
        failures.append(f"REST {status}: {raw[:200]}")

  threads = [threading.Thread(target=f) for f in (grpc_load, grpc_load, rest_load, rest_load)]
  for thread in threads:
    thread.start()
  try:
    time.sleep(1)
    assert export.export_saved_model(trained_model, base, "vae").name == "2"
    wait_for(lambda: 2 in versions_seen)
    wait_for(lambda: [s["state"] for s in status_of(server)] == ["AVAILABLE", "END"])
    # A version that cannot load is reported, and version 2 keeps serving.
    staging = base / "vae" / "staging"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
    os.rename(staging, base / "vae" / "3")
    wait_for(lambda: status_of(server) and status_of(server)[0]["version"] == "3"
             and status_of(server)[0]["state"] == "END")
    time.sleep(1)
  finally:
    stop.set()
    for thread in threads:
      thread.join()
  assert not failures, failures[:5]
  assert min(counts) > 10 and versions_seen == {1, 2}
  (broken,) = status_of(server, 3)
  assert broken["status"]["error_code"] != "OK"
  assert "Failed to load servable version 3" in broken["status"]["error_message"]
  assert [s["state"] for s in status_of(server)] == ["END", "AVAILABLE", "END"]
  status, body = post(server, {"instances": row.tolist()})
  assert status == 200


# --- flags --------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --model_base_path and --model_config_file"),
    (["--model_base_path=/nonexistent/vae"], "Could not find base path /nonexistent/vae"),
    (["--model_base_path=/tmp", "--batching_parameters_file=/tmp/b"],
     "batching_parameters_file is set without setting server_options.enable_batching"),
    (["--model_base_path=/tmp", "--port=8500", "--rest_api_port=8500"],
     "--rest_api_port must differ from --port"),
    (["--model_base_path=/tmp", "--batch_timeout_micros_when_busy=3000"],
     "--batch_timeout_micros_when_busy needs --enable_batching"),
])
def test_bad_flags_exit_with_a_clear_error(args, message):
  result = subprocess.run([sys.executable, "-m", "serving.server", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode != 0
  assert message in result.stderr


def test_bad_config_files_exit_with_a_clear_error(tmp_path, export_base):
  relative = write(tmp_path / "models.config",
                   'model_config_list { config { name: "vae" base_path: "vae" } }')
  garbage = write(tmp_path / "batching.config", "max_batch_size: oops")
  for args, message in [
      ([f"--model_config_file={relative}"], "to have an absolute path"),
      ([f"--model_base_path={export_base / 'vae'}", "--enable_batching",
        f"--batching_parameters_file={garbage}"], "is not a valid BatchingParameters text proto"),
  ]:
    result = subprocess.run([sys.executable, "-m", "serving.server", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode != 0 and message in result.stderr, result.stderr[-500:]


def test_ports_already_taken_are_a_clear_error(vae_server, export_base):
  for taken in ([f"--port={vae_server.grpc_port}", "--rest_api_port=0"],
                [f"--rest_api_port={vae_server.rest_port}"]):
    result = subprocess.run(
        [sys.executable, "-m", "serving.server", "--host=127.0.0.1", "--model_name=vae",
         f"--model_base_path={export_base / 'vae'}", *taken], cwd=REPO, capture_output=True,
        text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot bind the"), result.stderr[-1500:]
