"""A client for a VAE served by TensorFlow Serving (or serving.server), over REST or gRPC.

The command line is serving/client/__main__.py (`python -m serving.client`).

  with RestClient("localhost:8501", "vae") as client:   # or GrpcClient("localhost:8500", "vae")
    means = client.encode(x)["mean"]

Both clients speak only TF Serving's public APIs (REST: /v1/models/...;
gRPC: PredictionService and ModelService), so they work against the official
`tensorflow_model_server` too. Failures of the server, or of reaching it,
raise ServingClientError. The REST client needs only the standard library
and NumPy; the gRPC one imports TensorFlow for its tensor protos.
"""

from __future__ import annotations

import abc
import dataclasses
import http.client
import json
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
  import grpc

REST_PORT = 8501
GRPC_PORT = 8500
DEFAULT_ADDRESSES = {"rest": f"localhost:{REST_PORT}", "grpc": f"localhost:{GRPC_PORT}"}
DEFAULT_TIMEOUT = 60.0

# numpy dtypes of TensorFlow's DataType names, for the typeless JSON of REST.
_NUMPY_DTYPES = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_HALF": np.float16,
    "DT_INT8": np.int8, "DT_INT16": np.int16, "DT_INT32": np.int32, "DT_INT64": np.int64,
    "DT_UINT8": np.uint8, "DT_UINT16": np.uint16, "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64, "DT_BOOL": np.bool_,
}


class ServingClientError(Exception):
  """A request that failed, with the server's message.

  `code` is the HTTP status (REST) or the grpc.StatusCode (gRPC) of the
  failure, or None where no answer came over REST (server unreachable, timed
  out, connection lost).
  """

  def __init__(self, message: str, code: int | grpc.StatusCode | None = None):
    super().__init__(message)
    self.message = message
    self.code = code

  def describe_code(self) -> str:
    """The code as text: HTTP 400, INVALID_ARGUMENT, or no answer."""
    if self.code is None:
      return "no answer"
    if isinstance(self.code, int):
      return f"HTTP {self.code}"
    return getattr(self.code, "name", str(self.code))


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """A signature's input or output: DataType name and shape (-1: any size; None: any rank)."""
  dtype: str
  shape: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class Signature:
  inputs: dict[str, TensorSpec]
  outputs: dict[str, TensorSpec]
  method_name: str = ""


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
  model_name: str
  version: int
  signatures: dict[str, Signature]


@dataclasses.dataclass(frozen=True)
class VersionStatus:
  """One version's state (START, LOADING, AVAILABLE, UNLOADING, END) and load error, if any."""
  version: int
  state: str
  error_code: str
  error_message: str


def _statuses_from_json(document: dict) -> list[VersionStatus]:
  return [VersionStatus(version=int(entry.get("version", 0)), state=entry.get("state", "UNKNOWN"),
                        error_code=entry.get("status", {}).get("error_code", "OK"),
                        error_message=entry.get("status", {}).get("error_message", ""))
          for entry in document.get("model_version_status", [])]


def _tensor_spec_from_json(info: dict) -> TensorSpec:
  shape = info.get("tensor_shape", {})
  if shape.get("unknown_rank"):
    return TensorSpec(info.get("dtype", "DT_INVALID"), None)
  return TensorSpec(info.get("dtype", "DT_INVALID"),
                    tuple(int(dim.get("size", 0)) for dim in shape.get("dim", [])))


def _signatures_from_json(signature_def_map: dict) -> dict[str, Signature]:
  """Signatures from a SignatureDefMap as JSON (proto field names), as both APIs give it."""
  return {
      name: Signature(
          inputs={alias: _tensor_spec_from_json(info)
                  for alias, info in definition.get("inputs", {}).items()},
          outputs={alias: _tensor_spec_from_json(info)
                   for alias, info in definition.get("outputs", {}).items()},
          method_name=definition.get("method_name", ""))
      for name, definition in signature_def_map.get("signature_def", {}).items()
  }


def _as_input(value, spec: TensorSpec | None) -> np.ndarray:
  """`value` as an array of the declared dtype where that loses no kind (float stays float)."""
  array = np.asarray(value)
  target = _NUMPY_DTYPES.get(spec.dtype) if spec is not None else None
  if target is not None and np.can_cast(array.dtype, target, "same_kind"):
    return array.astype(target, copy=False)
  return array  # the server says what is wrong with it


def _flat_examples(x) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  if x.ndim < 2:
    raise ValueError(f"x needs a leading batch axis: [N, D] or [N, H, W], got shape {x.shape}")
  return x.reshape(len(x), -1)


class ServingClient(abc.ABC):
  """One served model; RestClient and GrpcClient are its two transports.

  Signatures are fetched once, by the first predict (or any metadata() call),
  for input dtypes and, over REST, output names and dtypes; call metadata()
  again if a new model version changes them.
  """

  def __init__(self, address: str, model_name: str, version: int | None = None,
               timeout: float = DEFAULT_TIMEOUT):
    if not model_name:
      raise ValueError("model_name must not be empty")
    if version is not None and version < 0:
      raise ValueError(f"version must be >= 0, got {version}")
    self.address = address
    self.model_name = model_name
    self.version = version
    self.timeout = timeout
    self._signatures: dict[str, Signature] | None = None

  @abc.abstractmethod
  def status(self) -> list[VersionStatus]:
    """States of the model's versions (only the pinned one if `version` is set)."""

  @abc.abstractmethod
  def _metadata(self) -> ModelMetadata:
    ...

  @abc.abstractmethod
  def _predict(self, signature_name: str, inputs: dict[str, np.ndarray],
               signature: Signature | None) -> dict[str, np.ndarray]:
    ...

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def metadata(self) -> ModelMetadata:
    """The served version and its signatures' input and output specs."""
    metadata = self._metadata()
    self._signatures = metadata.signatures
    return metadata

  def predict(self, signature_name: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Runs one signature on columnar inputs (each with a leading batch axis)."""
    if self._signatures is None:
      self.metadata()
    signature = self._signatures.get(signature_name or "serving_default")
    arrays = {name: _as_input(value, signature.inputs.get(name) if signature else None)
              for name, value in inputs.items()}
    return self._predict(signature_name, arrays, signature)

  def encode(self, x) -> dict[str, np.ndarray]:
    """q(z|x) of images x [N, D] (or [N, H, W]) in [0, 1]: mean, stddev, a draw z; each [N, Nz]."""
    return self.predict("encode", {"x": _flat_examples(x)})

  def decode(self, z) -> dict[str, np.ndarray]:
    """p(x|z) of latents z [N, Nz]: mean [N, D], and stddev for a Gaussian decoder."""
    return self.predict("decode", {"z": np.asarray(z, dtype=np.float32)})

  def sample(self, num_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """x [N, D] and z [N, Nz] for seeds seed, ..., seed + N - 1; row i depends on its seed only."""
    if num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return self.predict("sample", {"seed": np.arange(seed, seed + num_samples, dtype=np.int64)})

  def reconstruct(self, x) -> dict[str, np.ndarray]:
    """x_mean [N, D]: the decoder mean at the posterior mean of each image."""
    return self.predict("reconstruct", {"x": _flat_examples(x)})

  def score(self, x, num_samples) -> dict[str, np.ndarray]:
    """elbo and importance-sampled log_likelihood [N] of images x, with num_samples draws each.

    `num_samples` is one count for all rows or one per row.
    """
    x = _flat_examples(x)
    counts = np.broadcast_to(np.asarray(num_samples, dtype=np.int32), (len(x),))
    return self.predict("score", {"x": x, "num_samples": counts})


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
    return _statuses_from_json(self._request("GET", self._model_path))

  def _metadata(self) -> ModelMetadata:
    document = self._request("GET", f"{self._model_path}/metadata")
    return ModelMetadata(
        model_name=document["model_spec"]["name"],
        version=int(document["model_spec"].get("version", 0)),
        signatures=_signatures_from_json(document["metadata"]["signature_def"]))

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
    return {name: np.asarray(value, dtype=_NUMPY_DTYPES.get(specs[name].dtype)
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


class GrpcClient(ServingClient):
  """TF Serving's gRPC API with the official tensorflow_serving.apis stubs."""

  def __init__(self, address: str, model_name: str, version: int | None = None,
               timeout: float = DEFAULT_TIMEOUT):
    super().__init__(address, model_name, version, timeout)
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    # As TF Serving, no 4 MB cap on messages: a batch of images is bigger.
    self._channel = grpc.insecure_channel(address, options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

  def close(self) -> None:
    self._channel.close()

  def _call(self, method: Callable, request):
    import grpc

    request.model_spec.name = self.model_name
    if self.version is not None:
      request.model_spec.version.value = self.version
    try:
      return method(request, timeout=self.timeout)
    except grpc.RpcError as error:
      raise ServingClientError(error.details() or error.code().name, error.code()) from None

  def status(self) -> list[VersionStatus]:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2

    response = self._call(self._models.GetModelStatus,
                          get_model_status_pb2.GetModelStatusRequest())
    return _statuses_from_json(json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))

  def _metadata(self) -> ModelMetadata:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    response = self._call(self._predictions.GetModelMetadata, request)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_def_map)
    return ModelMetadata(
        model_name=response.model_spec.name, version=response.model_spec.version.value,
        signatures=_signatures_from_json(json_format.MessageToDict(
            signature_def_map, preserving_proto_field_name=True)))

  def _predict(self, signature_name, inputs, signature):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    for name, array in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    response = self._call(self._predictions.Predict, request)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def make_client(protocol: str, address: str | None, model_name: str,
                version: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> ServingClient:
  """A RestClient or GrpcClient; address defaults to localhost on the protocol's usual port."""
  clients = {"rest": RestClient, "grpc": GrpcClient}
  if protocol not in clients:
    raise ValueError(f"protocol must be rest or grpc, got {protocol!r}")
  return clients[protocol](address or DEFAULT_ADDRESSES[protocol], model_name, version, timeout)
