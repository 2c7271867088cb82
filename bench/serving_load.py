"""Serving throughput and latency: serving.server against a naive server and the in-process ceiling.

  python -m bench.serving_load [--seconds=8] [--warmup_seconds=2] [--model_base_path=...]
      [--num_processes=<cores>]
      [--batching_parameters_file=serving/batching_parameters.pbtxt]

Every request asks the `encode` signature for ONE 784-float row (random grey
levels, 4 decimals in JSON, about 6 KB). Native load generators, so the client
side costs little of the shared CPUs:
  REST   wrk (Debian package `wrk`), a Lua script POSTing the JSON body on
         keep-alive connections, one request in flight per connection;
  gRPC   h2load (Debian package `nghttp2-client`), POSTing one pre-serialised
         gRPC frame of the PredictRequest over HTTP/2, one stream per client.
Cells, each after --warmup_seconds of unmeasured load: serving.server with
batching on (the parameters `make serve` uses) over REST at 1 and 64 clients
and over gRPC at 64; bench.naive_server (one model call per request) over REST
at 1 and 64; REST at 64 clients while a new model version is hot-loaded; and
the in-process ceiling, the signature called in a loop at batch 1 and 64; and
the floors at 64 clients: the REST and gRPC stacks answering a canned
response without parsing the request or calling a model (bench.floor_server).

A request fails if it times out, is refused, or is not answered 200 / OK. A
gRPC error comes as HTTP 200 with no message, so h2load's count of received
DATA bytes, divided by the size of the one OK answer (which has a fixed
size), says how many were OK. "server CPU" is the
server processes' CPU time per request: unlike requests/s it barely moves when
other work shares the machine. Prints one table with the ratios to the naive
server and the targets, and writes results.md and results.json to --output_dir.
"""

from __future__ import annotations

from pipelines import console  # noqa: F401  (first: quiet TensorFlow start-up)

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

from absl import app, flags

from serving.testing import REPO, ServerProcess, free_port

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/make_run", "Trained run to export when no "
                    "--model_base_path is given.")
flags.DEFINE_string("model_base_path", None, "Folder of integer-named SavedModel versions "
                    "(the newest is served); default: export --model_dir to a temporary folder.")
flags.DEFINE_integer("seconds", 8, "Measured seconds per cell.", lower_bound=1)
flags.DEFINE_integer("warmup_seconds", 2, "Unmeasured seconds of load before each cell.",
                     lower_bound=0)
flags.DEFINE_string("batching_parameters_file",
                    str(REPO / "serving" / "batching_parameters.pbtxt"),
                    "BatchingParameters for serving.server (default: `make serve`'s).")
# `make serve`'s: one process per core, one TensorFlow thread per pool, and
# batches that wait up to 10 ms for more requests only under load.
flags.DEFINE_integer("num_processes", os.cpu_count() or 1,
                     "serving.server's --num_processes (default: `make serve`'s, one per "
                     "core).", lower_bound=1)
flags.DEFINE_list("server_flags", ["--tensorflow_intra_op_parallelism=1",
                                   "--tensorflow_inter_op_parallelism=1",
                                   "--batch_timeout_micros_when_busy=10000"],
                  "More serving.server flags (default: `make serve`'s).")
flags.DEFINE_float("request_timeout", 10.0, "Seconds before a request counts as failed.",
                   lower_bound=0.1)
flags.DEFINE_string("output_dir", "runs/bench_serving", "Where results.md and results.json go.")

SIGNATURE = "encode"
GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"  # h2load's URL path
INPUT_SIZE = 784
CLIENTS = (1, 64)
TARGET_SPEEDUP = 5.0
TARGET_P99_MS = 50.0
_WRK_SCRIPT = """\
local file = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "failed": %d, "seconds": %f, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
"""


def _request_row():
  import numpy as np

  values = np.round(np.random.default_rng(0).random(INPUT_SIZE), 4)
  return values.tolist(), values.astype(np.float32)


def _grpc_frame(row) -> bytes:
  """One gRPC message (uncompressed, length-prefixed) holding the PredictRequest."""
  from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
  from tensorflow_serving.apis import predict_pb2

  request = predict_pb2.PredictRequest()
  request.model_spec.name = "vae"
  request.model_spec.signature_name = SIGNATURE
  request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
      dtype=types_pb2.DT_FLOAT, tensor_content=row.tobytes(),
      tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[
          tensor_shape_pb2.TensorShapeProto.Dim(size=1),
          tensor_shape_pb2.TensorShapeProto.Dim(size=INPUT_SIZE)])))
  message = request.SerializeToString()
  return struct.pack(">BI", 0, len(message)) + message


def _in_process(version_path: str, row, warmup_seconds: float, seconds: float) -> dict:
  """The ceiling, alone in its process: calls/s at batch 1, rows/s at batch 64,
  and the reference outputs for `row`."""
  import numpy as np
  import tensorflow as tf

  encode = tf.saved_model.load(version_path).signatures[SIGNATURE]

  def call(x):  # a server must hand NumPy values on, so fetching them counts
    return {name: value.numpy() for name, value in encode(x=x).items()}

  rows = np.random.default_rng(1).random((64, INPUT_SIZE)).astype(np.float32)
  measured = {}
  for batch, x in ((1, tf.constant(row[None])), (64, tf.constant(rows))):
    until = time.perf_counter() + warmup_seconds
    while time.perf_counter() < until:
      call(x)
    latencies, end = [], time.perf_counter() + seconds
    while not latencies or time.perf_counter() < end:
      started = time.perf_counter()
      call(x)
      latencies.append(time.perf_counter() - started)
    latencies = np.asarray(latencies) * 1e3
    measured[batch] = {"per_second": batch * len(latencies) / (latencies.sum() / 1e3),
                       "p50_ms": float(np.percentile(latencies, 50)),
                       "p99_ms": float(np.percentile(latencies, 99))}
  return {"measured": measured,
          "reference": {k: v[0] for k, v in call(tf.constant(row[None])).items()}}


def _cpu_seconds(pid: int) -> float:
  """CPU time of a process and its children (the extra REST processes)."""
  import psutil

  process = psutil.Process(pid)
  total = 0.0
  for member in [process, *process.children(recursive=True)]:
    try:
      times = member.cpu_times()
      total += times.user + times.system
    except psutil.NoSuchProcess:
      pass
  return total


def _wrk(url: str, clients: int, seconds: int, body_path: Path, script: Path) -> dict:
  command = ["wrk", f"-c{clients}", f"-t{min(clients, 2)}", f"-d{seconds}s",
             f"--timeout={FLAGS.request_timeout:g}s", "-s", str(script), url]
  done = subprocess.run(command, capture_output=True, text=True,
                        env={**os.environ, "BENCH_BODY": str(body_path)})
  lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
  if done.returncode or not lines:
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
  return json.loads(lines[-1][6:])


def _h2load(url: str, clients: int, seconds: int, frame_path: Path, log_path: Path,
            answer_bytes: int | None = None) -> dict:
  """h2load's requests and latencies; with `answer_bytes` (the size of the OK
  answer's gRPC frame), answers without that message count as failed."""
  import numpy as np

  log_path.unlink(missing_ok=True)
  command = ["h2load", f"-c{clients}", "-m1", f"-D{seconds}", f"-d{frame_path}",
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             f"--log-file={log_path}", url]
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode or not log_path.exists():
    raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr.strip()}")
  entries = [line.split("\t") for line in log_path.read_text().splitlines() if line.strip()]
  elapsed = np.array([int(e[2]) for e in entries if e[1] == "200"], dtype=np.float64)
  failed = len(entries) - len(elapsed)
  if answer_bytes is not None:
    traffic = re.search(r"\((\d+)\) data", done.stdout)
    if traffic is None:
      raise RuntimeError(f"h2load printed no count of message bytes: {done.stdout[-500:]}")
    data_bytes = int(traffic.group(1))
    if data_bytes % answer_bytes:
      raise RuntimeError(f"h2load received {data_bytes} bytes of messages, not a multiple of "
                         f"the {answer_bytes}-byte answer")
    failed += len(elapsed) - data_bytes // answer_bytes
  return {"requests": len(entries) - failed, "failed": failed, "seconds": seconds,
          "p50_us": float(np.percentile(elapsed, 50)) if len(elapsed) else float("nan"),
          "p99_us": float(np.percentile(elapsed, 99)) if len(elapsed) else float("nan")}


def _cell(name: str, clients: int, server: ServerProcess, measure) -> dict:
  """Runs `measure(seconds)` after a warm-up, with the server's CPU time around it."""
  if FLAGS.warmup_seconds:
    measure(FLAGS.warmup_seconds)
  cpu = _cpu_seconds(server.pid)
  result = measure(FLAGS.seconds)
  cpu = _cpu_seconds(server.pid) - cpu
  row = {"cell": name, "clients": clients, "per_second": result["requests"] / result["seconds"],
         "p50_ms": result["p50_us"] / 1e3, "p99_ms": result["p99_us"] / 1e3,
         "failed": result["failed"],
         "server_cpu_us": 1e6 * cpu / result["requests"] if result["requests"] else float("nan")}
  print(f"  {name:<44} {row['per_second']:>8,.0f}/s  p50 {row['p50_ms']:7.2f} ms  p99 "
        f"{row['p99_ms']:7.2f} ms  failed {row['failed']}", flush=True)
  return row


def _check_rest(server: ServerProcess, path: str, body: bytes, reference: dict) -> None:
  import urllib.request

  import numpy as np

  request = urllib.request.Request(f"{server.rest}{path}", data=body, method="POST")
  with urllib.request.urlopen(request, timeout=60) as response:
    (prediction,) = json.loads(response.read())["predictions"]
  for name, expected in reference.items():
    if not np.allclose(np.asarray(prediction[name], np.float32), expected, rtol=1e-4, atol=1e-5):
      raise RuntimeError(f"{server.log_path.stem}: output {name} differs from the in-process "
                         "signature's")


def _check_grpc(server: ServerProcess, frame: bytes, reference: dict) -> int:
  """Checks one gRPC Predict against the in-process outputs; the size of its answer's frame."""
  import grpc
  import numpy as np
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

  from serving import tensor_protos

  request = predict_pb2.PredictRequest.FromString(frame[5:])
  with grpc.insecure_channel(server.grpc_target) as channel:
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=60)
  for name, expected in reference.items():
    if not np.allclose(tensor_protos.to_array(response.outputs[name])[0], expected, rtol=1e-4,
                       atol=1e-5):
      raise RuntimeError(f"{server.log_path.stem}: gRPC output {name} differs from the "
                         "in-process signature's")
  return 5 + response.ByteSize()


def _get(url: str) -> str:
  import urllib.request

  with urllib.request.urlopen(url, timeout=60) as response:
    return response.read().decode()


def _add_version(base_path: Path) -> int:
  """Copies the newest version to the next number, renamed into place whole."""
  versions = sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit())
  staging = base_path / f".staging-{versions[-1] + 1}"
  shutil.copytree(base_path / str(versions[-1]), staging)
  staging.rename(base_path / str(versions[-1] + 1))
  return versions[-1] + 1


def _table(rows: list[dict]) -> str:
  naive = {r["clients"]: r["per_second"] for r in rows if r["cell"].startswith("naive")}
  lines = ["| cell | clients | per second | p50 ms | p99 ms | failed | x naive | server CPU us/req |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    ratio = (f"{r['per_second'] / naive[r['clients']]:.1f}x"
             if r["clients"] in naive and naive[r["clients"]]
             and not r["cell"].startswith(("in-process", "REST floor", "gRPC floor"))
             else "")
    cpu = "" if r["server_cpu_us"] != r["server_cpu_us"] else f"{r['server_cpu_us']:,.0f}"
    lines.append(f"| {r['cell']} | {r['clients']} | {r['per_second']:,.0f} | {r['p50_ms']:.2f} | "
                 f"{r['p99_ms']:.2f} | {r['failed']} | {ratio} | {cpu} |")
  return "\n".join(lines)


def _targets(rows: list[dict]) -> list[str]:
  cells = {(r["cell"], r["clients"]): r for r in rows}
  naive = {c: cells.get(("naive server, REST", c)) for c in CLIENTS}
  verdicts = []

  def judge(text: str, passed: bool) -> None:
    verdicts.append(f"- {'PASS' if passed else 'FAIL'}: {text}")

  for name in ("serving.server, REST", "serving.server, gRPC"):
    ours = cells.get((name, 64))
    if ours and naive[64]:
      ratio = ours["per_second"] / naive[64]["per_second"]
      judge(f"{name}, 64 clients: {ratio:.1f}x the naive server (>= {TARGET_SPEEDUP:g}x), p99 "
            f"{ours['p99_ms']:.1f} ms (<= {TARGET_P99_MS:g})",
            ratio >= TARGET_SPEEDUP and ours["p99_ms"] <= TARGET_P99_MS)
  ours = cells.get(("serving.server, REST", 1))
  if ours and naive[1]:
    judge(f"REST, 1 client: p50 {ours['p50_ms']:.2f} ms vs naive {naive[1]['p50_ms']:.2f} ms",
          ours["p50_ms"] <= naive[1]["p50_ms"])
  judge("no failed request in any cell (hot reload included)",
        not any(r["failed"] for r in rows))
  return verdicts


def run(work_dir: Path) -> str:
  for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
    if shutil.which(tool) is None:
      raise RuntimeError(f"{tool} not found: install it with `apt-get install {package}` "
                         f"(Debian package {package})")
  base_path = work_dir / "models" / "vae"
  if FLAGS.model_base_path:
    source = Path(FLAGS.model_base_path).resolve()
    versions = sorted(int(p.name) for p in source.iterdir() if p.name.isdigit())
    if not versions:
      raise RuntimeError(f"--model_base_path={source} holds no integer-named version")
    shutil.copytree(source / str(versions[-1]), base_path / "1")  # hot reload adds to a copy
  else:
    if not (Path(FLAGS.model_dir) / "checkpoints").is_dir():
      raise RuntimeError(f"--model_dir={FLAGS.model_dir} holds no trained run: train one "
                         "(make run) or pass --model_base_path")
    print(f"exporting {FLAGS.model_dir} ...", flush=True)
    subprocess.run([sys.executable, "-m", "pipelines.export",
                    f"--model_dir={Path(FLAGS.model_dir).resolve()}",
                    f"--export_base={base_path.parent}", "--model_name=vae"],
                   cwd=REPO, check=True, capture_output=True)
  values, row = _request_row()
  body_path, frame_path = work_dir / "body.json", work_dir / "frame.bin"
  body = json.dumps({"signature_name": SIGNATURE, "instances": [values]}).encode()
  body_path.write_bytes(body)
  frame_path.write_bytes(_grpc_frame(row))
  script = work_dir / "post.lua"
  script.write_text(_WRK_SCRIPT)
  predict = "/v1/models/vae:predict"

  with futures.ProcessPoolExecutor(1) as pool:  # alone, before any server starts
    ceiling = pool.submit(_in_process, str(base_path / "1"), row, FLAGS.warmup_seconds,
                          FLAGS.seconds).result()
  rows = [{"cell": f"in-process, batch {b} ({'calls' if b == 1 else 'rows'}/s)", "clients": 1,
           "per_second": m["per_second"], "p50_ms": m["p50_ms"], "p99_ms": m["p99_ms"],
           "failed": 0, "server_cpu_us": float("nan")} for b, m in ceiling["measured"].items()]

  naive_port = free_port()
  with ServerProcess([f"--model_base_path={base_path}", f"--port={naive_port}",
                      "--host=127.0.0.1"], work_dir / "naive_server.log",
                     module="bench.naive_server", ready_marker="Naive server at:",
                     rest_port=naive_port) as naive:
    naive.wait_ready(300)
    _check_rest(naive, predict, body, ceiling["reference"])
    for clients in CLIENTS:
      rows.append(_cell("naive server, REST", clients, naive, lambda s, c=clients: _wrk(
          f"{naive.rest}{predict}", c, s, body_path, script)))

  floors = {  # api: (cell, load on the floor server's URL for a number of seconds)
      "rest": ("REST floor: serving.http_server, a canned answer",
               lambda url, s: _wrk(f"{url}{predict}", 64, s, body_path, script)),
      "grpc": ("gRPC floor: grpc.aio, Predict does nothing",
               lambda url, s: _h2load(f"{url}{GRPC_PREDICT}", 64, s, frame_path,
                                      work_dir / "h2load.log")),
  }
  for api, (cell, load) in floors.items():
    floor_port = free_port()
    with ServerProcess([f"--api={api}", f"--port={floor_port}"], work_dir / f"{api}_floor.log",
                       module="bench.floor_server", ready_marker=f"{api} floor at:",
                       rest_port=floor_port) as floor:
      floor.wait_ready(300)
      rows.append(_cell(cell, 64, floor, lambda s: load(floor.rest, s)))

  args = ["--model_name=vae", f"--model_base_path={base_path}", "--enable_batching",
          f"--batching_parameters_file={Path(FLAGS.batching_parameters_file).resolve()}",
          f"--num_processes={FLAGS.num_processes}", *FLAGS.server_flags]
  with ServerProcess(args, work_dir / "server.log") as server:
    server.wait_ready(600)
    _check_rest(server, predict, body, ceiling["reference"])
    for clients in CLIENTS:
      rows.append(_cell("serving.server, REST", clients, server, lambda s, c=clients: _wrk(
          f"{server.rest}{predict}", c, s, body_path, script)))

    answer_bytes = _check_grpc(server, frame_path.read_bytes(), ceiling["reference"])
    rows.append(_cell("serving.server, gRPC (h2load)", 64, server, lambda s: _h2load(
        f"http://{server.grpc_target}{GRPC_PREDICT}", 64, s, frame_path,
        work_dir / "h2load.log", answer_bytes)))
    swap = threading.Timer(FLAGS.warmup_seconds + FLAGS.seconds / 3, _add_version, [base_path])
    swap.start()
    rows.append(_cell("serving.server, REST, new version loaded mid-cell", 64, server,
                      lambda s: _wrk(f"{server.rest}{predict}", 64, s, body_path, script)))
    swap.join()
    _check_rest(server, predict, body, ceiling["reference"])
    if "\"version\": \"2\"" not in _get(f"{server.rest}/v1/models/vae/versions/2"):
      raise RuntimeError("the hot-loaded version 2 is not being served")
  for name in ("serving.server, REST", "serving.server, gRPC (h2load)"):
    for r in rows:
      if r["cell"] == name:
        r["cell"] = name.split(" (")[0]
  setup = (f"encode, one {INPUT_SIZE}-float row per request; {FLAGS.seconds:g} s per cell after "
           f"{FLAGS.warmup_seconds:g} s warm-up; {os.cpu_count()} CPUs, load average "
           f"{os.getloadavg()[0]:.2f}; serving.server --num_processes="
           f"{FLAGS.num_processes} {' '.join(FLAGS.server_flags)}".rstrip())
  report = "\n".join([setup, "", _table(rows), "", "Targets:", *_targets(rows)])
  output_dir = Path(FLAGS.output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  (output_dir / "results.md").write_text(report + "\n")
  (output_dir / "results.json").write_text(json.dumps(
      {"setup": setup, "rows": [{k: (None if v != v else v) for k, v in r.items()} for r in rows],
       "batching_parameters": Path(FLAGS.batching_parameters_file).read_text()}, indent=1) + "\n")
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with tempfile.TemporaryDirectory(prefix="bench_serving_") as work_dir:
    try:
      report = run(Path(work_dir))
    except (RuntimeError, subprocess.CalledProcessError) as error:
      sys.exit(f"error: {error}")
  print()
  print(report)
  print(f"\nwrote {Path(FLAGS.output_dir) / 'results.md'} and results.json")


if __name__ == "__main__":
  app.run(main)
