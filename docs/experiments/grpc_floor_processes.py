"""The gRPC floor (grpc.aio answering Predict with a canned response,
bench.floor_server) served by one process and by two sharing the port, under
h2load at 64 clients: whether a second gRPC process would lift the ceiling
that bench.serving_load's gRPC target runs into.

  python docs/experiments/grpc_floor_processes.py <work folder>
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # bench/ is not installed

from bench import serving_load  # noqa: E402
from serving.testing import ServerProcess, free_port  # noqa: E402

SECONDS = 8


def floor_rate(processes: int, work_dir: pathlib.Path, frame_path: pathlib.Path) -> float:
  port = free_port()
  servers = [ServerProcess(["--api=grpc", f"--port={port}", "--reuse_port"],
                           work_dir / f"floor_{processes}_{index}.log",
                           module="bench.floor_server", ready_marker="grpc floor at:",
                           rest_port=port) for index in range(processes)]
  try:
    for server in servers:
      server.wait_ready(300)
    url = f"http://127.0.0.1:{port}{serving_load.GRPC_PREDICT}"
    log_path = work_dir / "h2load.log"
    serving_load._h2load(url, 64, 2, frame_path, log_path)  # warm-up
    result = serving_load._h2load(url, 64, SECONDS, frame_path, log_path)
    return result["requests"] / result["seconds"]
  finally:
    for server in servers:
      server.stop()


def main(work_dir: str) -> None:
  work_dir = pathlib.Path(work_dir)
  work_dir.mkdir(parents=True, exist_ok=True)
  frame_path = work_dir / "predict.frame"
  frame_path.write_bytes(serving_load._grpc_frame(serving_load._request_row()[1]))
  for processes in (1, 2, 1, 2):
    print(f"{processes} process(es): {floor_rate(processes, work_dir, frame_path):,.0f} "
          "requests/s", flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
