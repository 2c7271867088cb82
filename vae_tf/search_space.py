"""The search space of `vae_tf.tuning`, and its tuners' names: parsing and validating.

Pure Python (no TensorFlow), so a bad search-space file or flag is reported
before any heavy import.

A space maps a searchable parameter to a list of choices, a single (fixed)
value, or a numeric range {min, max[, step][, sampling]}. Parameters left out
keep the preset's value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from vae_tf import config as config_lib

# Search algorithms (KerasTuner's): named here, light to import, for the flags.
TUNERS = ("hyperband", "bayesian", "random")

DEFAULT_SEARCH_SPACE = {
    "latent_dim": [2, 3, 5, 10, 20, 50, 100, 200],
    "hidden_units": [100, 200, 500],
    "learning_rate": [0.01, 0.02, 0.1],
}


class SearchSpaceError(ValueError):
  """A search space that cannot be searched, with what is wrong in it."""


# name -> (type, check of one value, what the check requires)
_PARAMETERS = {
    "latent_dim": (int, lambda v: v >= 1, "an integer >= 1"),
    "hidden_units": (int, lambda v: v >= 1, "an integer >= 1"),
    "hidden_layers": (int, lambda v: v >= 1, "an integer >= 1"),
    "learning_rate": (float, lambda v: v > 0, "a number > 0"),
    "estimator": (str, lambda v: v in config_lib.ESTIMATORS,
                  f"one of {', '.join(config_lib.ESTIMATORS)}"),
    "num_samples": (int, lambda v: v >= 1, "an integer >= 1"),
    "activation": (str, lambda v: v in config_lib.ACTIVATIONS,
                   f"one of {', '.join(config_lib.ACTIVATIONS)}"),
}
SEARCHABLE = tuple(_PARAMETERS)


def value_type(name: str) -> type:
  return _PARAMETERS[name][0]


_SAMPLINGS = ("linear", "log", "reverse_log")


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of a list of values (a single value is fixed, not searched)."""

  values: tuple


@dataclasses.dataclass(frozen=True)
class Range:
  """A numeric interval, optionally stepped, sampled linearly or in log space."""

  min: float
  max: float
  step: float | None = None
  sampling: str = "linear"


Dimension = Choice | Range


def _is_value(value, kind: type) -> bool:
  if isinstance(value, bool):
    return False
  if kind is float:
    return isinstance(value, (int, float)) and math.isfinite(value)
  return isinstance(value, kind)


def _check_value(name: str, value) -> Any:
  kind, check, requirement = _PARAMETERS[name]
  if not _is_value(value, kind) or not check(value):
    raise SearchSpaceError(f"{name}: {value!r} is not {requirement}")
  return float(value) if kind is float else value


def _dimension(name: str, spec) -> Dimension:
  kind = _PARAMETERS[name][0]
  if isinstance(spec, dict):
    if kind is str:
      raise SearchSpaceError(f"{name}: a range needs numbers; give a list of choices")
    unknown = set(spec) - {"min", "max", "step", "sampling"}
    if unknown or not {"min", "max"} <= set(spec):
      raise SearchSpaceError(
          f"{name}: a range is {{min, max[, step][, sampling]}}, got keys {sorted(spec)}")
    low, high = _check_value(name, spec["min"]), _check_value(name, spec["max"])
    if low >= high:
      raise SearchSpaceError(f"{name}: min ({low}) must be below max ({high})")
    step = spec.get("step")
    if step is not None and (not _is_value(step, kind) or step <= 0):
      raise SearchSpaceError(f"{name}: step {step!r} is not a positive {kind.__name__}")
    sampling = spec.get("sampling", "linear")
    if sampling not in _SAMPLINGS:
      raise SearchSpaceError(f"{name}: sampling {sampling!r} is not one of "
                             f"{', '.join(_SAMPLINGS)}")
    return Range(low, high, step, sampling)
  values = spec if isinstance(spec, list) else [spec]
  if not values:
    raise SearchSpaceError(f"{name}: the list of choices is empty")
  checked = tuple(_check_value(name, value) for value in values)
  if len(set(checked)) < len(checked):
    raise SearchSpaceError(f"{name}: choices repeat a value: {list(values)}")
  return Choice(checked)


def parse_search_space(spec: dict) -> dict[str, Dimension]:
  """Validates a search space given as {parameter: choices | value | range}."""
  if not isinstance(spec, dict):
    raise SearchSpaceError(f"a search space is a mapping of parameter to choices, "
                           f"got {type(spec).__name__}")
  unknown = sorted(set(spec) - set(_PARAMETERS))
  if unknown:
    raise SearchSpaceError(f"unknown parameter(s) {', '.join(map(str, unknown))}; "
                           f"searchable: {', '.join(SEARCHABLE)}")
  return {name: _dimension(name, value) for name, value in spec.items()}


def load_search_space_file(path: str | os.PathLike) -> dict:
  """The raw mapping in a JSON (.json) or YAML (.yaml, .yml) file, checked.

  Errors name the file; the mapping is returned raw so flags can still
  override single parameters before `parse_search_space`.
  """
  path = Path(path)
  if not path.is_file():
    raise SearchSpaceError(f"search space file {path} does not exist")
  if path.suffix not in (".json", ".yaml", ".yml"):
    raise SearchSpaceError(f"search space file {path}: use a .json, .yaml or .yml file")
  text = path.read_text()
  if path.suffix == ".json":
    try:
      spec = json.loads(text)
    except json.JSONDecodeError as error:
      raise SearchSpaceError(f"search space file {path} is not valid JSON: {error}") from None
  else:
    import yaml
    try:
      spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
      mark = getattr(error, "problem_mark", None)
      where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
      problem = getattr(error, "problem", None) or str(error).splitlines()[0]
      raise SearchSpaceError(
          f"search space file {path} is not valid YAML: {problem}{where}") from None
  if not isinstance(spec, dict):
    raise SearchSpaceError(f"search space file {path} must hold a mapping of parameter to "
                           "choices")
  try:
    parse_search_space(spec)
  except SearchSpaceError as error:
    raise SearchSpaceError(f"search space file {path}: {error}") from None
  return spec


def search_space_to_dict(space: dict[str, Dimension]) -> dict:
  """The inverse of `parse_search_space`, for records and comparisons."""
  return {name: (list(dim.values) if isinstance(dim, Choice) else dataclasses.asdict(dim))
          for name, dim in space.items()}


def grid_size(space: dict[str, Dimension]) -> int | None:
  """Configurations in a grid over `space`; None where a range has no step."""
  size = 1
  for dim in space.values():
    if isinstance(dim, Choice):
      size *= len(dim.values)
    elif dim.step is None or dim.sampling != "linear":
      return None
    else:
      size *= int(round((dim.max - dim.min) / dim.step)) + 1
  return size
