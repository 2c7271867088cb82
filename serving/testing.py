"""Server subprocesses on free loopback ports, for the tests and the benchmark.

  with ServerProcess(["--model_name=vae", "--model_base_path=..."], log_path) as server:
    server.wait_ready()
    ... server.rest, server.grpc_target ...
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY_MARKER = "Exporting HTTP/REST API at:"  # what serving.server prints once it answers


def free_port(host: str = "127.0.0.1") -> int:
  with socket.socket() as sock:
    sock.bind((host, 0))
    return sock.getsockname()[1]


def _die_with_parent():
  """A preexec_fn that has the child SIGTERMed should its parent die without
  stopping it (SIGKILL), or None where Linux's prctl is missing."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    # Looked up here: after fork, the child should only make the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None
  return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
  """`python -m <module> <args>` with its output in `log_path`; by default
  serving.server on free loopback ports (`rest`, `grpc_target`)."""

  def __init__(self, args: list[str], log_path: Path, module: str = "serving.server",
               ready_marker: str = READY_MARKER, host: str = "127.0.0.1",
               rest_port: int | None = None):
    """`rest_port`: where a module other than serving.server listens (its own flags)."""
    self.host = host
    self.rest_port = rest_port
    self.ready_marker = ready_marker
    self.log_path = Path(log_path)
    command = [sys.executable, "-m", module]
    if module == "serving.server":
      self.grpc_port, self.rest_port = free_port(host), free_port(host)
      command += [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                  f"--host={host}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(self.log_path, "wb") as log:
      self.process = subprocess.Popen([*command, *args], cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, preexec_fn=_die_with_parent())

  @property
  def pid(self) -> int:
    return self.process.pid

  @property
  def rest(self) -> str:
    return f"http://{self.host}:{self.rest_port}"

  @property
  def grpc_target(self) -> str:
    return f"{self.host}:{self.grpc_port}"

  def log(self) -> str:
    return self.log_path.read_text(errors="replace")

  def wait_ready(self, timeout: float = 300) -> str:
    """Waits for the ready marker; returns the log so far. The default is generous:
    on a shared 2-core machine TensorFlow's import alone has taken 45 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      output = self.log()
      if self.ready_marker in output:
        return output
      if self.process.poll() is not None:
        raise RuntimeError(f"server exited with {self.process.returncode}:\n{output}")
      time.sleep(0.2)
    raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

  def stop(self) -> int:
    """SIGTERM (the server drains), SIGKILL after 30 s; returns the exit code."""
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(30)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    return self.process.returncode

  def __enter__(self) -> ServerProcess:
    return self

  def __exit__(self, *exc_info) -> None:
    with contextlib.suppress(OSError):
      self.stop()
