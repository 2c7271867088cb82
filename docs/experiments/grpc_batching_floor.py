"""How fast gRPC can go on this stack with batching's unavoidable work and
nothing else, against the naive server: the experiment behind docs/serving.md,
"gRPC's ceiling with a model".

  python docs/experiments/grpc_batching_floor.py <model base path> <work folder> [work ...]

Runs bench.naive_server under wrk at 64 clients (the targets' yardstick), then
bench.floor_server's gRPC Predict in one process and in two sharing the port,
under h2load at 64 clients, three ways: a canned answer (`none`), a wait for a
batch thread that completes all waiting requests at once (`handoff`), and that
wait plus one `encode` call per batch on as many rows as requests (`model`);
and `model` again with the batch thread waiting 0.5 and 1 ms for more requests;
then `inline`: no batch thread, the requests of one event-loop turn share one
`encode` call that the loop makes itself at the end of the turn.
Prints requests/s, the servers' CPU per request and the ratio to the naive
server. 8 s per cell after 2 s of warm-up, as bench.serving_load.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench import serving_load  # noqa: E402
from serving.testing import ServerProcess, free_port  # noqa: E402

SECONDS, WARMUP_SECONDS, CLIENTS = 8, 2, 64
WAITS_MICROS = (500, 1000)
WORKS = ("none", "handoff", "model", "inline")  # bench.floor_server's --grpc_work


def _measured(servers: list[ServerProcess], load) -> tuple[float, float]:
  """(requests/s, server CPU us per request) of `load(seconds)`."""
  load(WARMUP_SECONDS)
  cpu = sum(serving_load._cpu_seconds(s.pid) for s in servers)
  result = load(SECONDS)
  cpu = sum(serving_load._cpu_seconds(s.pid) for s in servers) - cpu
  if result["failed"]:
    raise RuntimeError(f"{result['failed']} requests failed")
  return result["requests"] / result["seconds"], cpu / result["requests"] * 1e6


def naive_rate(base_path: str, work_dir: pathlib.Path) -> tuple[float, float]:
  body_path, script = work_dir / "body.json", work_dir / "post.lua"
  body_path.write_text(json.dumps({"signature_name": serving_load.SIGNATURE,
                                   "instances": [serving_load._request_row()[0]]}))
  script.write_text(serving_load._WRK_SCRIPT)
  port = free_port()
  with ServerProcess([f"--model_base_path={base_path}", f"--port={port}"],
                     work_dir / "naive.log", module="bench.naive_server",
                     ready_marker="Naive server at:", rest_port=port) as naive:
    naive.wait_ready(300)
    url = f"{naive.rest}/v1/models/vae:predict"
    return _measured([naive], lambda s: serving_load._wrk(url, CLIENTS, s, body_path, script))


def floor_rate(frame_path: pathlib.Path, work_dir: pathlib.Path, processes: int,
               work: str = "none", wait_micros: int = 0,
               base_path: str | None = None) -> tuple[float, float]:
  """bench.floor_server's gRPC Predict in `processes` processes sharing one port,
  under h2load at 64 clients: (requests/s, server CPU us per request)."""
  port = free_port()
  flags = [f"--grpc_work={work}", f"--batch_wait_micros={wait_micros}"]
  if base_path is not None:
    flags.append(f"--model_base_path={base_path}")
  servers = [ServerProcess(["--api=grpc", f"--port={port}", "--reuse_port", *flags],
                           work_dir / f"floor_{work}_{processes}_{wait_micros}_{index}.log",
                           module="bench.floor_server", ready_marker="grpc floor at:",
                           rest_port=port) for index in range(processes)]
  try:
    for server in servers:
      server.wait_ready(300)
    url = f"http://127.0.0.1:{port}{serving_load.GRPC_PREDICT}"
    log_path = work_dir / "h2load.log"
    return _measured(servers, lambda s: serving_load._h2load(url, CLIENTS, s, frame_path,
                                                             log_path))
  finally:
    for server in servers:
      server.stop()


def write_frame(work_dir: pathlib.Path) -> pathlib.Path:
  """The bench's gRPC request frame, in `work_dir`."""
  frame_path = work_dir / "predict.frame"
  frame_path.write_bytes(serving_load._grpc_frame(serving_load._request_row()[1]))
  return frame_path


def main(base_path: str, work_dir: str, works: list[str]) -> None:
  serving_load.FLAGS(["grpc_batching_floor"])  # the bench's defaults (wrk's timeout)
  work_dir = pathlib.Path(work_dir)
  work_dir.mkdir(parents=True, exist_ok=True)
  frame_path = write_frame(work_dir)
  naive, naive_cpu = naive_rate(base_path, work_dir)
  print(f"{'naive server, REST':44s} {naive:8,.0f} requests/s {naive_cpu:6,.0f} us CPU/request",
        flush=True)
  cells = [(work, processes, 0) for work in ("none", "handoff", "model") for processes in (1, 2)]
  cells += [("model", 1, wait) for wait in WAITS_MICROS] + [("model", 2, WAITS_MICROS[-1])]
  cells += [("inline", processes, wait) for processes in (1, 2) for wait in (0, 1000)]
  for work, processes, wait in [cell for cell in cells if not works or cell[0] in works]:
    rate, cpu = floor_rate(frame_path, work_dir, processes, work, wait, base_path)
    label = f"gRPC floor, {work}, {processes} process(es)" + (f", wait {wait} us" if wait else "")
    print(f"{label:44s} {rate:8,.0f} requests/s {cpu:6,.0f} us CPU/request "
          f"{rate / naive:5.1f}x naive", flush=True)


if __name__ == "__main__":
  if len(sys.argv) < 3 or not set(sys.argv[3:]) <= set(WORKS):
    sys.exit("usage: python docs/experiments/grpc_batching_floor.py <model base path> "
             f"<work folder> [{'|'.join(WORKS)} ...: only these cells]")
  main(sys.argv[1], sys.argv[2], sys.argv[3:])
