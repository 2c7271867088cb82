"""The fast paths (orjson, raw tensor buffers) give what the exact paths give."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from serving import json_document, json_response, tensor_protos

BODIES = [
    b'{"signature_name": "encode", "instances": [[0.5, 1e-05, 0, 1, -0.0]]}',
    b'{"inputs": {"x": [[0.25, 0.75]], "num_samples": [3]}}',
    b'{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}',
    b'{"instances": [{"x": [1], "x": [2]}]}',  # a repeated key: the first one counts
    b'{"instances": [[1]], "instances": [[2]]}',
    b'{"signature_name": "instances", "instances": [[1]]}',  # a key's text as a value
    b'{"instances": [123456789012345678901234567890]}',  # past 64 bits
    b'{"instances": [-9223372036854775809, 18446744073709551615]}',
    b'{"instances": [1e400]}',
    b'{"instances": [NaN, Infinity]}',
    b'{"instances": ["caf\\u00e9", "\\ud800"]}',  # escapes, a lone surrogate
    b'{"instances": ["\xff\xfe"]}',  # not UTF-8
    b'\xef\xbb\xbf{"instances": [1]}',
    b'{"instances": [{"b64": "aGk=", "b64": "eA=="}]}',
]


@pytest.mark.parametrize("body", BODIES)
def test_fast_parse_reads_what_the_exact_parser_reads(body):
  exact = json_document._DECODER.decode(body.removeprefix(b"\xef\xbb\xbf").decode(
      "utf-8", "surrogateescape"))
  parsed = json_document.parse(body)
  assert json.dumps(parsed, sort_keys=True) == json.dumps(exact, sort_keys=True)
  assert type(parsed) is type(exact)
  assert json_document.debug_string(parsed) == json_document.debug_string(exact)


@pytest.mark.parametrize("row_format", [True, False])
@pytest.mark.parametrize("outputs", [
    {"mean": np.float32([[0.1, -2.5e-7, 3e38]]), "z": np.float32([[1, 2, 3]])},
    {"elbo": np.float32([-90.5, -100.25]), "log_likelihood": np.float64([-89.0, -99.5])},
    {"x": np.int64([[2**62, -1]]), "ok": np.bool_([[True, False]])},
    {"mean": np.float32([[np.nan, np.inf, -np.inf]])},  # JSON's NaN and Infinity literals
])
def test_fast_response_reads_back_as_the_exact_one(outputs, row_format):
  body = json_response.response(outputs, row_format)
  key = "predictions" if row_format else "outputs"
  exact = {name: json_response._to_json_value(name, value) for name, value in outputs.items()}
  expected = next(iter(exact.values())) if len(exact) == 1 else (
      [dict(zip(exact, row)) for row in zip(*exact.values())] if row_format else exact)
  # Through dumps, so that NaN compares equal to NaN.
  assert json.dumps(json.loads(body)) == json.dumps({key: expected})
  if any(not np.isfinite(v).all() for v in outputs.values() if v.dtype.kind == "f"):
    assert b"NaN" in body and b"Infinity" in body


@pytest.mark.parametrize("array", [
    np.random.default_rng(0).random((3, 4)).astype(np.float32), np.arange(5, dtype=np.int64),
    np.zeros((0, 3), np.float64), np.uint8([[1, 2]]), np.array([True, False]),
    np.float32(3.0).reshape(()), np.array([b"a", b"bc"], dtype=object)])
def test_tensor_protos_match_tensorflow(array):
  proto = tensor_protos.to_proto(array)
  assert proto.SerializeToString() == tf.make_tensor_proto(array).SerializeToString()
  for source in (proto, tf.make_tensor_proto(array)):
    back = tensor_protos.to_array(source)
    assert back.dtype == tf.make_ndarray(source).dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_a_short_tensor_buffer_is_a_value_error():
  proto = tf.make_tensor_proto(np.zeros((2, 3), np.float32))
  proto.tensor_content = proto.tensor_content[:-4]
  with pytest.raises(ValueError):
    tensor_protos.to_array(proto)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.int32, tf.float16])
@pytest.mark.parametrize("value", [
    [[0.5, 1e-05, 0, 1, -0.0]],
    [[3.4e38, -3.4e38]],  # inside float32's range
    [[3.5e38]],  # past it: an overflow
    [[float("inf"), 1.0]], [[float("nan")]],  # what the exact JSON scanner can hand on
    [[16777216, -16777215]], [[16777217]],  # float32 holds integers up to 2^24 exactly
    [[2**31], [1]], [[1.5]], [[]], [],
])
def test_fast_tensor_path_gives_what_the_strict_one_gives(value, dtype):
  from serving import errors, json_tensors

  def outcome(function):
    try:
      array = function()
    except errors.ServingError as error:
      return ("error", error.message)
    return ("array", array.dtype, array.shape, array.tobytes())

  fast = outcome(lambda: json_tensors.to_tensor(value, dtype, may_hold_bools=False))
  assert fast == outcome(lambda: json_tensors._strict_tensor(value, dtype))


@pytest.mark.parametrize("body", [
    b'{"instances": [true]}', b'{"instances": [[1, false]]}', b'{"t": [1], "tt": 2}',
    b'{"signature_name": "tttttttttttt", "instances": [[1, true]]}', b"", b"true",
    b'{"instances": ["not true", "fals"]}',
])
def test_has_literal_finds_what_a_substring_search_finds(body):
  for literal in (b"true", b"false"):
    assert json_document.has_literal(body, literal) == (literal in body)


def test_direct_signature_calls_give_what_the_public_calls_give(export_base):
  """Servable.run calls each signature's graph without TensorFlow's argument
  binding; the outputs must be the public call's, for every signature (score
  takes two inputs, whose order the direct call must get right)."""
  import dataclasses

  from serving import errors
  from serving.servable import Servable
  from serving_helpers import LATENT_DIM

  servable = Servable("vae", 1, export_base / "vae" / "1")
  rng = np.random.default_rng(0)
  x = rng.random((3, 784)).astype(np.float32)
  requests = {
      "encode": {"x": x},
      "decode": {"z": rng.standard_normal((3, LATENT_DIM)).astype(np.float32)},
      "sample": {"seed": np.array([1, 2, 3], np.int64)},
      "reconstruct": {"x": x},
      "score": {"x": x, "num_samples": np.array([1, 5, 150], np.int32)},
  }
  for name, inputs in requests.items():
    signature = servable.signature(name)
    assert signature.call is not None, name
    public = signature.function(**{k: tf.constant(v) for k, v in inputs.items()})
    outputs = sorted(signature.outputs)
    direct = servable.run(signature, inputs, outputs)
    # Without the direct call (a TensorFlow that lacks its pieces) run falls back.
    fallback = servable.run(dataclasses.replace(signature, call=None), inputs, outputs)
    for output in outputs:
      np.testing.assert_array_equal(direct[output], public[output].numpy(), err_msg=name)
      np.testing.assert_array_equal(fallback[output], direct[output], err_msg=name)
  with pytest.raises(errors.ServingError, match=r"x must lie in \[0, 1\]"):
    servable.run(servable.signature("encode"), {"x": x + 1.0}, ["z"])
