"""Helpers for the serving tests: the real server as a subprocess, and HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LATENT_DIM = 4
MAX_BODY_BYTES = 4_000_000


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  """`python -m serving.server` running on free loopback ports."""

  def __init__(self, args: list[str], log_path: Path):
    self.grpc_port, self.rest_port = free_port(), free_port()
    self.log_path = log_path
    self._log = open(log_path, "w")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    self.process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", f"--port={self.grpc_port}",
         f"--rest_api_port={self.rest_port}", "--host=127.0.0.1", *args],
        cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

  @property
  def rest(self) -> str:
    return f"http://127.0.0.1:{self.rest_port}"

  @property
  def grpc_target(self) -> str:
    return f"127.0.0.1:{self.grpc_port}"

  def log(self) -> str:
    return self.log_path.read_text()

  def wait_ready(self, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
      if "Exporting HTTP/REST API" in self.log():
        return
      time.sleep(0.2)
    raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

  def stop(self) -> int:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(30)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    self._log.close()
    return self.process.returncode


def http(method: str, url: str, body: bytes | str | dict | None = None) -> tuple[int, bytes]:
  """(status, body) of one HTTP request; errors are returned, not raised."""
  if isinstance(body, dict):
    body = json.dumps(body)
  if isinstance(body, str):
    body = body.encode()
  request = urllib.request.Request(url, data=body, method=method)
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as error:
    return error.code, error.read()
