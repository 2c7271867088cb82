"""The floor of bench.serving_load's gRPC cell: grpc.aio with a Predict that does nothing.

  python -m bench.grpc_floor_server --port=<port>

The same server stack as serving.server's gRPC API (grpc.aio on uvloop), but
Predict returns one canned PredictResponse without reading the request, so a
load against it measures what grpc.aio itself costs per request on this
machine: no model, no batching, no tensors. Prints "gRPC floor at:<host>:<port>"
once it accepts requests.
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import asyncio
import signal

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("host", "127.0.0.1", "Address to bind.")
flags.DEFINE_integer("port", None, "Port to bind.", lower_bound=1, upper_bound=65535,
                     required=True)

READY_MARKER = "gRPC floor at:"


async def _serve() -> None:
  import grpc
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

  response = predict_pb2.PredictResponse()
  response.model_spec.name = "floor"

  class Service(prediction_service_pb2_grpc.PredictionServiceServicer):

    async def Predict(self, request, context):
      return response

  server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
  if not server.add_insecure_port(f"{FLAGS.host}:{FLAGS.port}"):
    raise OSError(f"cannot bind {FLAGS.host}:{FLAGS.port}")
  await server.start()
  stop = asyncio.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    asyncio.get_running_loop().add_signal_handler(signum, stop.set)
  print(f"{READY_MARKER}{FLAGS.host}:{FLAGS.port}", flush=True)
  await stop.wait()
  await server.stop(grace=None)


def main(argv):
  del argv
  from serving.process import run_loop

  run_loop(_serve())


if __name__ == "__main__":
  app.run(main)
