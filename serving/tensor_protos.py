"""TensorProto <-> NumPy for the gRPC API, without TensorFlow's Python helpers
for the common case.

tf.make_ndarray and tf.make_tensor_proto cost more than the rest of a small
predict request; a numeric tensor sent as `tensor_content` (what every TF
client sends for arrays) is a reshaped buffer, and a numeric answer is one
too. Anything else (strings, the repeated `*_val` fields, half precision
stored as ints) goes through TensorFlow's helpers as before.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

_NUMPY_OF = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT8: np.int8, types_pb2.DT_INT16: np.int16, types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64, types_pb2.DT_BOOL: np.bool_,
}
_DTYPE_OF = {np.dtype(numpy): dtype for dtype, numpy in _NUMPY_OF.items()}


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """The tensor as an array; TypeError or ValueError if it is not a valid one."""
  numpy_dtype = _NUMPY_OF.get(proto.dtype)
  shape = proto.tensor_shape
  if numpy_dtype is None or not proto.tensor_content or shape.unknown_rank or \
      any(dim.size < 0 for dim in shape.dim):
    return tf.make_ndarray(proto)
  return np.frombuffer(proto.tensor_content, numpy_dtype).reshape(
      [dim.size for dim in shape.dim])


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
  """The array as tf.make_tensor_proto writes it (which puts bools and scalars in `*_val`)."""
  dtype = _DTYPE_OF.get(array.dtype)
  if dtype is None or dtype == types_pb2.DT_BOOL or array.ndim == 0:
    return tf.make_tensor_proto(array)
  proto = tensor_pb2.TensorProto(dtype=dtype, tensor_content=np.ascontiguousarray(array).tobytes())
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  return proto
