"""Predict responses and error bodies in TF Serving's REST JSON (its json_tensor.cc).

Row-format requests get `predictions` (one entry per example), columnar ones
`outputs`; a single output goes unnamed. String outputs whose name ends in
`_bytes` are written as `{"b64": ...}`; NaN and Infinity as the JSON literals
TF Serving writes.

Numbers are written as the shortest text that reads back as the float64 value
of each element, so a float32 reads back bit-exact; TF Serving prints the same
values with fewer digits where they suffice. Numeric outputs without NaN or
Infinity, nearly every answer, are written by orjson straight from the arrays.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson

from serving import errors


def _to_json_value(name: str, array: np.ndarray):
  if array.dtype == object or array.dtype.kind in "SU":
    if name.endswith("_bytes"):
      encode = lambda b: {"b64": base64.b64encode(b).decode("ascii")}
    else:
      encode = lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
    return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else array.tolist()
  if array.dtype.kind == "f":
    return array.astype(np.float64).tolist()
  return array.tolist()


def _fast_column(array: np.ndarray) -> np.ndarray | None:
  """`array` as orjson writes it, or None where it would differ from json's text."""
  kind = array.dtype.kind
  if kind == "f":
    if not np.isfinite(array).all():  # orjson writes NaN and Infinity as null
      return None
    return np.ascontiguousarray(array, dtype=np.float64)
  if kind in "iub" and array.dtype.itemsize <= 8:
    return np.ascontiguousarray(array)
  return None


def _dumps_fast(outputs: dict[str, np.ndarray], row_format: bool) -> bytes | None:
  columns = {}
  for name, value in outputs.items():
    column = _fast_column(value)
    if column is None or column.ndim == 0:
      return None
    columns[name] = column
  if not row_format:
    body = {"outputs": next(iter(columns.values())) if len(columns) == 1 else columns}
  elif len(columns) == 1:
    body = {"predictions": next(iter(columns.values()))}
  else:
    names, values = list(columns), list(columns.values())
    body = {"predictions": [dict(zip(names, row)) for row in zip(*values)]}
  return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def response(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
  """The JSON body for a predict response."""
  if not outputs:
    raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
  if not row_format:
    fast = _dumps_fast(outputs, row_format)
    if fast is not None:
      return fast
    values = {name: _to_json_value(name, value) for name, value in outputs.items()}
    body = {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    return json.dumps(body).encode()
  batch = None
  for name, value in outputs.items():
    if value.ndim == 0:
      raise errors.invalid_argument(f"Tensor name: {name} has no shape information ")
    if value.shape[0] < 1:
      raise errors.invalid_argument(f"Tensor name: {name} has invalid batch size: "
                                    f"{value.shape[0]}")
    if batch is None:
      batch = value.shape[0]
    elif value.shape[0] != batch:
      raise errors.invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                                    f"{value.shape[0]} expecting: {batch}")
  fast = _dumps_fast(outputs, row_format)
  if fast is not None:
    return fast
  columns = {name: _to_json_value(name, value) for name, value in outputs.items()}
  if len(columns) == 1:
    predictions = next(iter(columns.values()))
  else:
    names = list(columns)
    predictions = [dict(zip(names, row)) for row in zip(*columns.values())]
  return json.dumps({"predictions": predictions}).encode()


def error_body(message: str) -> bytes:
  return ('{ "error": ' + json.dumps(errors.bounded(message)) + " }").encode()
