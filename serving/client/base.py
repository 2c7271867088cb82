"""What both transports share: the signature-level API (encode, decode,
sample, reconstruct, score), its result types and errors."""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  import grpc

REST_PORT = 8501
GRPC_PORT = 8500
DEFAULT_ADDRESSES = {"rest": f"localhost:{REST_PORT}", "grpc": f"localhost:{GRPC_PORT}"}
DEFAULT_TIMEOUT = 60.0

# numpy dtypes of TensorFlow's DataType names, for the typeless JSON of REST.
NUMPY_DTYPES = {
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


def statuses_from_json(document: dict) -> list[VersionStatus]:
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


def signatures_from_json(signature_def_map: dict) -> dict[str, Signature]:
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
  target = NUMPY_DTYPES.get(spec.dtype) if spec is not None else None
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
