"""Errors as TF Serving reports them: a status code, carried over gRPC as is
and over REST as an HTTP status with body {"error": message}."""

from __future__ import annotations

import grpc

# TF Serving's ToHTTPStatusCode (tensorflow_serving/model_servers/http_server.cc).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# TF Serving cuts gRPC error messages to this length (ToGRPCStatus, grpc_status_util.cc).
# REST errors are cut the same way here: a message may quote the request (a
# signature name, a key, a value), and a request may be tens of megabytes.
MAX_MESSAGE = 1024


def bounded(message: str) -> str:
  """`message`, cut as TF Serving's ToGRPCStatus cuts it."""
  if len(message) > MAX_MESSAGE:
    return message[:MAX_MESSAGE] + "...TRUNCATED"
  return message


# TensorFlow error classes by the canonical code they carry.
_TF_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
  """A failed request, with the status code TF Serving would give it."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message
    self.row = 0  # for errors about one row of a row-format request

  @property
  def http_status(self) -> int:
    return _HTTP_STATUS.get(self.code, 500)



def code_of(tensorflow_error) -> grpc.StatusCode:
  """The status code a `tf.errors.OpError` carries."""
  return _TF_CODES.get(tensorflow_error.error_code, grpc.StatusCode.UNKNOWN)


def invalid_argument(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def unimplemented(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def method_not_supported(method: str) -> ServingError:
  """For classify and regress: the exported models have predict signatures only."""
  return unimplemented(f"{method} is not supported: the models served here have predict "
                       "signatures only")
