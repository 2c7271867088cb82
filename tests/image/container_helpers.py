"""Running commands in the vae-tf image with docker, podman or buildah.

docker and podman run each command in a fresh container (`run --rm`);
buildah runs them in one working container made from the image (`buildah
from`), removed at the end. buildah's chroot isolation shares the host's
network namespace, so a server started inside listens on the host's
loopback; docker and podman publish its ports on 127.0.0.1 instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]


def detect_builder() -> str | None:
  """The builder container/lib.sh picks (VAE_TF_BUILDER, or the first that works)."""
  result = subprocess.run(["bash", "-c", '. container/lib.sh && detect_builder'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
  return result.stdout.strip() or None if result.returncode == 0 else None


def project_version() -> str:
  result = subprocess.run(["bash", "-c", '. container/lib.sh && project_version .'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True)
  return result.stdout.strip()


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


class Image:
  """One image, and how to run its programs with one builder."""

  def __init__(self, builder: str, tag: str):
    self.builder, self.tag = builder, tag
    self.isolation = os.environ.get("BUILDAH_ISOLATION", "chroot")
    self._working_container: str | None = None
    self._names: list[str] = []

  # --- the image's configuration -------------------------------------------------

  def config(self) -> dict:
    """The OCI image config (User, Env, Entrypoint, Cmd, ExposedPorts, ...)."""
    if self.builder == "buildah":
      out = subprocess.run(["buildah", "inspect", "--type", "image", self.tag],
                           capture_output=True, text=True, timeout=60, check=True).stdout
      return json.loads(out)["OCIv1"]["config"]
    out = subprocess.run([self.builder, "image", "inspect", self.tag], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out)[0]["Config"]

  # --- running ---------------------------------------------------------------------

  def _command(self, argv: Sequence[str], mounts: dict[str, str], env: dict[str, str],
               ports: Sequence[int], name: str | None, network: bool) -> list[str]:
    volumes = []
    for host, target in mounts.items():
      volumes += ["-v", f"{host}:{target}"]
    variables = []
    for key, value in env.items():
      variables += ["-e", f"{key}={value}"]
    if self.builder == "buildah":
      # chroot isolation cannot take the network away: the caller makes
      # downloads fail instead (see offline_env).
      return ["buildah", "run", "--isolation", self.isolation, *volumes, *variables,
              self.working_container(), "--", *argv]
    published = []
    for port in ports:
      published += ["-p", f"127.0.0.1:{port}:{port}"]
    return [self.builder, "run", "--rm", *(["--name", name] if name else []),
            *([] if network or ports else ["--network", "none"]), *published, *volumes,
            *variables, "--entrypoint", argv[0], self.tag, *argv[1:]]

  def working_container(self) -> str:
    if self._working_container is None:
      name = f"vae-tf-image-test-{uuid.uuid4().hex[:8]}"
      subprocess.run(["buildah", "from", "--pull-never", "--name", name, self.tag],
                     capture_output=True, text=True, timeout=120, check=True)
      self._working_container = name
    return self._working_container

  def run(self, argv: Sequence[str], mounts: dict[str, str] | None = None,
          env: dict[str, str] | None = None, timeout: float = 120,
          network: bool = False) -> subprocess.CompletedProcess:
    command = self._command(argv, mounts or {}, env or {}, (), None, network)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

  @contextlib.contextmanager
  def background(self, argv: Sequence[str], log: Path, ports: Sequence[int],
                 mounts: dict[str, str] | None = None,
                 env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Runs `argv` while the block runs, then stops it (SIGTERM, then SIGKILL)."""
    name = f"vae-tf-image-test-{uuid.uuid4().hex[:8]}"
    command = self._command(argv, mounts or {}, env or {}, ports, name, network=True)
    with open(log, "w") as out:
      process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
      yield process
    finally:
      self._stop(process, name, ports)

  def _stop(self, process: subprocess.Popen, name: str, ports: Sequence[int]) -> None:
    if self.builder in ("docker", "podman"):
      subprocess.run([self.builder, "rm", "-f", name], capture_output=True, timeout=60,
                     check=False)
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
      try:
        process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
    # buildah run in chroot isolation shares the host's process and network
    # namespaces: a server left behind by its runner is found by its port.
    import psutil
    for connection in psutil.net_connections(kind="inet"):
      if (connection.status == psutil.CONN_LISTEN and connection.laddr.port in ports
          and connection.pid):
        with contextlib.suppress(psutil.Error):
          server = psutil.Process(connection.pid)
          server.terminate()
          server.wait(timeout=30)

  def close(self) -> None:
    if self._working_container is not None:
      subprocess.run(["buildah", "rm", self._working_container], capture_output=True,
                     timeout=120, check=False)
      self._working_container = None


def offline_env() -> dict[str, str]:
  """Proxies that refuse every connection: nothing inside reaches the internet,
  even where the container shares the host's network (buildah)."""
  dead = "http://127.0.0.1:9"
  return {"HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
          "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}


def wait_for_http(url: str, timeout: float) -> str:
  """Polls `url` until it answers 200; returns the body."""
  import urllib.error
  import urllib.request
  deadline = time.monotonic() + timeout
  last = None
  while time.monotonic() < deadline:
    try:
      with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
        if response.status == 200:
          return body
    except (urllib.error.URLError, ConnectionError, OSError) as error:
      last = error
    time.sleep(1)
  raise TimeoutError(f"{url} did not answer within {timeout}s (last: {last})")
