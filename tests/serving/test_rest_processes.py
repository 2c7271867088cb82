"""--rest_api_num_processes: several processes answer the REST port."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

from serving_helpers import REPO, free_port, http


def test_extra_rest_processes_answer_and_stop_with_the_server(start_server, export_base,
                                                              mnist_test_x):
  server = start_server("--model_name=vae", f"--model_base_path={export_base / 'vae'}",
                        "--enable_batching", "--rest_api_num_processes=2")
  extra = [p for p in psutil.Process(server.pid).children()
           if "spawn_main" in " ".join(p.cmdline())]
  assert len(extra) == 1, [p.cmdline() for p in psutil.Process(server.pid).children()]
  body = {"signature_name": "encode", "instances": mnist_test_x[:2].tolist()}
  for _ in range(20):  # a new connection each: the kernel spreads them over the processes
    status, raw = http("POST", f"{server.rest}/v1/models/vae:predict", body)
    assert status == 200, raw[:300]
    assert len(json.loads(raw)["predictions"]) == 2
  status, raw = http("GET", f"{server.rest}/v1/models/vae")
  assert status == 200 and json.loads(raw)["model_version_status"][0]["state"] == "AVAILABLE"

  # A port in use stays a clear error, although the processes share theirs.
  taken = subprocess.run(
      [sys.executable, "-m", "serving.server", "--model_name=vae",
       f"--model_base_path={export_base / 'vae'}", "--host=127.0.0.1",
       f"--rest_api_port={server.rest_port}", f"--port={free_port()}",
       "--rest_api_num_processes=2"], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert taken.returncode != 0
  assert taken.stderr.strip().splitlines()[-1].startswith(
      f"error: cannot bind the REST port 127.0.0.1:{server.rest_port}")

  assert server.stop() == 0
  assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in extra)
