"""Extra processes answering the gRPC and REST ports (--num_processes).

One Python process runs its event loop on one core at a time, and the HTTP,
HTTP/2 and JSON work per request is Python. Extra processes bind the same
ports with SO_REUSEPORT, so the kernel spreads connections over them; each
loads the models itself, polls for new versions, batches its own requests
and keeps its own metrics (so /monitoring/... counts the requests of the
process that answered it).

SO_REUSEPORT would also let a port be shared with an unrelated server that
set it too, so each port is first bound once without it: a port in use is a
clear error, as with one process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import socket
import sys
import threading
import time

from serving.process import ServerSettings
from vae_tf import process_lifetime

_START_SECONDS = 600  # loading and warming up every model in a busy process


def check_port_free(api: str, host: str, port: int) -> None:
  """Raises OSError if something already listens on (host, port), named as `api`'s port."""
  try:
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
  except socket.gaierror as error:
    raise OSError(f"cannot bind the {api} port {host}:{port}: {error.strerror}") from None
  for family, kind, protocol, _, address in addresses:
    with socket.socket(family, kind, protocol) as probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        probe.bind(address)
      except OSError as error:
        raise OSError(f"cannot bind the {api} port {host}:{port}: {error.strerror}") from None


def _worker(settings: ServerSettings, ready) -> None:
  """An extra process: its own backend behind both APIs, until SIGTERM."""
  from serving import process

  process_lifetime.die_with_parent()
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
  process.raise_open_file_limit()
  stop = asyncio.Event()

  def on_started(loop: asyncio.AbstractEventLoop) -> None:
    loop.add_signal_handler(signal.SIGTERM, stop.set)

  async def report_ready() -> None:
    ready.send("ready")
    ready.close()

  try:
    with process.running_backend(settings) as backend:
      process.run_loop(process.serve(backend, settings, stop, on_started,
                                     after_started=report_ready, announce=False))
  except OSError as error:
    sys.exit(f"error: {error}")


class ExtraProcesses:
  """`count` extra server processes; `start` launches them and waits until they serve."""

  def __init__(self, settings: ServerSettings, count: int):
    self._settings = settings
    self._count = count
    self._processes: list[multiprocessing.Process] = []
    self._cancelled = threading.Event()

  def __enter__(self) -> ExtraProcesses:
    return self

  async def start(self) -> None:
    if not self._count:
      return
    context = multiprocessing.get_context("spawn")
    pipes = []
    for _ in range(self._count):
      receive, send = context.Pipe(duplex=False)
      process = context.Process(target=_worker, args=(self._settings, send), daemon=True,
                                name="server-process")
      process.start()
      send.close()
      self._processes.append(process)
      pipes.append(receive)
    try:
      await asyncio.get_running_loop().run_in_executor(None, self._wait_ready, pipes)
    except asyncio.CancelledError:
      self._cancelled.set()
      raise

  def _wait_ready(self, pipes) -> None:
    deadline = time.monotonic() + _START_SECONDS
    for process, pipe in zip(self._processes, pipes):
      try:
        while not pipe.poll(0.2):
          if self._cancelled.is_set():
            return
          if time.monotonic() > deadline:
            raise OSError(f"a server process did not start within {_START_SECONDS} s")
        pipe.recv()
      except EOFError:
        raise OSError("a server process exited before serving") from None
      finally:
        pipe.close()

  def __exit__(self, *exc_info) -> None:
    for process in self._processes:
      if process.is_alive():
        process.terminate()
    for process in self._processes:
      process.join(30)
      if process.is_alive():
        process.kill()
        process.join()
