"""Helpers for the serving tests: the real server as a subprocess, and HTTP."""

from __future__ import annotations

import json
import urllib.request

from serving.testing import REPO, free_port  # noqa: F401  (re-exported for the tests)
from serving.testing import ServerProcess as Server  # noqa: F401

LATENT_DIM = 4
MAX_BODY_BYTES = 4_000_000


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
