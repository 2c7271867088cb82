"""The floors of bench.serving_load's cells: serving.server's stacks answering without work.

  python -m bench.floor_server --api=grpc|rest --port=<port>

The same server stack as serving.server's API of that name (grpc.aio, or
serving.http_server's HTTP/1.1 server, on uvloop), but every request gets one
canned response, whatever it holds: the stack still receives it (and grpc.aio
decodes its protobuf), but there is no JSON parsing, no model, no batching and
no tensors. A load against it measures what the stack itself costs per request
on this machine, so it bounds what any request path on that stack can reach.
Prints "<api> floor at:<host>:<port>" once it accepts requests.
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import asyncio
import signal

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("api", None, ["grpc", "rest"], "The stack to serve.", required=True)
flags.DEFINE_string("host", "127.0.0.1", "Address to bind.")
flags.DEFINE_integer("port", None, "Port to bind.", lower_bound=1, upper_bound=65535,
                     required=True)
flags.DEFINE_bool("reuse_port", False, "Share the port with other floor servers "
                  "(SO_REUSEPORT): the kernel spreads connections over the processes.")

READY_MARKER = " floor at:"
# The outputs of an `encode` of one row (Nz=20), which the REST floor answers
# in serving.server's own JSON.
ENCODE_OUTPUTS = ("mean", "stddev", "z")
LATENT_DIM = 20


async def _start_grpc():
  import grpc
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

  response = predict_pb2.PredictResponse()
  response.model_spec.name = "floor"

  class Service(prediction_service_pb2_grpc.PredictionServiceServicer):

    async def Predict(self, request, context):
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
  from serving.process import run_loop

  run_loop(_serve())


if __name__ == "__main__":
  app.run(main)
