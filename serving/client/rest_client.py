"""TF Serving's REST API: the standard library's HTTP client and NumPy only."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any

import numpy as np

from serving.client.base import (DEFAULT_TIMEOUT, NUMPY_DTYPES, REST_PORT, ModelMetadata,
                                 ServingClient, ServingClientError, VersionStatus,
                                 signatures_from_json, statuses_from_json)


class RestClient(ServingClient):
  """TF Serving's REST API over one keep-alive HTTP connection (thread-safe)."""

  def __init__(self, address: str, model_name: str, version: int | None = None,
               timeout: float = DEFAULT_TIMEOUT):
    super().__init__(address, model_name, version, timeout)
    parts = urllib.parse.urlsplit(address if "://" in address else f"http://{address}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
      raise ValueError(f"not a REST server address (host:port or http(s)://host:port): {address}")
    self._connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                              else http.client.HTTPConnection)
    self._host, self._port = parts.hostname, parts.port or REST_PORT
    quoted_name = urllib.parse.quote(model_name, safe="")
    self._model_path = f"{parts.path.rstrip('/')}/v1/models/{quoted_name}"
    if version is not None:
      self._model_path += f"/versions/{version}"
    self._connection: http.client.HTTPConnection | None = None
    self._lock = threading.Lock()

  def close(self) -> None:
    if self._connection is not None:
      self._connection.close()
      self._connection = None

  def status(self) -> list[VersionStatus]:
    return statuses_from_json(self._request("GET", self._model_path))

  def _metadata(self) -> ModelMetadata:
    document = self._request("GET", f"{self._model_path}/metadata")
    return ModelMetadata(
        model_name=document["model_spec"]["name"],
        version=int(document["model_spec"].get("version", 0)),
        signatures=signatures_from_json(document["metadata"]["signature_def"]))

  def _predict(self, signature_name, inputs, signature):
    document = self._request("POST", f"{self._model_path}:predict", {
        "signature_name": signature_name,
        "inputs": {name: array.tolist() for name, array in inputs.items()},
    })
    if "outputs" not in document:
      raise ServingClientError(f"no outputs in the answer from {self.address}", 200)
    outputs = document["outputs"]
    # A signature with one output gets it bare, not keyed by its name.
    if signature is not None and len(signature.outputs) == 1:
      outputs = {next(iter(signature.outputs)): outputs}
    elif not isinstance(outputs, dict):
      outputs = {"outputs": outputs}
    specs = signature.outputs if signature is not None else {}
    return {name: np.asarray(value, dtype=NUMPY_DTYPES.get(specs[name].dtype)
                             if name in specs else None)
            for name, value in outputs.items()}

  def _request(self, method: str, path: str, document: dict | None = None) -> Any:
    body = None if document is None else json.dumps(document).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    with self._lock:
      status, reason, data = self._exchange(method, path, body, headers)
    try:
      answer = json.loads(data) if data else None
    except (ValueError, UnicodeDecodeError):
      answer = None
    if status != 200:
      message = answer.get("error") if isinstance(answer, dict) else None
      raise ServingClientError(message or f"{reason} ({method} {path})", status)
    if not isinstance(answer, dict):
      raise ServingClientError(f"not a JSON object in the answer to {method} {path}", status)
    return answer

  def _exchange(self, method, path, body, headers) -> tuple[int, str, bytes]:
    reused = self._connection is not None
    if not reused:
      self._connection = self._connection_class(self._host, self._port, timeout=self.timeout)
    try:
      self._connection.request(method, path, body, headers)
      response = self._connection.getresponse()
      data = response.read()
    except TimeoutError:
      self.close()
      raise ServingClientError(
          f"no answer from {self.address} within {self.timeout:g} s") from None
    except (OSError, http.client.HTTPException) as error:
      self.close()
      if reused:  # the server may have closed the kept-alive connection while it was idle
        return self._exchange(method, path, body, headers)
      raise ServingClientError(
          f"cannot reach the REST server at {self.address}: {error}") from None
    if response.will_close:
      self.close()
    return response.status, response.reason, data
