"""A small HTTP/1.1 server on asyncio for the REST API.

httptools (llhttp, Node.js's parser, in C) parses; each complete request goes
to one handler coroutine, and its answer is written with a Content-Length.
Per connection, requests are answered in order (pipelining included), a
declared body over `max_body_bytes` is refused with `too_large` before a byte
of it is read, a framing error gets a 400, and a connection is closed after
`idle_timeout` seconds with nothing to do.

Why not aiohttp: under 64 clients its request machinery (request and
response objects, routing, the stream reader and writer) cost about a third
of the event loop's CPU per predict request (py-spy, docs/serving.md); the API
needs none of it. One request per connection is handled at a time, as an
HTTP/1.1 client pipelining on one connection expects its answers in order.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import http
import logging
import time
import urllib.parse
from typing import Awaitable, Callable

import httptools

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Request:
  method: str
  raw_path: str  # path and query, undecoded
  body: bytes
  # Requests the server had read but not begun to answer when this one began:
  # 0 means nothing else is waiting to share its work.
  others_waiting: int = 0

  @property
  def path(self) -> str:
    """The decoded path, without the query."""
    return urllib.parse.unquote(self.raw_path.partition("?")[0])


@dataclasses.dataclass
class Response:
  status: int
  body: bytes
  content_type: str = "application/json"
  close: bool = False  # close the connection once written


Handler = Callable[[Request], Awaitable[Response]]

_BAD_REQUEST = Response(400, b"Bad Request", "text/plain; charset=utf-8", close=True)
# A client pipelining more than this many requests waits for answers before
# more of its bytes are read.
_MAX_PIPELINED = 16
# How long a connection being closed may go on sending (bytes then discarded).
_LINGER_SECONDS = 10.0
# The request line and headers of one request; what is past it gets 431, as
# httptools would otherwise hold an endless header in memory.
MAX_HEAD_BYTES = 64 * 1024
_HEAD_TOO_LARGE = Response(431, b"Request Header Fields Too Large", "text/plain; charset=utf-8",
                           close=True)


def _reason(status: int) -> str:
  try:
    return http.HTTPStatus(status).phrase
  except ValueError:  # 499, TF Serving's CANCELLED
    return "Client Closed Request"


def _head(response: Response, keep_alive: bool) -> bytes:
  lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}",
           f"Content-Type: {response.content_type}",
           f"Content-Length: {len(response.body)}"]
  if not keep_alive:
    lines.append("Connection: close")
  return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
  """One client connection: httptools' callbacks build requests, answered in order."""

  def __init__(self, server: HttpServer):
    self._server = server
    self._parser = httptools.HttpRequestParser(self)
    self._transport: asyncio.Transport | None = None
    self._pending: collections.deque[tuple[Request, bool]] = collections.deque()
    self._answering: asyncio.Task | None = None
    self._reading = True
    self._writable = asyncio.Event()
    self._writable.set()
    self._closing = False
    self._peer_done = False
    self._began_in_chunk = False
    self.last_active = time.monotonic()
    self._reset_message()

  def _reset_message(self) -> None:
    self._url = b""
    self._body: list[bytes] = []
    self._body_size = 0
    self._declared_length = 0
    self._expect_continue = False
    self._refused = False
    self._head_bytes = 0
    self._in_head = True

  # asyncio.Protocol

  def connection_made(self, transport: asyncio.Transport) -> None:
    self._transport = transport
    self._server.connections.add(self)

  def connection_lost(self, exc: Exception | None) -> None:
    self._closing = True
    self._drop_pending()
    self._server.connections.discard(self)
    self._writable.set()
    if self._answering is not None:
      self._answering.cancel()  # a request whose client left leaves its batch too

  def data_received(self, data: bytes) -> None:
    self.last_active = time.monotonic()
    if self._closing:
      return  # lingering: what a refused client still sends is dropped
    try:
      self._parser.feed_data(data)
    except httptools.HttpParserUpgrade:
      pass  # no protocol switch offered: the request is answered as plain HTTP/1.1
    except httptools.HttpParserError:
      self._refuse(_BAD_REQUEST)
      return
    # Counts the chunks that hold nothing but an unfinished head (so a head
    # can take MAX_HEAD_BYTES plus one read).
    if self._in_head and not self._began_in_chunk:
      self._head_bytes += len(data)
      if self._head_bytes > MAX_HEAD_BYTES:
        self._refuse(_HEAD_TOO_LARGE)
    self._began_in_chunk = False

  def eof_received(self) -> bool:
    # A client may end its sending half after a request and still read the answer.
    self._peer_done = True
    return self.busy and not self._closing

  def pause_writing(self) -> None:
    self._writable.clear()

  def resume_writing(self) -> None:
    self._writable.set()

  # httptools callbacks

  def on_message_begin(self) -> None:
    self._reset_message()
    self._began_in_chunk = True

  def on_url(self, url: bytes) -> None:
    self._url += url

  def on_header(self, name: bytes, value: bytes) -> None:
    name = name.lower()
    if name == b"content-length":
      self._declared_length = int(value)  # llhttp has checked it is a number
    elif name == b"expect" and value.lower() == b"100-continue":
      self._expect_continue = True

  def on_headers_complete(self) -> None:
    self._in_head = False
    if self._declared_length > self._server.max_body_bytes:
      self._refuse(self._server.too_large)
    elif self._expect_continue:
      self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

  def on_body(self, chunk: bytes) -> None:
    if self._refused:
      return
    self._body_size += len(chunk)
    if self._body_size > self._server.max_body_bytes:  # a chunked body may declare nothing
      self._refuse(self._server.too_large)
      return
    self._body.append(chunk)

  def on_message_complete(self) -> None:
    if self._refused:
      return
    request = Request(self._parser.get_method().decode("ascii", "replace"),
                      self._url.decode("latin-1"), b"".join(self._body))
    self._pending.append((request, self._parser.should_keep_alive()))
    self._server.waiting += 1
    if self._answering is None:
      self._answering = asyncio.get_running_loop().create_task(self._answer_pending())
    elif len(self._pending) >= _MAX_PIPELINED and self._reading:
      self._reading = False
      self._transport.pause_reading()

  # answering

  def _drop_pending(self) -> None:
    self._server.waiting -= len(self._pending)
    self._pending.clear()

  def _refuse(self, response: Response) -> None:
    """Answers at once (after those queued are dropped) and closes: the rest of
    the stream cannot be trusted to frame requests."""
    self._refused = True
    self._drop_pending()
    if self._answering is not None:
      self._answering.cancel()
    self._write(response, keep_alive=False)

  def _write(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
    if self._closing:
      return
    keep_alive = keep_alive and not response.close and not self._peer_done
    self._transport.write(_head(response, keep_alive) + (b"" if head_only else response.body))
    if not keep_alive:
      self._closing = True
      self._linger()

  def _linger(self) -> None:
    """Ends the sending half now and the connection once the client stops
    sending, or after _LINGER_SECONDS: closing with unread bytes would reset
    the connection, and a client still sending a refused body would lose the
    answer."""
    if self._transport.can_write_eof():
      try:
        self._transport.write_eof()
      except OSError:  # the client has gone already
        self._transport.close()
        return
      asyncio.get_running_loop().call_later(_LINGER_SECONDS, self._transport.close)
    else:
      self._transport.close()

  async def _answer_pending(self) -> None:
    try:
      while self._pending and not self._closing:
        request, keep_alive = self._pending.popleft()
        self._server.waiting -= 1
        request.others_waiting = self._server.waiting
        if not self._reading and len(self._pending) < _MAX_PIPELINED:
          self._reading = True
          self._transport.resume_reading()
        response = await self._server.handle(request)
        await self._writable.wait()  # a client that reads slowly holds up only itself
        self._write(response, keep_alive and not self._server.draining,
                    head_only=request.method == "HEAD")
        self.last_active = time.monotonic()
    finally:
      self._answering = None
      if self._closing:
        self._drop_pending()

  @property
  def busy(self) -> bool:
    return self._answering is not None

  def close(self) -> None:
    if not self._closing and self._transport is not None:
      self._closing = True
      self._transport.close()


class HttpServer:
  """Serves `handler` on (host, port) once `start` is awaited; `shutdown` drains."""

  def __init__(self, handler: Handler, max_body_bytes: int, too_large: Response,
               idle_timeout: float = 75.0):
    self._handler = handler
    self.max_body_bytes = max_body_bytes
    self.too_large = dataclasses.replace(too_large, close=True)
    self.idle_timeout = idle_timeout
    self.connections: set[_Connection] = set()
    self.waiting = 0  # requests read, not yet being answered
    self.draining = False
    self._server: asyncio.Server | None = None
    self._sweeper: asyncio.Task | None = None

  async def handle(self, request: Request) -> Response:
    try:
      return await self._handler(request)
    except asyncio.CancelledError:
      raise
    except Exception:  # the handler's own errors are its answers; this is a bug
      logger.exception("Error handling %s %s", request.method, request.raw_path)
      return Response(500, b"Internal Server Error", "text/plain; charset=utf-8")

  async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
    loop = asyncio.get_running_loop()
    self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                            reuse_port=reuse_port or None, backlog=1024)
    self._sweeper = loop.create_task(self._close_idle_connections())

  async def _close_idle_connections(self) -> None:
    while True:
      await asyncio.sleep(min(self.idle_timeout, 5.0))
      deadline = time.monotonic() - self.idle_timeout
      for connection in list(self.connections):
        if not connection.busy and connection.last_active < deadline:
          connection.close()

  async def shutdown(self, timeout: float = 30.0) -> None:
    """Stops accepting, lets the requests in flight finish (up to `timeout` s),
    and closes every connection."""
    self.draining = True
    if self._server is not None:
      self._server.close()
    if self._sweeper is not None:
      self._sweeper.cancel()
    deadline = time.monotonic() + timeout
    while any(c.busy for c in self.connections) and time.monotonic() < deadline:
      for connection in [c for c in self.connections if not c.busy]:
        connection.close()
      await asyncio.sleep(0.02)
    for connection in list(self.connections):
      connection.close()
    if self._server is not None:
      await self._server.wait_closed()
