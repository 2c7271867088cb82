"""The floors of bench.serving_load's cells: serving.server's stacks answering without work.

  python -m bench.floor_server --api=grpc|rest --port=<port>
      [--grpc_work=none|handoff|model|inline --model_base_path=<folder of versions>]

The same server stack as serving.server's API of that name (grpc.aio, or
serving.http_server's HTTP/1.1 server, on uvloop), but every request gets one
canned response, whatever it holds: the stack still receives it (and grpc.aio
decodes its protobuf), but there is no JSON parsing, no model, no batching and
no tensors. A load against it measures what the stack itself costs per request
on this machine, so it bounds what any request path on that stack can reach.

For gRPC, --grpc_work adds what a batching server cannot skip, and nothing
else: with `handoff` each Predict waits for a batch thread that completes all
the requests waiting at once (serving.server's batch thread and its one
completion callback per batch, in their simplest form); with `model` that thread also calls the
newest version's `encode` once per batch, on as many rows as requests;
--batch_wait_micros has it wait that long for more requests first. With
`inline` there is no batch thread: the requests one event-loop turn receives
wait for a callback at the end of that turn, which calls `encode` on as many
rows on the loop's own thread and completes them. No
tensor is read from a request or written to a response, nothing is checked
and nothing counted.
Prints "<api> floor at:<host>:<port>" once it accepts requests.
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import asyncio
import signal
import threading
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("api", None, ["grpc", "rest"], "The stack to serve.", required=True)
flags.DEFINE_string("host", "127.0.0.1", "Address to bind.")
flags.DEFINE_integer("port", None, "Port to bind.", lower_bound=1, upper_bound=65535,
                     required=True)
flags.DEFINE_enum("grpc_work", "none", ["none", "handoff", "model", "inline"],
                  "What each gRPC Predict waits for (see the module's help).")
flags.DEFINE_integer("batch_wait_micros", 0, "How long the batch thread waits, once a request "
                     "is waiting, before it takes all that are waiting.", lower_bound=0)
flags.DEFINE_string("model_base_path", None,
                    "Folder of integer-named SavedModel versions, for --grpc_work=model.")
flags.DEFINE_bool("reuse_port", False, "Share the port with other floor servers "
                  "(SO_REUSEPORT): the kernel spreads connections over the processes.")

READY_MARKER = " floor at:"
# The outputs of an `encode` of one row (Nz=20), which the REST floor answers
# in serving.server's own JSON.
ENCODE_OUTPUTS = ("mean", "stddev", "z")
LATENT_DIM = 20


def _encode_rows():
  """`run(rows)`: the newest version's encode on `rows` copies of one row."""
  import numpy as np
  import tensorflow as tf

  from serving.servable import Servable

  # As bench.serving_load runs serving.server: one thread per TensorFlow pool.
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  base = Path(FLAGS.model_base_path)
  version = max(int(p.name) for p in base.iterdir() if p.name.isdigit())
  servable = Servable("floor", version, base / str(version))
  signature = servable.signature("encode")
  names = sorted(signature.outputs)
  row = np.random.default_rng(0).random((1, signature.inputs["x"].shape[1])).astype(np.float32)
  return lambda rows: servable.run(signature, {"x": np.repeat(row, rows, axis=0)}, names)


def _complete(batch: list[asyncio.Future]) -> None:
  for future in batch:
    if not future.done():  # cancelled: its client went away
      future.set_result(None)


class _BatchThread:
  """Completes all the futures waiting on it at once, after one model call if any."""

  def __init__(self, loop: asyncio.AbstractEventLoop, run_model, wait_seconds: float):
    self._loop = loop
    self._wait_seconds = wait_seconds
    self._run_model = run_model
    self._waiting: list[asyncio.Future] = []
    self._condition = threading.Condition()
    threading.Thread(target=self._work, name="batch", daemon=True).start()

  def wait(self) -> asyncio.Future:
    future = self._loop.create_future()
    with self._condition:
      self._waiting.append(future)
      self._condition.notify()
    return future

  def _work(self) -> None:
    while True:
      with self._condition:
        while not self._waiting:
          self._condition.wait()
      if self._wait_seconds:
        time.sleep(self._wait_seconds)
      with self._condition:
        batch, self._waiting = self._waiting, []
      if self._run_model is not None:
        self._run_model(len(batch))
      self._loop.call_soon_threadsafe(_complete, batch)


class _LoopTurnBatch:
  """Completes the requests one event-loop turn received, after one model call
  on the loop's own thread at the end of that turn."""

  def __init__(self, loop: asyncio.AbstractEventLoop, run_model, wait_seconds: float):
    self._loop = loop
    self._run_model = run_model
    self._wait_seconds = wait_seconds
    self._waiting: list[asyncio.Future] = []

  def wait(self) -> asyncio.Future:
    future = self._loop.create_future()
    self._waiting.append(future)
    if len(self._waiting) == 1:
      if self._wait_seconds:
        self._loop.call_later(self._wait_seconds, self._run)
      else:
        self._loop.call_soon(self._run)
    return future

  def _run(self) -> None:
    batch, self._waiting = self._waiting, []
    self._run_model(len(batch))
    _complete(batch)


async def _start_grpc():
  import grpc
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

  response = predict_pb2.PredictResponse()
  response.model_spec.name = "floor"
  batch_thread = None
  if FLAGS.grpc_work == "inline":
    batch_thread = _LoopTurnBatch(asyncio.get_running_loop(), _encode_rows(),
                                  FLAGS.batch_wait_micros / 1e6)
  elif FLAGS.grpc_work != "none":
    batch_thread = _BatchThread(asyncio.get_running_loop(),
                                _encode_rows() if FLAGS.grpc_work == "model" else None,
                                FLAGS.batch_wait_micros / 1e6)

  class Service(prediction_service_pb2_grpc.PredictionServiceServicer):

    async def Predict(self, request, context):
      if batch_thread is not None:
        await batch_thread.wait()
      return response

  server = grpc.aio.server(options=[("grpc.so_reuseport", int(FLAGS.reuse_port))])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
  if not server.add_insecure_port(f"{FLAGS.host}:{FLAGS.port}"):
    raise OSError(f"cannot bind {FLAGS.host}:{FLAGS.port}")
  await server.start()
  return lambda: server.stop(grace=None)


async def _start_rest():
  import numpy as np

  from serving import http_server, json_response

  rng = np.random.default_rng(0)
  outputs = {name: rng.standard_normal((1, LATENT_DIM)).astype(np.float32)
             for name in ENCODE_OUTPUTS}
  answer = http_server.Response(200, json_response.response(outputs, row_format=True))

  async def handler(request: http_server.Request) -> http_server.Response:
    return answer

  server = http_server.HttpServer(handler, max_body_bytes=1 << 20,
                                  too_large=http_server.Response(413, b"{}"))
  await server.start(FLAGS.host, FLAGS.port, reuse_port=FLAGS.reuse_port)
  return server.shutdown


async def _serve() -> None:
  stop_server = await (_start_grpc() if FLAGS.api == "grpc" else _start_rest())
  stop = asyncio.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    asyncio.get_running_loop().add_signal_handler(signum, stop.set)
  print(f"{FLAGS.api}{READY_MARKER}{FLAGS.host}:{FLAGS.port}", flush=True)
  await stop.wait()
  await stop_server()


def main(argv):
  del argv
  if (FLAGS.grpc_work != "none" or FLAGS.batch_wait_micros) and FLAGS.api != "grpc":
    raise app.UsageError("--grpc_work and --batch_wait_micros are for --api=grpc")
  if FLAGS.grpc_work in ("model", "inline") and not FLAGS.model_base_path:
    raise app.UsageError(f"--grpc_work={FLAGS.grpc_work} needs --model_base_path")
  from serving.process import run_loop

  run_loop(_serve())


if __name__ == "__main__":
  app.run(main)
