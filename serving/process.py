"""One server process: its models, batch scheduler, metrics and front ends.

Every process runs gRPC and REST on the same backend; with --num_processes > 1
the extra ones (serving/server_processes.py) share the main one's ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
from concurrent import futures
from typing import Awaitable, Callable, Iterator

from absl import logging

from serving.batching_options import BatchingOptions


@dataclasses.dataclass(frozen=True)
class ServerSettings:
  """What a server process needs, picklable for the extra processes."""

  models: list[bytes]  # serialized ModelConfig messages
  batching: BatchingOptions | None
  host: str
  grpc_port: int
  rest_port: int  # 0: no REST
  metrics_path: str | None
  max_body_bytes: int
  poll_wait_seconds: float
  intra_op_threads: int = 0
  inter_op_threads: int = 0
  share_ports: bool = False  # SO_REUSEPORT on the gRPC and REST sockets


def raise_open_file_limit() -> None:
  """Lifts the soft limit on open files to the hard one: each HTTP connection
  holds a descriptor, and at the usual soft limit of 1,024 a few hundred idle
  clients would leave no room to accept the next request (EMFILE)."""
  try:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
      hard = max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < hard:
      resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
  except (ImportError, ValueError, OSError):  # not on this platform, or not allowed
    pass


def _configure_tensorflow(settings: ServerSettings) -> None:
  import tensorflow as tf

  # Before any model loads: TensorFlow fixes its thread pools at the first op.
  if settings.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
  if settings.inter_op_threads:
    tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)


@contextlib.contextmanager
def running_backend(settings: ServerSettings) -> Iterator:
  """A ServingBackend with its models loaded and polled; stopped on exit."""
  from tensorflow_serving.config import model_server_config_pb2

  from serving.backend import ServingBackend
  from serving.batching import BatchScheduler
  from serving.manager import ModelManager
  from serving.metrics import ServerMetrics

  _configure_tensorflow(settings)
  models = [model_server_config_pb2.ModelConfig.FromString(m) for m in settings.models]
  metrics = ServerMetrics()
  manager = ModelManager(models, on_load=lambda name, version, status, seconds:
                         metrics.record_load(name, status, seconds))
  manager.poll()
  for model in models:
    try:
      manager.resolve_version(model.name)
    except Exception:  # serve anyway: a version may still arrive
      logging.warning("No version of model %s is available yet; waiting for one under %s",
                      model.name, model.base_path)
  scheduler = None
  if settings.batching is not None:
    scheduler = BatchScheduler(settings.batching, on_batch=lambda key, size, padded, wait:
                               metrics.record_batch(key[0], size, padded, wait))
  manager.start_polling(settings.poll_wait_seconds)
  # TensorFlow and the loaded models leave a few hundred thousand objects that
  # never die; every full collection walked them all, stalling the event loop
  # for a tenth of a second at a time (p99 at 64 clients: 200 ms, 38 with this).
  gc.collect()
  gc.freeze()
  executor = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="predict")
  try:
    yield ServingBackend(manager, scheduler, metrics, executor)
  finally:
    manager.stop()
    if scheduler is not None:
      scheduler.stop()
    executor.shutdown()


async def serve(backend, settings: ServerSettings, stop: asyncio.Event,
                on_started: Callable[[asyncio.AbstractEventLoop], None] | None = None,
                after_started: Callable[[], Awaitable[None]] | None = None,
                announce: bool = True) -> None:
  """Serves gRPC and REST (if settings.rest_port) until `stop` is set, then drains.

  `after_started` runs once both listen (the main process waits there for the
  extra ones); then, if `announce`, the ports are printed.
  """
  import grpc

  from serving import grpc_api, http_server, rest

  host = settings.host
  if on_started is not None:
    on_started(asyncio.get_running_loop())
  # SO_REUSEPORT only where processes share the port (checked free first):
  # otherwise a port another server holds would bind silently.
  grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", 2**31 - 1),
                                         ("grpc.max_send_message_length", 2**31 - 1),
                                         ("grpc.so_reuseport", int(settings.share_ports))])
  grpc_api.add_services(grpc_server, backend)
  try:
    bound = grpc_server.add_insecure_port(f"{host}:{settings.grpc_port}")
  except RuntimeError:  # grpcio's way of saying the port is taken
    bound = 0
  if not bound:
    raise OSError(f"cannot bind the gRPC port {host}:{settings.grpc_port}: address in use or "
                  "unavailable")
  await grpc_server.start()
  rest_server = None
  try:
    if settings.rest_port:
      api = rest.RestApi(backend, settings.metrics_path, settings.max_body_bytes)
      rest_server = http_server.HttpServer(api.dispatch, settings.max_body_bytes, api.too_large)
      try:
        await rest_server.start(host, settings.rest_port, reuse_port=settings.share_ports)
      except OSError as error:
        raise OSError(f"cannot bind the REST port {host}:{settings.rest_port}: "
                      f"{error.strerror}") from None
    if after_started is not None:
      # A stop while the extra processes load must not wait for them.
      started = asyncio.ensure_future(after_started())
      stopping = asyncio.ensure_future(stop.wait())
      await asyncio.wait({started, stopping}, return_when=asyncio.FIRST_COMPLETED)
      stopping.cancel()
      if not started.done():
        started.cancel()
        return
      started.result()  # its error, if any
    if announce:
      print(f"Running gRPC ModelServer at {host}:{settings.grpc_port} ...", flush=True)
      if rest_server is not None:
        print(f"Exporting HTTP/REST API at:{host}:{settings.rest_port} ...", flush=True)
    await stop.wait()
    # Drain: stop taking requests, let those in flight finish.
    if rest_server is not None:
      await rest_server.shutdown()
      rest_server = None
    await grpc_server.stop(grace=5)
    grpc_server = None
  finally:
    if grpc_server is not None:
      await grpc_server.stop(grace=None)
    if rest_server is not None:
      await rest_server.shutdown(timeout=0)


def run_loop(main: Awaitable[None]) -> None:
  """Runs `main` on uvloop where installed (a cheaper loop per request), else asyncio's."""
  try:
    import uvloop
  except ImportError:
    asyncio.run(main)
    return
  asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
  asyncio.run(main)


def run_server(settings: ServerSettings, stop: asyncio.Event,
               on_started: Callable[[asyncio.AbstractEventLoop], None],
               extra_processes: int = 0) -> None:
  """The main process, plus `extra_processes` sharing its ports."""
  from serving import server_processes

  raise_open_file_limit()
  with running_backend(settings) as backend, \
      server_processes.ExtraProcesses(settings, extra_processes) as extra:
    run_loop(serve(backend, settings, stop, on_started, after_started=extra.start))
