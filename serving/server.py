"""A model server that speaks TensorFlow Serving's REST and gRPC APIs.

  python -m serving.server --model_name=vae --model_base_path=runs/make_run/export/vae \\
      --port=8500 --rest_api_port=8501

Flags are named as `tensorflow_model_server`'s, so the same command line and
config files (model config, batching parameters, monitoring) work with the
official server in a cluster. Unlike it, this one binds to localhost unless
--host says otherwise, can answer from several processes (--num_processes,
serving/server_processes.py), and can wait for batches to fill only under load
(--batch_timeout_micros_when_busy).
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import asyncio
import signal
import sys

from absl import app, flags

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
flags.DEFINE_integer("batch_timeout_micros_when_busy", None, "How long a batch waits for "
                     "more requests, instead of the batching parameters' batch_timeout_micros, "
                     "when recent batches held more than one: it starts once it holds as many "
                     "as the largest of them. With batch_timeout_micros 0 a lone client is "
                     "answered at once and concurrent ones fill batches (not in TF Serving).",
                     lower_bound=0)
flags.DEFINE_float("file_system_poll_wait_seconds", 1, "Seconds between polls for new model "
                   "versions; 0 polls once, at start-up.", lower_bound=0)
flags.DEFINE_string("monitoring_config_file", None, "MonitoringConfig text proto "
                    "(Prometheus metrics on the REST port).")
flags.DEFINE_integer("rest_api_max_body_bytes", 64 << 20, "Largest accepted REST request body; "
                     "larger ones get 413.", lower_bound=1)
flags.DEFINE_integer("num_processes", 1, "Processes answering the gRPC and REST ports (each "
                     "loads the models, polls for versions, batches and counts metrics on its "
                     "own); more than one lets the server use more than one core.",
                     lower_bound=1)
flags.DEFINE_integer("tensorflow_intra_op_parallelism", 0, "Threads one TensorFlow op may use; "
                     "0: TensorFlow's choice.", lower_bound=0)
flags.DEFINE_integer("tensorflow_inter_op_parallelism", 0, "Ops TensorFlow may run at once; "
                     "0: TensorFlow's choice.", lower_bound=0)

flags.register_multi_flags_validator(
    ["model_base_path", "model_config_file"],
    lambda f: (f["model_base_path"] is None) != (f["model_config_file"] is None),
    "give exactly one of --model_base_path and --model_config_file")
flags.register_multi_flags_validator(
    ["batch_timeout_micros_when_busy", "enable_batching"],
    lambda f: f["batch_timeout_micros_when_busy"] is None or f["enable_batching"],
    "--batch_timeout_micros_when_busy needs --enable_batching")
flags.register_multi_flags_validator(
    ["batching_parameters_file", "enable_batching"],
    lambda f: f["batching_parameters_file"] is None or f["enable_batching"],
    "server_options.batching_parameters_file is set without setting "
    "server_options.enable_batching to true.")
flags.register_multi_flags_validator(
    ["port", "rest_api_port"], lambda f: f["port"] != f["rest_api_port"],
    "--rest_api_port must differ from --port")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from serving import config, server_processes
  from serving.process import ServerSettings, run_server

  try:
    if FLAGS.model_config_file:
      models = config.read_model_config_file(FLAGS.model_config_file)
    else:
      models = [config.single_model(FLAGS.model_name, FLAGS.model_base_path)]
    batching = None
    if FLAGS.enable_batching:
      batching = config.read_batching_parameters(
          FLAGS.batching_parameters_file,
          busy_batch_timeout_micros=FLAGS.batch_timeout_micros_when_busy)
    metrics_path = config.read_metrics_path(FLAGS.monitoring_config_file)
    if metrics_path and not FLAGS.rest_api_port:
      raise ValueError("--monitoring_config_file needs --rest_api_port: metrics are served "
                       "over HTTP")
    config.check_base_paths(models)
    if FLAGS.num_processes > 1:
      server_processes.check_port_free("gRPC", FLAGS.host, FLAGS.port)
      if FLAGS.rest_api_port:
        server_processes.check_port_free("REST", FLAGS.host, FLAGS.rest_api_port)
  except (OSError, ValueError) as error:
    sys.exit(f"error: {error}")

  settings = ServerSettings(
      models=[model.SerializeToString() for model in models], batching=batching,
      host=FLAGS.host, grpc_port=FLAGS.port, rest_port=FLAGS.rest_api_port,
      metrics_path=metrics_path,
      max_body_bytes=FLAGS.rest_api_max_body_bytes,
      poll_wait_seconds=FLAGS.file_system_poll_wait_seconds,
      intra_op_threads=FLAGS.tensorflow_intra_op_parallelism,
      inter_op_threads=FLAGS.tensorflow_inter_op_parallelism,
      share_ports=FLAGS.num_processes > 1)
  stop = asyncio.Event()

  def on_started(loop: asyncio.AbstractEventLoop) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
      loop.add_signal_handler(signum, stop.set)

  try:
    run_server(settings, stop, on_started, extra_processes=FLAGS.num_processes - 1)
  except OSError as error:
    sys.exit(f"error: {error}")


if __name__ == "__main__":
  app.run(main)
