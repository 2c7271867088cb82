"""Serving latency and throughput: serving.server vs a naive server and in-process calls.

  python -m bench.serving_load [--seconds=10] [--warmup_seconds=3] [--concurrency=1,8,64]
      [--protocols=rest,grpc] [--batching=off,on] [--model_base_path=EXPORT_BASE/vae]

Every request asks the `encode` signature for ONE 784-pixel row (random grey
levels, 4 decimals in JSON, about 5.5 KB), from 1, 8 and 64 concurrent
clients that each send their next request as soon as the last one answers.
Measured, each cell after --warmup_seconds on fresh connections:
  serving.server  (this project) over REST and gRPC, server-side batching
                  off and on (--batching_parameters_file, by default
                  max_batch_size 64, batch_timeout_micros 0, one batch thread);
  naive           bench.naive_server: ThreadingHTTPServer, json, one
                  signature call per request; REST only;
  in-process      the ceiling: the same signature called in a loop, no
                  server, at batch 1 (calls/s) and batch 64 (rows/s).
Without --model_base_path the run of --model_dir is exported to a temporary
folder first.

Servers and load generators are separate processes, so neither shares a GIL
with the other. The load generators (--client_processes of them, clients
split between them) are asyncio loops on persistent connections: REST sends
pre-serialized HTTP/1.1 keep-alive requests on raw streams, gRPC calls the
official PredictionServiceStub with one pre-built PredictRequest on one
channel per process. A request counts when it finishes inside the measured
window: as throughput and latency if it got 200 / OK with predictions, as a
failure otherwise. Their CPU use is recorded, to show they were not the
bottleneck.

Prints a Markdown table and the serving targets (PASS/FAIL); writes both, as
results.md and results.json, to --output_dir.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

from absl import app, flags

from serving.manager import newest_version_path

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/make_run", "Trained run to export when no "
                    "--model_base_path is given.")
flags.DEFINE_string("model_base_path", None, "Folder of integer-named SavedModel versions to "
                    "serve (the newest is used); default: export --model_dir to a temp folder.")
flags.DEFINE_string("model_name", "vae", "Served model name.")
flags.DEFINE_float("seconds", 10.0, "Measured seconds per cell.", lower_bound=0.1)
flags.DEFINE_float("warmup_seconds", 3.0, "Unmeasured seconds of load before each cell.",
                   lower_bound=0.0)
flags.DEFINE_list("concurrency", ["1", "8", "64"], "Numbers of concurrent clients.")
flags.DEFINE_list("protocols", ["rest", "grpc"], "Protocols to load serving.server through.")
flags.DEFINE_list("batching", ["off", "on"], "serving.server with server-side batching off, on.")
flags.DEFINE_string("batching_parameters_file", None, "BatchingParameters text proto for "
                    "batching on (default: max_batch_size 64, batch_timeout_micros 0, "
                    "max_enqueued_batches 100, num_batch_threads 1).")
flags.DEFINE_bool("naive", True, "Measure the naive baseline server.")
flags.DEFINE_bool("in_process", True, "Measure the in-process ceiling.")
flags.DEFINE_integer("client_processes", 2, "Load generator processes (at most one per client).",
                     lower_bound=1)
flags.DEFINE_float("request_timeout", 10.0, "Seconds before a request counts as failed.",
                   lower_bound=0.01)
flags.DEFINE_string("host", "127.0.0.1", "Address the servers bind and clients connect to.")
flags.DEFINE_string("output_dir", "runs/bench_serving", "Where results.md and results.json go.")

flags.register_validator("concurrency", lambda v: all(c.isdigit() and int(c) > 0 for c in v),
                         "must be positive integers")
flags.register_validator("protocols", lambda v: set(v) <= {"rest", "grpc"},
                         "must be among rest, grpc")
flags.register_validator("batching", lambda v: set(v) <= {"off", "on"}, "must be among off, on")

SIGNATURE = "encode"
INPUT_SIZE = 784
LATENT_DIM = 20
DEFAULT_BATCHING_PARAMETERS = """\
max_batch_size { value: 64 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
"""
# Targets, from the serving issue.
TARGET_SPEEDUP = 5.0
TARGET_P99_MS = 50.0
TARGET_P50_MS = 2.0
# What the servers print once they accept requests. Not imported from
# bench.naive_server: its flags would clash with these.
NAIVE_READY_MARKER = "Naive server at:"
SERVER_READY_MARKER = "Exporting HTTP/REST API at:"
_REPO_ROOT = Path(__file__).resolve().parents[1]
_SERVER_START_SECONDS = 180


@dataclasses.dataclass
class Cell:
  """One row of the table."""

  server: str
  protocol: str
  batching: str
  clients: int
  requests_per_second: float
  p50_ms: float
  p99_ms: float
  failures: int
  requests: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)
  server_cpu: float | None = None  # cores busy in the server process
  client_cpu: float | None = None  # cores busy in the load generators, together
  client_cpu_peak: float | None = None  # the busiest load generator


# ----------------------------------------------------------------- payloads


def _request_row():
  """One input row: float32 values as the server reads them from the JSON."""
  import numpy as np

  values = np.round(np.random.default_rng(0).random(INPUT_SIZE), 4)
  return values.tolist(), values.astype(np.float32)


def _rest_request(host: str, port: int, model_name: str, values: list[float]) -> bytes:
  body = json.dumps({"signature_name": SIGNATURE, "instances": [values]}).encode()
  head = (f"POST /v1/models/{model_name}:predict HTTP/1.1\r\n"
          f"Host: {host}:{port}\r\n"
          "Content-Type: application/json\r\n"
          f"Content-Length: {len(body)}\r\n\r\n")
  return head.encode() + body


def _predict_request(model_name: str, row: bytes):
  from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
  from tensorflow_serving.apis import predict_pb2

  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = SIGNATURE
  request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
      dtype=types_pb2.DT_FLOAT, tensor_content=row,
      tensor_shape=tensor_shape_pb2.TensorShapeProto(
          dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1),
               tensor_shape_pb2.TensorShapeProto.Dim(size=INPUT_SIZE)])))
  return request


# ------------------------------------------------------ load generator side


@dataclasses.dataclass(frozen=True)
class LoadJob:
  protocol: str  # "rest" or "grpc"
  host: str
  port: int
  clients: int
  model_name: str
  rest_request: bytes
  row: bytes  # float32 [784], for the gRPC request
  warmup_seconds: float
  seconds: float
  timeout: float


class _Tally:
  """What one load generator saw in the measured window."""

  def __init__(self, measure_from: float, measure_until: float):
    self.measure_from = measure_from
    self.measure_until = measure_until
    self.latencies: list[float] = []
    self.failures = 0
    self.errors: collections.Counter[str] = collections.Counter()

  def record(self, started: float, finished: float, error: str | None) -> None:
    if error is None:
      if self.measure_from <= finished < self.measure_until:
        self.latencies.append(finished - started)
    # A request that fails after the window still failed under the window's
    # load: a server that stalls must not look clean.
    elif finished >= self.measure_from:
      self.failures += 1
      self.errors[error] += 1


async def _read_http_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
  """Status, body and whether the connection stays open; Content-Length bodies only."""
  head = await reader.readuntil(b"\r\n\r\n")
  status = int(head[9:12])
  lowered = head.lower()
  start = lowered.find(b"\r\ncontent-length:")
  if start < 0:
    raise ValueError("response without Content-Length")
  length = int(lowered[start + 17:lowered.index(b"\r\n", start + 2)])
  body = await reader.readexactly(length)
  return status, body, b"\r\nconnection: close" not in lowered


async def _rest_client(job: LoadJob, stop_at: float, tally: _Tally,
                       connection: tuple | None) -> None:
  loop = asyncio.get_running_loop()
  reader, writer = connection or (None, None)
  while (started := loop.time()) < stop_at:
    error = None
    try:
      async with asyncio.timeout(job.timeout):
        if writer is None:
          reader, writer = await asyncio.open_connection(job.host, job.port)
        writer.write(job.rest_request)
        status, body, keep_alive = await _read_http_response(reader)
      if status != 200:
        error = f"HTTP {status}: {body[:200].decode(errors='replace')}"
      elif b'"predictions"' not in body:
        error = f"HTTP 200 without predictions: {body[:200].decode(errors='replace')}"
    except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
      error, keep_alive = f"{type(exc).__name__}: {exc}", False
    tally.record(started, loop.time(), error)
    if not keep_alive:
      if writer is not None:
        writer.close()
      reader = writer = None
      if error is not None:
        await asyncio.sleep(0.01)  # a server refusing connections needs no busy loop
  if writer is not None:
    writer.close()


async def _grpc_client(stub, request, job: LoadJob, stop_at: float, tally: _Tally) -> None:
  import grpc

  loop = asyncio.get_running_loop()
  while (started := loop.time()) < stop_at:
    error = None
    try:
      response = await stub.Predict(request, timeout=job.timeout)
      if "z" not in response.outputs:
        error = f"OK without output z: {sorted(response.outputs)}"
    except grpc.aio.AioRpcError as exc:
      error = f"{exc.code().name}: {exc.details()}"
    tally.record(started, loop.time(), error)


async def _run_load(job: LoadJob, conn) -> dict | None:
  """Connects, reports ready, waits for the start time from `conn`, loads,
  tallies; None if told to stop (None) instead of a start time."""
  if job.protocol == "rest":
    connections = [await asyncio.open_connection(job.host, job.port) for _ in range(job.clients)]
  else:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.aio.insecure_channel(f"{job.host}:{job.port}")
    await asyncio.wait_for(channel.channel_ready(), job.timeout)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = _predict_request(job.model_name, job.row)
  conn.send("ready")
  start = conn.recv()  # the same monotonic clock in every process (CLOCK_MONOTONIC)
  if start is None:
    return None
  measure_from = start + job.warmup_seconds
  measure_until = measure_from + job.seconds
  tally = _Tally(measure_from, measure_until)
  loop = asyncio.get_running_loop()
  await asyncio.sleep(max(0.0, start - loop.time()))
  if job.protocol == "rest":
    clients = [_rest_client(job, measure_until, tally, c) for c in connections]
  else:
    clients = [_grpc_client(stub, request, job, measure_until, tally) for _ in range(job.clients)]

  cpu_marks = []

  async def mark_cpu():
    for moment in (measure_from, measure_until):
      await asyncio.sleep(max(0.0, moment - loop.time()))
      cpu_marks.append(time.process_time())

  await asyncio.gather(mark_cpu(), *clients)
  if job.protocol == "grpc":
    await channel.close()
  return {"latencies": tally.latencies, "failures": tally.failures,
          "errors": dict(tally.errors.most_common(5)),
          "cpu_seconds": cpu_marks[1] - cpu_marks[0]}


async def _verify(job: LoadJob) -> dict:
  """One request, fully decoded: {output name: values of the row}."""
  import numpy as np

  if job.protocol == "rest":
    reader, writer = await asyncio.open_connection(job.host, job.port)
    try:
      writer.write(job.rest_request)
      status, body, _ = await asyncio.wait_for(_read_http_response(reader), job.timeout)
    finally:
      writer.close()
    if status != 200:
      raise RuntimeError(f"REST predict answered {status}: {body[:500]!r}")
    (prediction,) = json.loads(body)["predictions"]
    return {name: np.asarray(value, np.float32) for name, value in prediction.items()}
  import grpc
  import tensorflow as tf
  from tensorflow_serving.apis import prediction_service_pb2_grpc

  async with grpc.aio.insecure_channel(f"{job.host}:{job.port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = await stub.Predict(_predict_request(job.model_name, job.row),
                                  timeout=job.timeout)
  return {name: tf.make_ndarray(value)[0] for name, value in response.outputs.items()}


def _load_worker(conn) -> None:
  """A load generator process: runs the jobs the benchmark sends until None."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark decides when to stop
  # Imported (TensorFlow with them) before the first job, which must not pay for it.
  # pylint: disable=unused-import
  import grpc  # noqa: F401
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: F401
  # pylint: enable=unused-import

  # One loop for the process's life: grpc.aio binds itself to the first loop.
  loop = asyncio.new_event_loop()
  asyncio.set_event_loop(loop)
  conn.send("started")
  while True:
    try:
      kind, job = conn.recv()
    except (EOFError, TypeError):  # the benchmark ended (or died): so do we
      break
    try:
      if kind == "load":
        result = loop.run_until_complete(_run_load(job, conn))
        if result is None:
          break
      else:
        result = loop.run_until_complete(_verify(job))
    except Exception as error:  # reported to, and raised by, the benchmark
      result = RuntimeError(f"load generator: {type(error).__name__}: {error}")
    conn.send(result)
  loop.close()


class LoadGenerators:
  """--client_processes load generator processes, reused for every cell."""

  def __init__(self, count: int):
    context = multiprocessing.get_context("spawn")
    self._workers = []
    for _ in range(count):
      parent, child = context.Pipe()
      process = context.Process(target=_load_worker, args=(child,), daemon=True)
      process.start()
      child.close()
      self._workers.append((process, parent))
    for process, conn in self._workers:
      self._receive(conn, _SERVER_START_SECONDS)

  @staticmethod
  def _receive(conn, timeout: float):
    try:
      if not conn.poll(timeout):
        raise RuntimeError(f"load generator silent for {timeout:.0f} s")
      message = conn.recv()
    except EOFError:
      raise RuntimeError("a load generator process died") from None
    if isinstance(message, Exception):
      raise message
    return message

  def verify(self, job: LoadJob) -> dict:
    conn = self._workers[0][1]
    conn.send(("verify", job))
    return self._receive(conn, job.timeout + 30)

  def load(self, job: LoadJob, server_pid: int | None = None) -> Cell:
    """Spreads job.clients over the processes and merges what they saw."""
    import numpy as np
    import psutil

    used = self._workers[:min(len(self._workers), job.clients)]
    shares = [job.clients // len(used) + (i < job.clients % len(used)) for i in range(len(used))]
    for (_, conn), share in zip(used, shares):
      conn.send(("load", dataclasses.replace(job, clients=share)))
    for _, conn in used:
      self._receive(conn, job.timeout + 30)
    start = time.monotonic() + 0.1
    for _, conn in used:
      conn.send(start)
    server = psutil.Process(server_pid) if server_pid else None
    server_cpu = None
    if server is not None:
      time.sleep(max(0.0, start + job.warmup_seconds - time.monotonic()))
      begin = server.cpu_times()
      time.sleep(max(0.0, start + job.warmup_seconds + job.seconds - time.monotonic()))
      end = server.cpu_times()
      server_cpu = (end.user + end.system - begin.user - begin.system) / job.seconds
    results = [self._receive(conn, job.warmup_seconds + job.seconds + job.timeout + 60)
               for _, conn in used]
    latencies = np.concatenate([r["latencies"] for r in results]) * 1e3
    errors = collections.Counter()
    for result in results:
      errors.update(result["errors"])
    client_cpu = [r["cpu_seconds"] / job.seconds for r in results]
    return Cell(
        server="", protocol=job.protocol, batching="", clients=job.clients,
        requests_per_second=len(latencies) / job.seconds,
        p50_ms=float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        p99_ms=float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
        failures=sum(r["failures"] for r in results), requests=len(latencies),
        errors=[f"{count}x {text}" for text, count in errors.most_common(5)],
        server_cpu=server_cpu, client_cpu=sum(client_cpu), client_cpu_peak=max(client_cpu))

  def close(self) -> None:
    for process, conn in self._workers:
      with contextlib.suppress(OSError):
        conn.send(None)
    for process, _ in self._workers:
      process.join(10)
      if process.is_alive():
        process.terminate()
        process.join()


# --------------------------------------------------------------- in-process


def _measure_in_process(version_path: str, row, warmup_seconds: float,
                        seconds: float) -> dict:
  """The ceiling: the signature called in a loop at batch 1 and 64, plus the
  reference outputs for `row`. Runs in its own process, alone."""
  import numpy as np
  import tensorflow as tf

  encode = tf.saved_model.load(version_path).signatures[SIGNATURE]

  def call(x):  # a server must hand NumPy values on, so fetching them counts
    return {name: value.numpy() for name, value in encode(x=x).items()}

  rows = np.random.default_rng(1).random((64, INPUT_SIZE)).astype(np.float32)
  measured = {}
  for batch, x in ((1, tf.constant(row[None])), (64, tf.constant(rows))):
    warm_until = time.perf_counter() + warmup_seconds
    while time.perf_counter() < warm_until:
      call(x)
    call(x)
    latencies = []
    end = time.perf_counter() + seconds
    while True:
      started = time.perf_counter()
      call(x)
      finished = time.perf_counter()
      latencies.append(finished - started)
      if finished >= end:
        break
    latencies = np.asarray(latencies) * 1e3
    measured[batch] = {"rows_per_second": batch * len(latencies) / (latencies.sum() / 1e3),
                       "p50_ms": float(np.percentile(latencies, 50)),
                       "p99_ms": float(np.percentile(latencies, 99)), "calls": len(latencies)}
  return {"measured": measured, "reference": call(tf.constant(row[None]))}


# ------------------------------------------------------------------ servers


def _parent_death_signal():
  """A preexec_fn that has the server SIGTERMed should the benchmark die
  without stopping it (SIGKILL), or None where Linux's prctl is missing."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    # Looked up here: after fork, the child should only make the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None
  return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_ports(host: str, count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  try:
    for sock in sockets:
      sock.bind((host, 0))
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


@contextlib.contextmanager
def _running_server(name: str, command: list[str], ready_marker: str, log_path: Path):
  """Starts a server subprocess, yields it once `ready_marker` is in its output,
  and stops it (SIGTERM, then SIGKILL) however the block ends."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  with open(log_path, "wb") as log:
    process = subprocess.Popen(command, cwd=_REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT,
                               preexec_fn=_parent_death_signal())
  try:
    deadline = time.monotonic() + _SERVER_START_SECONDS
    while ready_marker not in (output := log_path.read_text(errors="replace")):
      if process.poll() is not None or time.monotonic() > deadline:
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{name} did not start (exit code {process.poll()}); its log "
                           f"{log_path} ends:\n{tail}")
      time.sleep(0.1)
    yield process, output
  finally:
    if process.poll() is None:
      process.terminate()
      try:
        process.wait(15)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _export(model_dir: str, export_base: Path, model_name: str) -> Path:
  if not (Path(model_dir) / "checkpoints").is_dir():
    raise RuntimeError(f"--model_dir={model_dir} holds no trained run (no checkpoints/): "
                       "train one (make run) or pass --model_base_path")
  print(f"exporting {model_dir} to {export_base} ...", flush=True)
  completed = subprocess.run(
      [sys.executable, "-m", "pipelines.export", f"--model_dir={Path(model_dir).resolve()}",
       f"--export_base={export_base}", f"--model_name={model_name}"],
      cwd=_REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
      text=True)
  if completed.returncode:
    raise RuntimeError(f"pipelines.export failed:\n{completed.stderr[-2000:]}")
  return export_base / model_name


def _check_outputs(where: str, got: dict, reference: dict) -> None:
  import numpy as np

  for name, expected in reference.items():
    value = got.get(name)
    if value is None or value.shape != expected[0].shape or not np.allclose(
        value, expected[0], rtol=1e-4, atol=1e-5):
      raise RuntimeError(f"{where}: output {name} = {value} differs from the in-process "
                         f"signature's {expected[0]}")


# ------------------------------------------------------------------- report


def _format_ms(value: float) -> str:
  return "n/a" if value != value else f"{value:.2f}"


def markdown_table(cells: list[Cell]) -> str:
  lines = ["| server | protocol | batching | clients | requests/s | p50 ms | p99 ms | failures |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
  for c in cells:
    lines.append(f"| {c.server} | {c.protocol} | {c.batching} | {c.clients} | "
                 f"{c.requests_per_second:,.0f} | {_format_ms(c.p50_ms)} | "
                 f"{_format_ms(c.p99_ms)} | {c.failures} |")
  return "\n".join(lines)


def _find(cells: list[Cell], server: str, protocol: str, batching: str, clients: int):
  for cell in cells:
    if (cell.server, cell.protocol, cell.batching, cell.clients) == (server, protocol, batching,
                                                                     clients):
      return cell
  return None


def evaluate_targets(cells: list[Cell]) -> list[dict]:
  """The serving targets, each {"target", "verdict" (PASS/FAIL/SKIP), "detail"}."""
  targets = []

  def add(target: str, passed: bool | None, detail: str) -> None:
    verdict = "SKIP" if passed is None else "PASS" if passed else "FAIL"
    targets.append({"target": target, "verdict": verdict, "detail": detail})

  batched = _find(cells, "serving.server", "rest", "on", 64)
  naive = _find(cells, "naive", "rest", "off", 64)
  name = "batching on, 64 clients, REST: >= 5x the naive server's requests/s"
  if batched and naive:
    speedup = batched.requests_per_second / naive.requests_per_second if (
        naive.requests_per_second) else float("inf")
    add(name, speedup >= TARGET_SPEEDUP and not batched.failures,
        f"{batched.requests_per_second:,.0f} vs {naive.requests_per_second:,.0f} req/s = "
        f"{speedup:.1f}x, {batched.failures} failures")
  else:
    add(name, None, "needs --batching=on, --naive, rest and 64 clients")
  for protocol in ("rest", "grpc"):
    cell = _find(cells, "serving.server", protocol, "on", 64)
    if cell or protocol == "rest":
      name = f"batching on, 64 clients, {protocol.upper()}: p99 < {TARGET_P99_MS:.0f} ms"
      if cell:
        add(name, cell.p99_ms < TARGET_P99_MS and not cell.failures,
            f"p99 {cell.p99_ms:.2f} ms, {cell.failures} failures")
      else:
        add(name, None, "needs --batching=on, rest and 64 clients")
  for batching in ("off", "on"):
    cell = _find(cells, "serving.server", "rest", batching, 1)
    if cell:
      add(f"batching {batching}, 1 client, REST: p50 < {TARGET_P50_MS:.0f} ms",
          cell.p50_ms < TARGET_P50_MS and not cell.failures,
          f"p50 {cell.p50_ms:.2f} ms, {cell.failures} failures")
  if not any(t["target"].endswith(f"p50 < {TARGET_P50_MS:.0f} ms") for t in targets):
    add(f"1 client, REST: p50 < {TARGET_P50_MS:.0f} ms", None, "needs rest and 1 client")
  return targets


def _report(cells: list[Cell], ceiling: dict | None, targets: list[dict], setup: str) -> str:
  lines = [setup, "", markdown_table(cells), ""]
  if ceiling:
    lines.append("in-process rows count model calls at batch 1 and rows at batch 64 "
                 f"({ceiling[64]['rows_per_second'] / 64:,.0f} calls/s).")
  failed = [c for c in cells if c.errors]
  for cell in failed:
    lines.append(f"failures of {cell.server} {cell.protocol} batching {cell.batching} "
                 f"{cell.clients} clients: " + "; ".join(cell.errors))
  busy = [c for c in cells if c.client_cpu_peak is not None and c.client_cpu_peak > 0.8]
  for cell in busy:
    lines.append(f"warning: a load generator was {cell.client_cpu_peak:.0%} busy in "
                 f"{cell.server} {cell.protocol} batching {cell.batching} {cell.clients} "
                 "clients: it may have limited that cell (raise --client_processes)")
  lines += ["", "Targets:"]
  lines += [f"- {t['verdict']}: {t['target']} ({t['detail']})" for t in targets]
  return "\n".join(lines)


# --------------------------------------------------------------------- main


def _measure_server(generators: LoadGenerators, cells: list[Cell], server_name: str,
                    batching: str, server_pid: int, ports: dict[str, int], values: list[float],
                    row, reference: dict) -> None:
  """Checks one answer against `reference`, then loads a running server
  through each protocol in `ports` at each --concurrency."""
  for protocol, port in ports.items():
    job = LoadJob(protocol=protocol, host=FLAGS.host, port=port, clients=1,
                  model_name=FLAGS.model_name,
                  rest_request=_rest_request(FLAGS.host, port, FLAGS.model_name, values),
                  row=row.tobytes(), warmup_seconds=FLAGS.warmup_seconds,
                  seconds=FLAGS.seconds, timeout=FLAGS.request_timeout)
    _check_outputs(f"{server_name} {protocol}", generators.verify(job), reference)
    for clients in (int(c) for c in FLAGS.concurrency):
      cell = generators.load(dataclasses.replace(job, clients=clients), server_pid)
      cell.server, cell.batching = server_name, batching
      cells.append(cell)
      print(f"  {server_name:<15} {protocol:<5} batching {batching:<3} {clients:>3} clients: "
            f"{cell.requests_per_second:>8,.0f} req/s  p50 {_format_ms(cell.p50_ms):>7} ms  "
            f"p99 {_format_ms(cell.p99_ms):>7} ms  failures {cell.failures}  "
            f"(CPU: server {cell.server_cpu:.2f}, clients {cell.client_cpu:.2f} cores)",
            flush=True)


def _cpu_model() -> str:
  with contextlib.suppress(OSError):
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return platform.machine()


def _json_safe(value):
  """NaN (no successful request) as null: JSON has no NaN."""
  if isinstance(value, float) and value != value:
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_json_safe(v) for v in value]
  return value


def run_benchmark(work_dir: Path, load_before: float) -> None:
  if FLAGS.model_base_path:
    base_path = Path(FLAGS.model_base_path).resolve()
    if not base_path.is_dir():
      raise RuntimeError(f"--model_base_path={base_path} is not a folder")
  else:
    base_path = _export(FLAGS.model_dir, work_dir / "export", FLAGS.model_name)
  version_path = newest_version_path(str(base_path))
  values, row = _request_row()
  cells: list[Cell] = []

  ceiling = None
  spawn = multiprocessing.get_context("spawn")
  with futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
    measured = pool.submit(_measure_in_process, str(version_path), row,
                           FLAGS.warmup_seconds if FLAGS.in_process else 0.0,
                           FLAGS.seconds if FLAGS.in_process else 0.0).result()
  reference = measured["reference"]
  if FLAGS.in_process:
    ceiling = measured["measured"]
    for batch in (1, 64):
      cells.append(Cell("in-process", "signature call", f"batch {batch}", 1,
                        ceiling[batch]["rows_per_second"], ceiling[batch]["p50_ms"],
                        ceiling[batch]["p99_ms"], 0, ceiling[batch]["calls"]))
    print(f"  in-process: batch 1 {ceiling[1]['rows_per_second']:,.0f} calls/s "
          f"(p50 {ceiling[1]['p50_ms']:.2f} ms), batch 64 "
          f"{ceiling[64]['rows_per_second']:,.0f} rows/s", flush=True)

  generators = LoadGenerators(FLAGS.client_processes)
  try:
    if FLAGS.naive:
      command = [sys.executable, "-m", "bench.naive_server", f"--model_base_path={base_path}",
                 f"--host={FLAGS.host}", "--port=0"]
      with _running_server("naive server", command, NAIVE_READY_MARKER,
                           work_dir / "naive_server.log") as (process, output):
        port = int(output.split(NAIVE_READY_MARKER, 1)[1].split()[0].rsplit(":", 1)[1])
        _measure_server(generators, cells, "naive", "off", process.pid, {"rest": port}, values,
                        row, reference)
    for batching in FLAGS.batching:
      grpc_port, rest_port = _free_ports(FLAGS.host, 2)
      command = [sys.executable, "-m", "serving.server", f"--model_name={FLAGS.model_name}",
                 f"--model_base_path={base_path}", f"--port={grpc_port}",
                 f"--rest_api_port={rest_port}", f"--host={FLAGS.host}"]
      if batching == "on":
        parameters = FLAGS.batching_parameters_file
        if parameters is not None:
          parameters = Path(parameters).resolve()  # the server runs from the repository root
        else:
          parameters = work_dir / "batching_parameters.txt"
          parameters.write_text(DEFAULT_BATCHING_PARAMETERS)
        command += ["--enable_batching", f"--batching_parameters_file={parameters}"]
      with _running_server(f"serving.server (batching {batching})", command,
                           SERVER_READY_MARKER,
                           work_dir / f"server_batching_{batching}.log") as (process, _):
        ports = {"rest": rest_port, "grpc": grpc_port}
        _measure_server(generators, cells, "serving.server", batching, process.pid,
                        {p: ports[p] for p in FLAGS.protocols}, values, row, reference)
  finally:
    generators.close()

  targets = evaluate_targets(cells)
  setup = (f"encode, one {INPUT_SIZE}-float row per request; {FLAGS.seconds:g} s measured after "
           f"{FLAGS.warmup_seconds:g} s warm-up per cell; {FLAGS.client_processes} load "
           f"generator process(es); {os.cpu_count()} CPUs ({_cpu_model()}), load average "
           f"{load_before:.2f} before the run")
  report = _report(cells, ceiling, targets, setup)
  print()
  print(report)
  output_dir = Path(FLAGS.output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  (output_dir / "results.md").write_text(report + "\n")
  (output_dir / "results.json").write_text(json.dumps(_json_safe({
      "setup": setup,
      "flags": {name: FLAGS[name].value for name in (
          "seconds", "warmup_seconds", "concurrency", "protocols", "batching",
          "client_processes", "request_timeout", "model_dir", "model_base_path")},
      "batching_parameters": (Path(FLAGS.batching_parameters_file).read_text()
                              if FLAGS.batching_parameters_file
                              else DEFAULT_BATCHING_PARAMETERS),
      "cpu_count": os.cpu_count(),
      "rows": [dataclasses.asdict(c) for c in cells],
      "targets": targets,
  }), indent=1) + "\n")
  print(f"\nwrote {output_dir / 'results.md'} and {output_dir / 'results.json'}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  load_before = os.getloadavg()[0]
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # also for the spawned processes
  # A plain `kill` should stop the servers too: SystemExit unwinds the finally blocks.
  signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
  with tempfile.TemporaryDirectory(prefix="bench_serving_") as work_dir:
    try:
      run_benchmark(Path(work_dir), load_before)
    except RuntimeError as error:
      sys.exit(f"error: {error}")
    except KeyboardInterrupt:
      sys.exit("interrupted")


if __name__ == "__main__":
  app.run(main)
