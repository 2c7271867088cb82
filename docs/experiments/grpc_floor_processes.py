"""The gRPC floor (grpc.aio answering Predict with a canned response,
bench.floor_server) served by one process and by two sharing the port, under
h2load at 64 clients: whether a second gRPC process would lift the ceiling
that bench.serving_load's gRPC target runs into.

  python docs/experiments/grpc_floor_processes.py <work folder>
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # bench/ is not installed

from grpc_batching_floor import floor_rate, write_frame  # noqa: E402  (beside this script)


def main(work_dir: str) -> None:
  work_dir = pathlib.Path(work_dir)
  work_dir.mkdir(parents=True, exist_ok=True)
  frame_path = write_frame(work_dir)
  for processes in (1, 2, 1, 2):
    rate, _ = floor_rate(frame_path, work_dir, processes)
    print(f"{processes} process(es): {rate:,.0f} requests/s", flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
