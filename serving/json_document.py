"""Request bodies as TF Serving's rapidjson reads them, and bounded echoes of them.

TF Serving (util/json_tensor.cc, ParseJson) parses with rapidjson's
kParseIterativeFlag, so no nesting depth overflows its stack: a deeply nested
value under a key it never reads still gives a normal answer, and one it does
read gives that key's usual error. Python's C scanner recurses instead and
raises RecursionError near 1,000 levels; `parse` then finishes the document
with an explicit stack, handing every shallow sub-value back to the C scanner,
up to MAX_DEPTH levels (a 400 "JSON Parse error" beyond).

The rest also follows rapidjson: a UTF-8 byte-order mark is skipped; bytes that
are not UTF-8 are not rejected (kParseValidateEncodingFlag is off) but kept,
as surrogate escapes, so a DT_STRING input gets the bytes sent; and an object
with a repeated key answers lookups with the first one (FindMember).

Most bodies are read by orjson (`_parse_fast`), which builds the same document
several times faster; a body it may read differently (escapes, repeated keys,
integers past 64 bits, NaN, deep nesting, bad UTF-8) is left to the scanner
above, which also words every error.

`debug_string` is TF Serving's JsonValueToDebugString: a value written with
rapidjson's PrettyWriter (single-line arrays) that stops once 256 bytes are
out, so an error about a 50 MB document does not echo 50 MB.
"""

from __future__ import annotations

import json
import math
import re

import orjson

from serving import errors

DEBUG_STRING_BYTES = 256  # TF Serving's kMaxJsonDebugStringBytes
# Deeper documents are refused: parsing by hand costs a few microseconds a
# level, and no tensor needs more than a handful (NumPy allows 64 dimensions).
MAX_DEPTH = 10_000
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_OPEN_RUN = re.compile(r"\[*")
_DIGIT_RUN = re.compile(r"\d{4301}")  # longer than Python's int conversion limit
# After the C scanner fails at some depth, descend this many levels by hand
# before it is tried again, so a deep chain costs linear time, not quadratic.
_HAND_LEVELS = 256
_DIGITS_AS_ONES = bytes(ord("1") if chr(i).isdigit() and i < 128 else ord("0") for i in range(256))
_DIGIT_RUN_OF_19 = b"1" * 19


class DuplicateKeys(dict):
  """A JSON object that repeated keys; it holds each key's first value."""

  def __init__(self, pairs: list[tuple[str, object]]):
    super().__init__()
    self.duplicates: list[str] = []
    for key, value in pairs:
      if key in self:
        self.duplicates.append(key)
      else:
        self[key] = value


def _object(pairs: list[tuple[str, object]]) -> dict:
  document = dict(pairs)
  return document if len(document) == len(pairs) else DuplicateKeys(pairs)


_DECODER = json.JSONDecoder(object_pairs_hook=_object)


def _parse_error(text: str, message: str, position: int) -> errors.ServingError:
  offset = len(text[:position].encode("utf-8", "surrogateescape"))  # rapidjson counts bytes
  return errors.invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def _has_long_digit_run(body: bytes) -> bool:
  """Whether `body` holds 19 digits in a row: orjson reads integers past 64 bits
  as floats, where the scanner keeps them exact (and errors quote them)."""
  return _DIGIT_RUN_OF_19 in body.translate(_DIGITS_AS_ONES)


def has_literal(body: bytes, literal: bytes) -> bool:
  """Whether `literal` occurs in `body`. A JSON body rarely holds the first
  letter of `true` or `false` outside them, so hopping between that letter's
  occurrences (memchr) beats a substring search over the whole body."""
  first = literal[:1]
  position = body.find(first)
  for _ in range(8):
    if position < 0:
      return False
    if body.startswith(literal, position):
      return True
    position = body.find(first, position + 1)
  return position >= 0 and literal in body[position:]


def _parse_fast(body: bytes) -> dict | None:
  """The document as orjson reads it, or None where that could differ from the scanner's."""
  if b"\\" in body:  # escapes: lone surrogates, keys spelt two ways
    return None
  try:
    document = orjson.loads(body)
  except orjson.JSONDecodeError:  # NaN, Infinity, bad UTF-8, depth: the scanner decides
    return None
  if type(document) is not dict:
    return None
  # orjson keeps a repeated key's last value, rapidjson its first: count the
  # objects and each key's spellings in the text (without escapes a key has
  # one spelling; a string equal to a key only sends the body the slow way).
  objects = [document]
  for value in document.values():
    if type(value) is dict:
      objects.append(value)
    elif type(value) is list and value and type(value[0]) is dict:
      objects.extend(row for row in value if type(row) is dict)
  if body.count(b"{") != len(objects):
    return None
  keys: dict[str, int] = {}
  for item in objects:
    for key in item:
      keys[key] = keys.get(key, 0) + 1
  for key, count in keys.items():
    if body.count(b'"' + key.encode() + b'"') != count:
      return None
  if _has_long_digit_run(body):
    return None
  return document


def parse(body: bytes) -> dict:
  """The request's JSON object; errors are TF Serving's "JSON Parse error" 400s."""
  if body.startswith(_BOM):
    body = body[len(_BOM):]
  document = _parse_fast(body)
  if document is not None:
    return document
  if not body.strip():
    raise errors.invalid_argument("JSON Parse error: The document is empty")
  text = body.decode("utf-8", "surrogateescape")
  try:
    try:
      document = _DECODER.decode(text)
    except RecursionError:
      document = _parse_deep(text)
  except json.JSONDecodeError as error:
    raise _parse_error(text, error.msg, error.pos) from None
  except ValueError:  # an integer literal past Python's digit limit
    match = _DIGIT_RUN.search(text)
    raise _parse_error(text, "Number too big to be stored in double.",
                       match.start() if match else 0) from None
  if not isinstance(document, dict):
    raise errors.invalid_argument(f"JSON Value: {debug_string(document)} Is not object")
  return document


def _skip(text: str, position: int) -> int:
  return _WHITESPACE.match(text, position).end()


def _key(text: str, position: int) -> tuple[str, int]:
  """An object member's name and the position after its colon."""
  if text[position:position + 1] != '"':
    raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text,
                               position)
  key, position = json.decoder.scanstring(text, position + 1)
  position = _skip(text, position)
  if text[position:position + 1] != ":":
    raise json.JSONDecodeError("Expecting ':' delimiter", text, position)
  return key, _skip(text, position + 1)


def _parse_deep(text: str) -> object:
  """The document, parsed with an explicit stack of the open containers."""
  stack: list[tuple[list[object], str | None, bool]] = []  # (members, key, is_object)
  hand_until = -1  # depth down to which containers are opened by hand
  position = _skip(text, 0)
  while True:
    char = text[position:position + 1]
    value, parsed = None, False
    if char not in ("[", "{") or len(stack) >= hand_until:
      try:
        value, position = _DECODER.scan_once(text, position)
        parsed = True
      except StopIteration:
        raise json.JSONDecodeError("Expecting value", text, position) from None
      except RecursionError:
        hand_until = len(stack) + _HAND_LEVELS
    if not parsed:
      is_object = char == "{"
      position = _skip(text, position + 1)
      if text[position:position + 1] != ("}" if is_object else "]"):
        key = None
        if is_object:
          key, position = _key(text, position)
        stack.append(([], key, is_object))
        run = max(_OPEN_RUN.match(text, position).end() - position - 1, 0)  # "[[[[" at once
        if len(stack) + run > MAX_DEPTH:
          at = position + MAX_DEPTH - len(stack) if run else position
          raise json.JSONDecodeError(f"Nesting deeper than {MAX_DEPTH} levels", text, at)
        stack.extend(([], None, False) for _ in range(run))
        position += run
        continue
      value, position = ({} if is_object else []), position + 1
    while True:  # add the value to its container; close those that end here
      if not stack:
        if text[_skip(text, position):].strip():
          raise json.JSONDecodeError("Extra data", text, _skip(text, position))
        return value
      members, key, is_object = stack[-1]
      members.append((key, value) if is_object else value)
      position = _skip(text, position)
      char = text[position:position + 1]
      if char == ",":
        position = _skip(text, position + 1)
        if is_object:
          key, position = _key(text, position)
          stack[-1] = (members, key, is_object)
        break
      if char != ("}" if is_object else "]"):
        expected = "'}'" if is_object else "']'"
        raise json.JSONDecodeError(f"Expecting ',' or {expected} delimiter", text, position)
      stack.pop()
      value, position = (_object(members) if is_object else members), position + 1
      while stack and not stack[-1][2] and text[position:position + 1] == "]":  # "]]]]"
        parent = stack.pop()[0]
        parent.append(value)
        value, position = parent, position + 1


def _scalar_text(value) -> str:
  if isinstance(value, str):
    return json.dumps(value[:DEBUG_STRING_BYTES], ensure_ascii=False)
  if value is None or isinstance(value, bool):
    return json.dumps(value)
  if isinstance(value, float) and not math.isfinite(value):
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
  return repr(value)


def _tokens(value):
  """rapidjson PrettyWriter's output for `value` (kFormatSingleLineArray), token by token."""
  stack: list[list] = []  # per open container: [entries, is_object, entries written]
  prefix, item = "", value
  while True:
    if isinstance(item, dict):
      yield prefix + "{"
      stack.append([iter(item.items()), True, 0])
    elif isinstance(item, list):
      yield prefix + "["
      stack.append([iter(item), False, 0])
    else:
      yield prefix + _scalar_text(item)
    while stack:
      frame = stack[-1]
      entries, is_object, count = frame
      entry = next(entries, _END)
      if entry is _END:
        stack.pop()
        if not is_object:
          yield "]"
        else:
          yield "\n" + "    " * len(stack) + "}" if count else "}"
        continue
      frame[2] += 1
      if is_object:
        key, item = entry
        prefix = ("," if count else "") + "\n" + "    " * len(stack) + _scalar_text(str(key)) + ": "
      else:
        prefix, item = (", " if count else ""), entry
      break
    else:
      return


def debug_string(value) -> str:
  """`value` as TF Serving echoes it in errors: pretty JSON, cut once 256 bytes are out.

  Like rapidjson's JsonWriterWithLimit it writes whole tokens while under the
  limit; unlike it, a single huge string is cut too (TF Serving would echo it).
  """
  out: list[str] = []
  size = 0
  for token in _tokens(value):
    if size >= DEBUG_STRING_BYTES:
      break
    out.append(token)
    size += len(token)
  return "".join(out)[:2 * DEBUG_STRING_BYTES]


_END = object()
