"""TF Serving's REST JSON encoding of tensors (its json_tensor.cc).

Requests carry either `instances` (row format: one entry per example) or
`inputs` (columnar: one tensor per input); responses answer with
`predictions` or `outputs` respectively. A single input or output may go
unnamed; DT_STRING values may be `{"b64": ...}`, and string outputs whose
name ends in `_bytes` are returned that way (serving/json_response.py writes
responses). NaN and Infinity are JSON literals, as TF Serving writes and reads
them. Error texts are TF Serving's.
"""

from __future__ import annotations

import base64
import binascii
import functools

import numpy as np
import tensorflow as tf

from serving import errors, json_document
from serving.servable import TensorInfo, dtype_name

_NUMERIC_KINDS = {"f": "float", "i": "int", "u": "int"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# NumPy's limit on dimensions (TF's is 254); deeper lists cannot be a tensor here.
MAX_RANK = 64
# Echoes of the request in errors are bounded, as TF Serving's JsonValueToDebugString.
_describe = json_document.debug_string


def parse(body: bytes) -> dict:
  document = json_document.parse(body)
  signature_name = document.get("signature_name", "")
  if not isinstance(signature_name, str):
    raise errors.invalid_argument(
        f"JSON Value: {_describe(document)} not formatted correctly. 'signature_name' key must "
        "be a string value.")
  return document


def _json_type(value) -> str:
  if value is None:
    return "Null"
  if value is True:
    return "True"
  if value is False:
    return "False"
  if isinstance(value, dict):
    return "Object"
  if isinstance(value, list):
    return "Array"
  if isinstance(value, str):
    return "String"
  return "Number"


def _type_error(value, dtype: tf.DType) -> errors.ServingError:
  return errors.invalid_argument(f"JSON Value: {_describe(value)} Type: {_json_type(value)} is "
                                 f"not of expected type: {dtype_name(dtype)}")


def _scalar(value, dtype: tf.DType):
  """One JSON scalar as a value of `dtype`, with TF Serving's checks."""
  if dtype == tf.string:
    if isinstance(value, str):
      try:  # bytes that were not UTF-8 come back as they were sent
        return value.encode("utf-8", "surrogateescape")
      except UnicodeEncodeError:  # a lone surrogate escape ("\ud800"): rapidjson's bytes
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict):
      if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise errors.invalid_argument(
            f"JSON Value: {_describe(value)} not formatted correctly for base64 data")
      try:
        return base64.b64decode(value["b64"], validate=True)
      except (binascii.Error, ValueError):
        raise errors.invalid_argument("Unable to base64 decode") from None
    raise _type_error(value, dtype)
  if dtype == tf.bool:
    if isinstance(value, bool):
      return value
    raise _type_error(value, dtype)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise _type_error(value, dtype)
  if dtype.is_floating:
    limit = 2**24 - 1 if dtype == tf.float32 else 2**53 - 1
    too_big = isinstance(value, float) and dtype == tf.float32 and np.isfinite(value) and \
        abs(value) > _FLOAT32_MAX
    if (isinstance(value, int) and abs(value) > limit) or too_big:
      raise errors.invalid_argument(
          f"Cannot convert JSON value: {value} to {dtype_name(dtype)} without loss of precision.")
    return value
  if dtype.is_integer:
    if not isinstance(value, int) or not dtype.min <= value <= dtype.max:
      raise _type_error(value, dtype)
    return value
  raise errors.unimplemented(f"Conversion of JSON Value: {_describe(value)} to type: "
                            f"{dtype_name(dtype)}")


def _shape_of(value) -> list[int]:
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _strict_tensor(value, dtype: tf.DType) -> np.ndarray:
  """Element-by-element conversion, for values the fast path refused."""
  shape = _shape_of(value)
  if len(shape) > MAX_RANK:
    raise errors.invalid_argument(
        f"Shape of rank {len(shape)} has too many dimensions (at most {MAX_RANK})")
  flat = []

  def walk(item, level):
    if isinstance(item, list):
      if level >= len(shape):
        raise errors.invalid_argument(
            f"Encountered list at unexpected level: {level} expected < {len(shape)}")
      if len(item) != shape[level]:
        raise errors.invalid_argument(
            f"Encountered list at unexpected size: {len(item)} at level: {level} expected size: "
            f"{shape[level]}")
      for element in item:
        walk(element, level + 1)
      return
    if level != len(shape):
      raise errors.invalid_argument(
          f"JSON Value: {_describe(item)} found at incorrect level: {level + 1} in the JSON DOM. "
          f"Expected at level: {len(shape)}")
    flat.append(_scalar(item, dtype))

  walk(value, 0)
  numpy_dtype = object if dtype == tf.string else dtype.as_numpy_dtype
  with np.errstate(over="ignore"):  # a float16 past its range is infinity, without a warning
    return np.array(flat, dtype=numpy_dtype).reshape(shape)


@functools.lru_cache(maxsize=None)
def _numeric_facts(dtype: tf.DType) -> tuple[bool, bool, np.dtype]:
  """(numeric, integer, NumPy dtype) of a TF dtype; TF's DType properties cost
  a C++ call each, which the per-request path would pay several times."""
  return dtype.is_floating or dtype.is_integer, dtype.is_integer, dtype.as_numpy_dtype


def to_tensor(value, dtype: tf.DType, may_hold_bools: bool) -> np.ndarray:
  """A JSON value (nested lists of scalars) as an array of `dtype`."""
  numeric, integer, numpy_dtype = _numeric_facts(dtype)
  # np.asarray turns booleans mixed with numbers into numbers, so the fast
  # path is only taken when the body has no JSON true/false at all.
  if numeric and not may_hold_bools and isinstance(value, (list, int, float)):
    try:
      array = np.asarray(value)
    except ValueError:  # ragged
      array = None
    if array is not None and array.dtype.kind in _NUMERIC_KINDS:
      if integer and array.dtype.kind == "f":
        return _strict_tensor(value, dtype)  # raises the type error
      if integer and array.size and (array.min() < dtype.min or array.max() > dtype.max):
        return _strict_tensor(value, dtype)
      if numpy_dtype == np.float32 and array.size:
        if array.dtype.kind in "iu":
          if np.abs(array).max() > 2**24 - 1:
            return _strict_tensor(value, dtype)
          return array.astype(numpy_dtype)  # exact
        # Nothing past float32's range (an infinity included): the cast cannot
        # overflow, so it needs no checking afterwards.
        if np.maximum.reduce(np.abs(array), axis=None) <= _FLOAT32_MAX:
          return array.astype(numpy_dtype)
      with np.errstate(over="ignore"):
        converted = array.astype(numpy_dtype)
      # A float32 infinity the input did not have is an overflow.
      if numpy_dtype == np.float32 and np.isinf(converted).any() and \
          np.isinf(converted).sum() != np.isinf(array).sum():
        return _strict_tensor(value, dtype)
      return converted
  return _strict_tensor(value, dtype)


def _is_b64(value) -> bool:
  return isinstance(value, dict) and set(value) == {"b64"}


def _wrap(status: errors.ServingError) -> str:
  return f"{status.code.name}: {status.message}"


def request_inputs(document: dict, inputs: dict[str, TensorInfo],
                   may_hold_bools: bool = True) -> tuple[dict[str, np.ndarray], bool]:
  """The input tensors of a predict request, and whether it used the row format."""
  has_instances, has_inputs = "instances" in document, "inputs" in document
  if has_instances and has_inputs:
    raise errors.invalid_argument(
        f"JSON Value: {_describe(document)} Not formatted correctly expecting only one of "
        "'inputs' or 'instances' keys to exist ")
  if not has_instances and not has_inputs:
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")
  if has_instances:
    return _from_instances(document, inputs, may_hold_bools), True
  return _from_columns(document["inputs"], inputs, may_hold_bools), False


def _from_instances(document: dict, inputs: dict[str, TensorInfo],
                    may_hold_bools: bool) -> dict[str, np.ndarray]:
  instances = document["instances"]
  if not isinstance(instances, list):
    raise errors.invalid_argument(
        f"JSON Value: {_describe(document)} Excepting 'instances' to be an list/array")
  if not instances:
    raise errors.invalid_argument(
        f"JSON Value: {_describe(document)} No values in 'instances' array")
  first = instances[0]
  as_objects = isinstance(first, dict) and not _is_b64(first)
  if not as_objects:
    if len(inputs) != 1:
      raise errors.invalid_argument(
          "instances is a plain list, but expecting list of objects as multiple input tensors "
          "required as per tensorinfo_map")
    for index, item in enumerate(instances):
      if isinstance(item, dict) and not _is_b64(item):
        raise errors.invalid_argument(
            f"Expecting value/list but got object at item {index} of input list")
    (name, info), = inputs.items()
    try:
      return {name: _stack_rows(instances, info, may_hold_bools)}
    except errors.ServingError as error:
      raise errors.invalid_argument(
          f"Failed to process element: {error.row} of 'instances' list. Error: "
          f"{_wrap(error)}") from None
  columns: dict[str, list] = {name: [] for name in inputs}
  for index, item in enumerate(instances):
    if not isinstance(item, dict) or _is_b64(item):
      raise errors.invalid_argument(
          f"Expecting object but got list at item {index} of input list")
    if isinstance(item, json_document.DuplicateKeys):
      # TF Serving would add the tensor twice and shift every later row.
      raise errors.invalid_argument(
          f"Failed to process element: {index} of 'instances' list. JSON object repeats "
          f"key: {item.duplicates[0]}")
    for key, value in item.items():
      if key not in inputs:
        raise errors.invalid_argument(
            f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
            f"INVALID_ARGUMENT: JSON object: does not have named input: {key}")
      columns[key].append(value)
    if set(item) != set(inputs):
      raise errors.invalid_argument(
          f"Failed to process element: {index} of 'instances' list. JSON object: "
          f"{_describe(item)} must only have keys: {','.join(sorted(inputs))}")
  tensors = {}
  for name, rows in columns.items():
    try:
      tensors[name] = _stack_rows(rows, inputs[name], may_hold_bools)
    except errors.ServingError as error:
      raise errors.invalid_argument(
          f"Failed to process element: {error.row} key: {name} of 'instances' list. Error: "
          f"{_wrap(error)}") from None
  return tensors


def _stack_rows(rows: list, info: TensorInfo, may_hold_bools: bool) -> np.ndarray:
  """Rows of one input as one tensor; errors carry the failing row in `.row`."""
  try:
    return to_tensor(rows, info.dtype, may_hold_bools)
  except errors.ServingError:
    pass
  # Find the first row at fault, and say what is wrong with it.
  expected = None
  for index, row in enumerate(rows):
    try:
      tensor = to_tensor(row, info.dtype, may_hold_bools)
      if expected is None:
        expected = tensor.shape
      elif tensor.shape != expected:
        if tensor.size != int(np.prod(expected)):
          raise errors.invalid_argument(
              f"Expecting tensor size: {int(np.prod(expected))} but got: {tensor.size}")
        raise errors.invalid_argument(
            f"Expecting shape [{','.join(map(str, expected))}] but got: "
            f"[{','.join(map(str, tensor.shape))}]")
    except errors.ServingError as error:
      error.row = index
      raise
  error = errors.invalid_argument("instances could not be stacked into one tensor")
  error.row = 0
  raise error


def _from_columns(value, inputs: dict[str, TensorInfo],
                  may_hold_bools: bool) -> dict[str, np.ndarray]:
  if not isinstance(value, dict) or _is_b64(value):
    if len(inputs) != 1:
      raise errors.invalid_argument(
          "inputs is a plain value/list, but expecting an object as multiple input tensors "
          "required as per tensorinfo_map")
    (name, info), = inputs.items()
    return {name: to_tensor(value, info.dtype, may_hold_bools)}
  tensors = {}
  for name, info in inputs.items():
    if name not in value:
      raise errors.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    tensors[name] = to_tensor(value[name], info.dtype, may_hold_bools)
  return tensors
