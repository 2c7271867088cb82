"""The naive baseline of bench.serving_load: one model call per HTTP request.

  python -m bench.naive_server --model_base_path=<export_base>/vae [--port=0]

What a first attempt at serving a SavedModel looks like: the standard
library's ThreadingHTTPServer (one thread per connection), json, and the
signature called once per request, however many requests arrive together.
It speaks the slice of TF Serving's REST API that the benchmark sends,
POST /v1/models/<name>[/versions/<v>]:predict with {"instances": [...]} ->
{"predictions": [...]}, so the same load generator hits both servers. Prints
"Naive server at:<host>:<port>" once it accepts requests.
"""

from __future__ import annotations

import os

# TensorFlow's C++ start-up chatter would bury a one-line error.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import http.server
import json
import re
import signal
import sys
import threading

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_base_path", None, "Folder of integer-named SavedModel versions; the "
                    "newest is served.", required=True)
flags.DEFINE_string("host", "127.0.0.1", "Address to bind.")
flags.DEFINE_integer("port", 0, "Port to bind; 0 picks a free one (printed when ready).",
                     lower_bound=0, upper_bound=65535)

READY_MARKER = "Naive server at:"
_PREDICT = re.compile(r"/v1/models/[^/:]+(?:/versions/\d+)?:predict")


def make_handler(signatures: dict) -> type[http.server.BaseHTTPRequestHandler]:
  import numpy as np
  import tensorflow as tf

  class PredictHandler(http.server.BaseHTTPRequestHandler):
    # Keep-alive, as any client or load balancer in front of a server uses.
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm the body
    # would wait for the client's delayed ACK (~40 ms), and the baseline
    # would measure a TCP setting rather than serving.
    disable_nagle_algorithm = True

    def do_POST(self):
      if not _PREDICT.fullmatch(self.path):
        self._reply(404, {"error": f"no such endpoint: {self.path}"})
        return
      try:
        document = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        signature = signatures[document.get("signature_name") or "serving_default"]
        (input_name,) = signature.structured_input_signature[1]
        x = np.asarray(document["instances"], np.float32)
        outputs = {name: value.numpy()
                   for name, value in signature(**{input_name: tf.constant(x)}).items()}
      except (KeyError, TypeError, ValueError, tf.errors.OpError) as error:
        self._reply(400, {"error": f"{type(error).__name__}: {error}"})
        return
      names = sorted(outputs)
      self._reply(200, {"predictions": [{name: outputs[name][row].tolist() for name in names}
                                        for row in range(len(x))]})

    def _reply(self, status: int, document: dict) -> None:
      body = json.dumps(document).encode()
      if status != 200:
        self.close_connection = True  # the request body may be unread
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      pass  # a line per request on stderr would cost more than the request

  return PredictHandler


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import tensorflow as tf

  from serving.manager import newest_version_path

  try:
    path = newest_version_path(FLAGS.model_base_path)
  except OSError as error:
    sys.exit(f"error: {error}")
  signatures = tf.saved_model.load(str(path)).signatures
  server = http.server.ThreadingHTTPServer((FLAGS.host, FLAGS.port), make_handler(signatures))

  def stop(signum, frame):
    del signum, frame
    # shutdown() waits for serve_forever(), which runs on this very thread.
    threading.Thread(target=server.shutdown, daemon=True).start()

  signal.signal(signal.SIGINT, stop)
  signal.signal(signal.SIGTERM, stop)
  host, port = server.server_address[:2]
  print(f"{READY_MARKER}{host}:{port} (serving {path})", flush=True)
  try:
    server.serve_forever()
  finally:
    server.server_close()


if __name__ == "__main__":
  app.run(main)
