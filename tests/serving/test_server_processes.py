"""--num_processes: several processes answer the gRPC and REST ports."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import psutil
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving_helpers import REPO, free_port, http


def answering_process(processes: list[psutil.Process], port: int, client_port: int) -> int:
  """The pid of the process holding the server end of the loopback connection from client_port."""
  for process in processes:
    for connection in process.net_connections(kind="tcp"):
      if connection.laddr.port == port and connection.raddr and \
          connection.raddr.port == client_port:
        return process.pid
  raise AssertionError(f"no server process holds the connection from port {client_port}")


def test_every_process_answers_both_apis_and_stops_with_the_server(start_server, export_base,
                                                                  mnist_test_x):
  server = start_server("--model_name=vae", f"--model_base_path={export_base / 'vae'}",
                        "--enable_batching", "--num_processes=2")
  main = psutil.Process(server.pid)
  extra = [p for p in main.children() if "spawn_main" in " ".join(p.cmdline())]
  assert len(extra) == 1, [p.cmdline() for p in main.children()]
  body = {"signature_name": "encode", "instances": mnist_test_x[:2].tolist()}
  for _ in range(20):  # a new connection each: the kernel spreads them over the processes
    status, raw = http("POST", f"{server.rest}/v1/models/vae:predict", body)
    assert status == 200, raw[:300]
    assert len(json.loads(raw)["predictions"]) == 2
  status, raw = http("GET", f"{server.rest}/v1/models/vae")
  assert status == 200 and json.loads(raw)["model_version_status"][0]["state"] == "AVAILABLE"

  request = predict_pb2.PredictRequest()
  request.model_spec.name = "vae"
  request.model_spec.signature_name = "encode"
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(mnist_test_x[:3]))
  channels, answered_by = [], set()
  try:
    while len(channels) < 40 and len(answered_by) < 2:
      channel = grpc.insecure_channel(server.grpc_target,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
      channels.append(channel)
      response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
          request, timeout=60)
      assert len(tf.make_ndarray(response.outputs["mean"])) == 3
      client_ports = {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
                      if c.raddr and c.raddr.port == server.grpc_port}
      answered_by |= {answering_process([main, *extra], server.grpc_port, port)
                      for port in client_ports}
  finally:
    for channel in channels:
      channel.close()
  assert answered_by == {main.pid, extra[0].pid}

  # A port in use stays a clear error, although the processes share theirs.
  for taken, api in (([f"--rest_api_port={server.rest_port}", f"--port={free_port()}"], "REST"),
                     ([f"--port={server.grpc_port}"], "gRPC")):
    result = subprocess.run(
        [sys.executable, "-m", "serving.server", "--model_name=vae",
         f"--model_base_path={export_base / 'vae'}", "--host=127.0.0.1", *taken,
         "--num_processes=2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    port = server.rest_port if api == "REST" else server.grpc_port
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot bind the {api} port 127.0.0.1:{port}"), result.stderr[-500:]

  assert server.stop() == 0
  assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in extra)
