"""TF Serving's REST API (its http_rest_api_handler.cc) on serving.http_server.

  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    predict

Paths are matched, as TF Serving does, against the raw path and query with
its regular expressions; anything else under /v1/ is a 400 "Malformed
request", anything outside it the plain HTML 404 page of TF Serving's HTTP
server.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from serving import errors, json_document, json_response, json_tensors
from serving.http_server import Request, Response
from serving import backend as backend_lib
from serving.backend import ServingBackend

_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                      r":(classify|regress|predict)", re.IGNORECASE)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                     r"(?:\/(metadata))?", re.IGNORECASE)
_API = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_NOT_FOUND_PAGE = ("<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
                   "</BODY></HTML>\n")
_INT64_MAX = 2**63 - 1
logger = logging.getLogger(__name__)


def _json_response(body: bytes | str, status: int = 200) -> Response:
  return Response(status, body.encode() if isinstance(body, str) else body)


def _text_response(text: str, status: int = 200, content_type: str = "text/plain") -> Response:
  return Response(status, text.encode(), f"{content_type}; charset=utf-8")


def _error_response(error: errors.ServingError) -> Response:
  return _json_response(json_response.error_body(error.message), error.http_status)


def _model_spec(name: str, version: str | None, label: str | None) -> tuple[str, int | None, str | None]:
  name = urllib.parse.unquote(name)
  if version is not None:
    if int(version) > _INT64_MAX:
      raise errors.invalid_argument(f"Failed to convert version: {version} to numeric.")
    return name, int(version), None
  return name, None, urllib.parse.unquote(label) if label is not None else None


def _status_json(statuses) -> str:
  return json_format.MessageToJson(backend_lib.status_response(statuses),
                                   always_print_fields_with_no_presence=True, indent=1) + "\n"


class RestApi:
  """TF Serving's REST API: `dispatch` answers one request of serving.http_server."""

  def __init__(self, backend: ServingBackend, metrics_path: str | None = None,
               max_body_bytes: int = 64 << 20):
    self.backend = backend
    self.metrics_path = metrics_path
    self.max_body_bytes = max_body_bytes
    # TF Serving sets no limit; an explicit one keeps a huge body from
    # exhausting memory, and says so in the usual error format. The HTTP
    # server refuses a declared length over it before a byte is read, and
    # closes the connection, so a client cannot hold it open by promising a
    # terabyte.
    self.too_large = _json_response(json_response.error_body(
        f"Request body exceeds the limit of {max_body_bytes} bytes "
        "(--rest_api_max_body_bytes)"), 413)

  async def dispatch(self, request: Request) -> Response:
    raw_path = request.raw_path  # path and query, undecoded, as TF Serving matches them
    if self.metrics_path and request.path == self.metrics_path:
      if raw_path != self.metrics_path:
        return _text_response(f"Unexpected path: {raw_path}. Should be {self.metrics_path}",
                              400)
      return _text_response(self.backend.metrics.exposition())
    if not _API.fullmatch(raw_path):
      return _text_response(_NOT_FOUND_PAGE, 404, "text/html")
    try:
      return await self._dispatch_api(request, raw_path)
    except errors.ServingError as error:
      return _error_response(error)
    except Exception as error:  # a bug must still answer in TF Serving's error format
      logger.exception("Error handling %s %s", request.method, raw_path)
      return _error_response(errors.ServingError(grpc.StatusCode.INTERNAL,
                                                 f"{type(error).__name__}: {error}"))

  async def _dispatch_api(self, request: Request, raw_path: str) -> Response:
    def malformed() -> errors.ServingError:
      return errors.invalid_argument(f"Malformed request: {request.method} {raw_path}")

    if request.method == "POST":
      match = _PREDICT.fullmatch(raw_path)
      if not match or match.group(4) != "predict":
        if match and match.group(4) in ("classify", "regress"):
          raise errors.method_not_supported(match.group(4))
        raise malformed()
      return await self._predict(request, *_model_spec(*match.group(1, 2, 3)))
    if request.method == "GET":
      match = _STATUS.fullmatch(raw_path)
      if not match:
        raise malformed()
      if match.group(1) is None:
        raise errors.invalid_argument("Missing model name in request.")
      spec = _model_spec(*match.group(1, 2, 3))
      if match.group(4) == "metadata":
        return self._metadata(*spec)
      return self._status(*spec)
    raise malformed()

  def _status(self, name: str, version: int | None, label: str | None) -> Response:
    return _json_response(_status_json(self.backend.manager.statuses(name, version, label)))

  def _metadata(self, name: str, version: int | None, label: str | None) -> Response:
    with self.backend.manager.servable(name, version, label) as servable:
      spec = model_pb2.ModelSpec(name=name)
      spec.version.value = servable.version
      signatures = backend_lib.signature_def_map(servable)
    print_options = dict(always_print_fields_with_no_presence=True,
                         preserving_proto_field_name=True, indent=1)
    body = ("{\n\"model_spec\":" + json_format.MessageToJson(spec, **print_options) + "\n,\n"
            "\"metadata\": {\"signature_def\": "
            + json_format.MessageToJson(signatures, **print_options) + "\n}\n}\n")
    return _json_response(body)

  async def _predict(self, request: Request, name: str, version: int | None,
                     label: str | None) -> Response:
    started = time.monotonic()
    body = request.body
    try:
      document = json_tensors.parse(body)
      with self.backend.manager.servable(name, version, label) as servable:
        signature_name = document.get("signature_name") or "serving_default"
        signature = servable.signatures.get(signature_name)
        if signature is None or signature.function is None:
          raise errors.invalid_argument(
              f'Serving signature name: "{signature_name}" not found in signature def')
        may_hold_bools = (json_document.has_literal(body, b"true")
                          or json_document.has_literal(body, b"false"))
        inputs, row_format = json_tensors.request_inputs(document, signature.inputs,
                                                         may_hold_bools)
        outputs = await self.backend.run(servable, signature, inputs, [],
                                         alone=request.others_waiting == 0)
      response = _json_response(json_response.response(outputs, row_format))
    except errors.ServingError as error:
      self.backend.record(name, error, "REST", started)
      return _error_response(error)
    self.backend.record(name, None, "REST", started)
    return response
