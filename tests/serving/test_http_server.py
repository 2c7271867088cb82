"""serving.http_server on loopback with a handler that records what it is told."""

from __future__ import annotations

import asyncio
import socket
import threading

from serving.http_server import HttpServer, Request, Response

REQUEST = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_request_knows_how_many_others_wait_behind_it():
  seen: list[int] = []
  ready = threading.Event()
  state = {}

  async def handler(request: Request) -> Response:
    seen.append(request.others_waiting)
    await asyncio.sleep(0.01)
    return Response(200, b"ok")

  async def main():
    server = HttpServer(handler, max_body_bytes=1 << 20, too_large=Response(413, b""))
    await server.start("127.0.0.1", 0)
    state["server"], state["loop"] = server, asyncio.get_running_loop()
    state["port"] = server._server.sockets[0].getsockname()[1]
    state["stop"] = asyncio.Event()
    ready.set()
    await state["stop"].wait()
    await server.shutdown(timeout=0)

  thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
  thread.start()
  assert ready.wait(10)
  try:
    with socket.create_connection(("127.0.0.1", state["port"]), timeout=10) as sock:
      sock.sendall(REQUEST * 3)  # pipelined: read together, answered in order
      received = b""
      while received.count(b"HTTP/1.1 200") < 3:
        received += sock.recv(4096)
      sock.sendall(REQUEST)
      while received.count(b"HTTP/1.1 200") < 4:
        received += sock.recv(4096)
    assert seen == [2, 1, 0, 0]
    # A client that leaves with requests unanswered leaves nothing counted.
    with socket.create_connection(("127.0.0.1", state["port"]), timeout=10) as sock:
      sock.sendall(REQUEST * 5)
    deadline = 50
    while (state["server"].waiting or state["server"].connections) and deadline:
      threading.Event().wait(0.1)
      deadline -= 1
    assert state["server"].waiting == 0
  finally:
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(10)
