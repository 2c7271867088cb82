"""Hostile inputs against the real server on loopback: each gets TF Serving's
answer where it defines one (util/json_tensor.cc, batching), a JSON 400/413
otherwise, and the server keeps serving."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time

import numpy as np
import pytest

from serving_helpers import REPO, http

ROW = [0.5] * 784
ROW_TEXT = b"[" + b"0.5, " * 783 + b"0.5]"
MAKE_SERVE_FLAGS = ("--enable_batching",  # as the Makefile's `serve` target
                    f"--batching_parameters_file={REPO / 'serving/batching_parameters.pbtxt'}",
                    "--batch_timeout_micros_when_busy=10000",
                    "--rest_api_max_body_bytes=268435456", "--num_processes=2",
                    "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1")


@pytest.fixture(scope="module")
def server(tmp_path_factory, export_base):
  from serving_helpers import Server

  server = Server(["--model_name=vae", f"--model_base_path={export_base / 'vae'}",
                   *MAKE_SERVE_FLAGS], tmp_path_factory.mktemp("hostile") / "server.log")
  server.wait_ready()
  yield server
  server.stop()


def post(server, body, signature=None):
  status, raw = http("POST", f"{server.rest}/v1/models/vae:predict", body)
  return status, raw


def assert_serving(server):
  """The server still answers a normal predict."""
  status, raw = post(server, {"instances": [ROW]})
  assert status == 200 and len(json.loads(raw)["predictions"]) == 1


def read_responses(sock, count: int) -> list[tuple[bytes, bytes]]:
  """`count` responses off one connection, each (status line, body)."""
  received, responses = b"", []
  while len(responses) < count:
    while b"\r\n\r\n" not in received:
      chunk = sock.recv(65536)
      assert chunk, f"connection closed after {len(responses)} responses"
      received += chunk
    head, _, received = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines
                  if line.lower().startswith(b"content-length:"))
    while len(received) < length:
      received += sock.recv(65536)
    responses.append((lines[0], received[:length]))
    received = received[length:]
  return responses


def raw_exchange(server, data: bytes, timeout: float = 30) -> tuple[bytes, bytes]:
  """(status line, body) of one response to raw bytes, read up to its Content-Length."""
  with socket.create_connection(("127.0.0.1", server.rest_port), timeout=timeout) as sock:
    sock.sendall(data)
    return read_responses(sock, 1)[0]


def deep(levels: int, inner: bytes = b"") -> bytes:
  return b"[" * levels + inner + b"]" * levels


@pytest.mark.parametrize("body, status, message", [
    # The body: a 400 in the usual format, not aiohttp's plain-text 500.
    (b'{"instances": ' + deep(100_000) + b"}", 400,
     "JSON Parse error: Nesting deeper than 10000 levels at offset: 10013"),
    # TF Serving's json_tensor_test DeeplyNestedWellFormed: deep but unread is fine...
    (b'{"instances": [' + ROW_TEXT + b'], "nested": ' + deep(5_000) + b"}", 200, None),
    # ...and DeeplyNestedMalformed: deep where a string belongs is that key's error.
    (b'{"signature_name": ' + deep(5_000) + b', "instances": [' + ROW_TEXT + b"]}", 400,
     "'signature_name' key must be a string value."),
    (b'{"instances": ' + deep(3_000, b"0.5") + b"}", 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Shape of "
     "rank 2999 has too many dimensions (at most 64)"),
    (b'{"inputs": ' + deep(200, b"0.5") + b"}", 400, "has too many dimensions"),
])
def test_deep_nesting(server, body, status, message):
  got_status, raw = post(server, body)
  assert got_status == status, raw[:300]
  if message:
    error = json.loads(raw)["error"]
    assert message in error and len(error) < 1100
  assert_serving(server)


def test_invalid_huge_bodies_get_bounded_errors(server):
  rows = b", ".join([ROW_TEXT] * 12_800)  # 50 MB
  for body, message in [
      (b'{"instances": [' + rows + b'], "inputs": [' + rows + b"]}",
       "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
      (b'{"signature_name": "' + b"s" * 5_000_000 + b'", "instances": [[0.5]]}',
       "...TRUNCATED"),
      (b'{"instances": [{"' + b"k" * 5_000_000 + b'": 1}]}', "...TRUNCATED"),
  ]:
    status, raw = post(server, body)
    assert status == 400 and len(raw) < 2_000, raw[:300]
    error = json.loads(raw)["error"]
    assert message in error
  # TF Serving's JsonValueToDebugString: pretty JSON, single-line arrays, ~256 bytes.
  assert error.startswith('Failed to process element: 0 key: kkkk')
  body = b'{"instances": [' + b", ".join([ROW_TEXT] * 50) + b'], "inputs": 1}'
  status, raw = post(server, body)
  assert json.loads(raw)["error"].startswith(
      'JSON Value: {\n    "instances": [[0.5, 0.5, 0.5')
  assert_serving(server)


@pytest.mark.parametrize("body, message", [
    (b'{"instances": [[1e400' + b", 0.5" * 783 + b"]]}", "x must lie in [0, 1]"),  # inf
    (b'{"instances": [[' + b"9" * 5_000 + b"]]}",
     "JSON Parse error: Number too big to be stored in double. at offset: 16"),
    (b'{"instances": [[' + b"9" * 400 + b"]]}", "without loss of precision"),
    (b'{"signature_name": "sample", "inputs": {"seed": [' + b"9" * 30 + b"]}}",
     "is not of expected type: int64"),
    (b'{"signature_name": "score", "inputs": {"x": [' + ROW_TEXT + b'], "num_samples": '
     b"[1e300]}}", "is not of expected type: int32"),
])
def test_huge_numbers(server, body, message):
  status, raw = post(server, body)
  assert status == 400
  error = json.loads(raw)["error"]
  assert message in error and len(error) < 1100
  assert_serving(server)


@pytest.mark.parametrize("body, status, message", [
    # rapidjson does not validate UTF-8: bad bytes in a string are that string's problem.
    (b'{"signature_name": "\xff\xfe", "instances": [[0.5]]}', 400,
     'Serving signature name: "\udcff\udcfe" not found'),
    (b'{"instances": [["\xc3\x28"]]}', 400, "Type: String is not of expected type: float"),
    (b'{"instances": \xff}', 400, "JSON Parse error: Expecting value at offset: 14"),
    (b'\xef\xbb\xbf{"instances": [' + ROW_TEXT + b"]}", 200, None),  # rapidjson skips a BOM
    ('{"instances": [[0.5]]}'.encode("utf-16"), 400, "JSON Parse error"),
])
def test_wrong_utf8(server, body, status, message):
  got_status, raw = post(server, body)
  assert got_status == status, raw[:300]
  if message:
    assert message in json.loads(raw.decode("utf-8"))["error"]
  assert_serving(server)


@pytest.mark.parametrize("body, status, message", [
    # rapidjson's FindMember answers with the first of repeated keys.
    (b'{"instances": [' + ROW_TEXT + b'], "instances": "nope"}', 200, None),
    (b'{"signature_name": "sample", "signature_name": "nope", "inputs": {"seed": [1, 2]}}',
     200, None),
    (b'{"signature_name": "sample", "inputs": {"seed": [1], "seed": "x"}}', 200, None),
    # TF Serving would add the row's x twice and shift every later row; refused here.
    (b'{"signature_name": "score", "instances": [{"x": ' + ROW_TEXT + b', "x": ' + ROW_TEXT +
     b', "num_samples": 1}]}', 400,
     "Failed to process element: 0 of 'instances' list. JSON object repeats key: x"),
])
def test_duplicate_keys(server, body, status, message):
  got_status, raw = post(server, body)
  assert got_status == status, raw[:300]
  if message:
    assert message in json.loads(raw)["error"]
  assert_serving(server)


def test_bad_content_lengths(server):
  head = b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\n"
  # Framing errors: 400, as from TF Serving's libevent HTTP server.
  for length in (b"-1", b"99999999999999999999999", b"abc", b"5, 6"):
    status_line, _ = raw_exchange(server, head + b"Content-Length: " + length + b"\r\n\r\n{}")
    assert status_line.startswith(b"HTTP/1.") and b" 400 " in status_line, status_line
  # A length past --rest_api_max_body_bytes: 413 at once, before any body is read.
  started = time.monotonic()
  status_line, body = raw_exchange(server, head + b"Content-Length: 1000000000000\r\n\r\n{")
  assert time.monotonic() - started < 5
  assert b" 413 " in status_line
  assert "exceeds the limit of 268435456 bytes" in json.loads(body)["error"]
  assert_serving(server)


def test_thousands_of_idle_connections(server):
  count = 3_000
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  if hard != resource.RLIM_INFINITY and hard < count + 200:
    pytest.skip(f"needs {count + 200} open files, hard limit is {hard}")
  resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 200), hard))
  sockets = []
  try:
    for _ in range(count):
      sockets.append(socket.create_connection(("127.0.0.1", server.rest_port), timeout=10))
    half = sockets[::2]
    for sock in half:  # half of them start a request and stop
      sock.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\n")
    assert_serving(server)
  finally:
    for sock in sockets:
      sock.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
  assert_serving(server)


def test_a_slow_reader_holds_up_no_one(server, mnist_test_x):
  # A 7.8 MB response: more than a client that barely reads takes in (its
  # receive window stays near the initial 128 KB) plus the server's largest
  # send buffer (4 MB, net.ipv4.tcp_wmem), so the server's write cannot
  # finish until this client reads on.
  body = json.dumps({"signature_name": "reconstruct",
                     "instances": np.tile(mnist_test_x, (5, 1)).tolist()}).encode()
  with socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) as sock:
    sock.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    chunks = [sock.recv(4096)]
    for _ in range(20):  # a trickle, while others are served
      time.sleep(0.05)
      chunks.append(sock.recv(4096))
    started = time.monotonic()
    assert_serving(server)
    assert time.monotonic() - started < 10
    while chunk := sock.recv(65536):
      chunks.append(chunk)
  head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
  assert b" 200 " in head.split(b"\r\n")[0]
  assert np.array(json.loads(payload)["predictions"]).shape == (500, 784)


def test_make_serve_takes_a_10000_row_score_request(server, mnist_test_x):
  x = np.tile(mnist_test_x, (100, 1))  # 10,000 rows: split into pieces of 64
  status, raw = post(server, {"signature_name": "score",
                              "inputs": {"x": x.tolist(), "num_samples": [1] * len(x)}})
  assert status == 200, raw[:300]
  scores = json.loads(raw)["outputs"]
  status, raw = post(server, {"signature_name": "score", "inputs": {
      "x": mnist_test_x.tolist(), "num_samples": [1] * len(mnist_test_x)}})
  small = json.loads(raw)["outputs"]
  for name in ("elbo", "log_likelihood"):  # each row's answer, in order
    np.testing.assert_allclose(np.reshape(scores[name], (100, 100)),
                               np.tile(small[name], (100, 1)), rtol=1e-4, atol=1e-3)
  status, raw = post(server, b'{"instances": [' + b", ".join([ROW_TEXT] * 10_001) + b"]}")
  assert (status, json.loads(raw)["error"]) == (
      400, "Task size 10001 is larger than maximum input batch size 10000")
  assert_serving(server)


def test_split_requests_share_batches_and_keep_their_rows(start_server, tmp_path, export_base,
                                                          mnist_test_x):
  config = tmp_path / "batching.config"
  config.write_text("max_batch_size { value: 40 }  enable_large_batch_splitting { value: true }"
                    "  max_execution_batch_size { value: 8 }  allowed_batch_sizes: [4, 8]"
                    "  batch_timeout_micros { value: 5000 }  num_batch_threads { value: 2 }"
                    # Room for all 159 rows at once (20 batches of 8): with the default of
                    # 10 batches, requests arriving together were refused as a full queue.
                    "  max_enqueued_batches { value: 25 }")
  server = start_server("--model_name=vae", f"--model_base_path={export_base / 'vae'}",
                        "--enable_batching", f"--batching_parameters_file={config}")
  status, raw = post(server, {"signature_name": "encode", "inputs": mnist_test_x.tolist()})
  assert (status, json.loads(raw)["error"]) == (
      400, "Task size 100 is larger than maximum input batch size 40")
  expected = {}
  for start in range(0, 40, 8):
    rows = mnist_test_x[start:start + 8]
    expected.update(enumerate(np.asarray(json.loads(post(server, {
        "signature_name": "encode", "inputs": rows.tolist()})[1])["outputs"]["mean"]), start))
  results, failures = {}, []

  def call(start, size):
    status, raw = post(server, {"signature_name": "encode",
                                "inputs": mnist_test_x[start:start + size].tolist()})
    if status != 200:
      failures.append(raw[:300])
    else:
      results[(start, size)] = np.asarray(json.loads(raw)["outputs"]["mean"])

  cases = [(0, 40), (3, 17), (5, 1), (10, 30), (0, 9), (20, 20), (1, 39), (7, 3)]
  threads = [threading.Thread(target=call, args=case) for case in cases]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not failures, failures
  for (start, size), means in results.items():
    np.testing.assert_allclose(means, [expected[i] for i in range(start, start + size)],
                               rtol=1e-5, atol=1e-6)


# --- HTTP framing (serving/http_server.py) ---------------------------------------


def predict_bytes(body: bytes, extra_headers: bytes = b"") -> bytes:
  return (b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\n" + extra_headers
          + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_pipelined_requests_are_answered_in_order(server):
  bad = predict_bytes(b'{"instances": [[0.5]]}')  # a shape error, answered at once
  good = predict_bytes(b'{"instances": [' + ROW_TEXT + b"]}")
  status = b"GET /v1/models/vae HTTP/1.1\r\nHost: x\r\n\r\n"
  with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
    sock.sendall(good + bad + status + good)
    responses = read_responses(sock, 4)
  assert [line.split(b" ")[1] for line, _ in responses] == [b"200", b"400", b"200", b"200"]
  assert len(json.loads(responses[0][1])["predictions"]) == 1
  assert "model_version_status" in json.loads(responses[2][1])
  assert responses[3] == responses[0]


def test_expect_100_continue(server):
  body = b'{"instances": [' + ROW_TEXT + b"]}"
  with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
    sock.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    (line, answer), = read_responses(sock, 1)
  assert b" 200 " in line and len(json.loads(answer)["predictions"]) == 1


def test_a_client_that_stops_sending_still_gets_its_answer(server):
  with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
    sock.sendall(predict_bytes(b'{"instances": [' + ROW_TEXT + b"]}"))
    sock.shutdown(socket.SHUT_WR)
    (line, answer), = read_responses(sock, 1)
    assert sock.recv(1) == b""  # and then the server closes
  assert b" 200 " in line and len(json.loads(answer)["predictions"]) == 1


def test_a_chunked_body_past_the_limit_gets_413(start_server, export_base):
  small = start_server("--model_name=vae", f"--model_base_path={export_base / 'vae'}",
                       "--rest_api_max_body_bytes=100000")
  chunk = b"%x\r\n%s\r\n" % (50_000, b" " * 50_000)
  with socket.create_connection(("127.0.0.1", small.rest_port), timeout=30) as sock:
    sock.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    (line, answer), = read_responses(sock, 1)
  assert b" 413 " in line
  assert "exceeds the limit of 100000 bytes" in json.loads(answer)["error"]
  # Chunked within the limit is read whole.
  body = b'{"instances": [' + ROW_TEXT + b"]}"
  with socket.create_connection(("127.0.0.1", small.rest_port), timeout=30) as sock:
    sock.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nHost: x\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    (line, answer), = read_responses(sock, 1)
  assert b" 200 " in line and len(json.loads(answer)["predictions"]) == 1


def test_an_endless_head_gets_431(server):
  with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
    sock.sendall(b"GET /v1/models/vae HTTP/1.1\r\nHost: x\r\nX-Long: ")
    try:
      for _ in range(100):  # 1 MB of one header value, in pieces
        sock.sendall(b"a" * 10_000)
        time.sleep(0.001)
    except (BrokenPipeError, ConnectionResetError):
      pass
    received = b""
    while chunk := sock.recv(65536):
      received += chunk
  assert received.startswith(b"HTTP/1.1 431 "), received[:200]
  assert_serving(server)
