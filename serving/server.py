"""A model server that speaks TensorFlow Serving's REST and gRPC APIs.

  python -m serving.server --model_name=vae --model_base_path=runs/make_run/export/vae \\
      --port=8500 --rest_api_port=8501

Flags are named as `tensorflow_model_server`'s, so the same command line and
config files (model config, batching parameters, monitoring) work with the
official server in a cluster. Unlike it, this one binds to localhost unless
--host says otherwise.
"""

from __future__ import annotations

import os

# TensorFlow's C++ start-up chatter would bury a one-line error.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import asyncio
import signal
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS

flags.DEFINE_integer("port", 8500, "Port for the gRPC API.", lower_bound=1, upper_bound=65535)
flags.DEFINE_integer("rest_api_port", 0, "Port for the HTTP/REST API; 0 disables it.",
                     lower_bound=0, upper_bound=65535)
flags.DEFINE_string("host", "localhost", "Address to bind; 0.0.0.0 for every interface.")
flags.DEFINE_string("model_name", "default", "Name of the model served with --model_base_path.")
flags.DEFINE_string("model_base_path", None, "Folder of integer-named SavedModel versions.")
flags.DEFINE_string("model_config_file", None, "ModelServerConfig text proto listing several "
                    "models (instead of --model_name/--model_base_path).")
flags.DEFINE_bool("enable_batching", False, "Merge concurrent requests into one model call.")
flags.DEFINE_string("batching_parameters_file", None, "BatchingParameters text proto.")
flags.DEFINE_float("file_system_poll_wait_seconds", 1, "Seconds between polls for new model "
                   "versions; 0 polls once, at start-up.", lower_bound=0)
flags.DEFINE_string("monitoring_config_file", None, "MonitoringConfig text proto "
                    "(Prometheus metrics on the REST port).")
flags.DEFINE_integer("rest_api_max_body_bytes", 64 << 20, "Largest accepted REST request body; "
                     "larger ones get 413.", lower_bound=1)

flags.register_multi_flags_validator(
    ["model_base_path", "model_config_file"],
    lambda f: (f["model_base_path"] is None) != (f["model_config_file"] is None),
    "give exactly one of --model_base_path and --model_config_file")
flags.register_multi_flags_validator(
    ["batching_parameters_file", "enable_batching"],
    lambda f: f["batching_parameters_file"] is None or f["enable_batching"],
    "server_options.batching_parameters_file is set without setting "
    "server_options.enable_batching to true.")
flags.register_multi_flags_validator(
    ["port", "rest_api_port"], lambda f: f["port"] != f["rest_api_port"],
    "--rest_api_port must differ from --port")


async def serve(service, host: str, port: int, rest_port: int, metrics_path: str | None,
                max_body_bytes: int) -> None:
  import grpc
  from aiohttp import web

  from serving import grpc_api, rest

  # SO_REUSEPORT off: otherwise a port another server holds binds silently.
  grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", 2**31 - 1),
                                         ("grpc.max_send_message_length", 2**31 - 1),
                                         ("grpc.so_reuseport", 0)])
  grpc_api.add_services(grpc_server, service)
  try:
    bound = grpc_server.add_insecure_port(f"{host}:{port}")
  except RuntimeError:  # grpcio's way of saying the port is taken
    bound = 0
  if not bound:
    raise OSError(f"cannot bind the gRPC port {host}:{port}: address in use or unavailable")
  await grpc_server.start()
  print(f"Running gRPC ModelServer at {host}:{port} ...", flush=True)
  runner = None
  if rest_port:
    runner = web.AppRunner(rest.RestApi(service, metrics_path, max_body_bytes).app,
                           access_log=None, handle_signals=False)
    await runner.setup()
    try:
      await web.TCPSite(runner, host, rest_port).start()
    except OSError as error:
      await grpc_server.stop(grace=None)
      await runner.cleanup()
      raise OSError(f"cannot bind the REST port {host}:{rest_port}: {error.strerror}") from None
    print(f"Exporting HTTP/REST API at:{host}:{rest_port} ...", flush=True)

  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for signum in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(signum, stop.set)
  await stop.wait()
  # Drain: stop taking requests, let those in flight finish.
  if runner is not None:
    await runner.shutdown()
  await grpc_server.stop(grace=5)
  if runner is not None:
    await runner.cleanup()


def _raise_open_file_limit() -> None:
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from concurrent import futures

  from serving import config
  from serving.batching import BatchScheduler
  from serving.manager import ModelManager
  from serving.metrics import ServerMetrics
  from serving.service import ModelService

  try:
    if FLAGS.model_config_file:
      models = config.read_model_config_file(FLAGS.model_config_file)
    else:
      models = [config.single_model(FLAGS.model_name, FLAGS.model_base_path)]
    batching = (config.read_batching_parameters(FLAGS.batching_parameters_file)
                if FLAGS.enable_batching else None)
    metrics_path = config.read_metrics_path(FLAGS.monitoring_config_file)
    if metrics_path and not FLAGS.rest_api_port:
      raise ValueError("--monitoring_config_file needs --rest_api_port: metrics are served "
                       "over HTTP")
    config.check_base_paths(models)
  except (OSError, ValueError) as error:
    sys.exit(f"error: {error}")

  _raise_open_file_limit()
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
  if batching is not None:
    scheduler = BatchScheduler(batching, on_batch=lambda key, size, padded, wait:
                               metrics.record_batch(key[0], size, padded, wait))
  manager.start_polling(FLAGS.file_system_poll_wait_seconds)
  executor = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="predict")
  service = ModelService(manager, scheduler, metrics, executor)
  try:
    asyncio.run(serve(service, FLAGS.host, FLAGS.port, FLAGS.rest_api_port, metrics_path,
                      FLAGS.rest_api_max_body_bytes))
  except OSError as error:
    sys.exit(f"error: {error}")
  finally:
    manager.stop()
    if scheduler is not None:
      scheduler.stop()
    executor.shutdown()


if __name__ == "__main__":
  app.run(main)
