"""TF Serving's BatchingParameters as checked options, with its defaults for unset fields.

The values `make serve` and the benchmark use are in serving/batching_parameters.pbtxt.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """TF Serving's BatchingParameters, with its defaults for unset fields."""

  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = os.cpu_count() or 1
  allowed_batch_sizes: tuple[int, ...] = ()
  pad_variable_length_inputs: bool = False
  enable_large_batch_splitting: bool = False
  max_execution_batch_size: int | None = None  # only read with splitting
  # Not TF Serving's: --batch_timeout_micros_when_busy (serving/batch_waits.py).
  busy_batch_timeout_micros: int | None = None

  @property
  def execution_batch_size(self) -> int:
    """The most rows one model call gets."""
    if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
      return self.max_execution_batch_size
    return self.max_batch_size

  def __post_init__(self):
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.batch_timeout_micros < 0:
      raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
    if self.busy_batch_timeout_micros is not None and self.busy_batch_timeout_micros < 0:
      raise ValueError("batch_timeout_micros_when_busy must be >= 0, got "
                       f"{self.busy_batch_timeout_micros}")
    if self.execution_batch_size < 1:
      raise ValueError(f"max_execution_batch_size must be >= 1, got {self.execution_batch_size}")
    if self.execution_batch_size > self.max_batch_size:
      raise ValueError("When enable_large_batch_splitting is true, input_batch_size_limit (the "
                       "max_batch_size) must be greater than or equal to "
                       "max_execution_batch_size.")
    sizes = list(self.allowed_batch_sizes)
    if sizes:
      if sizes != sorted(set(sizes)) or sizes[0] < 1:
        raise ValueError(f"allowed_batch_sizes must be increasing positive integers, got {sizes}")
      if self.enable_large_batch_splitting:
        if sizes[-1] != self.execution_batch_size:
          raise ValueError(
              f"Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
              f"last entry was {sizes[-1]}; expected {self.execution_batch_size}")
      elif sizes[-1] != self.max_batch_size:
        raise ValueError(
            f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
            f"{sizes[-1]}; expected {self.max_batch_size}")
    if self.pad_variable_length_inputs:
      raise ValueError("pad_variable_length_inputs is not supported by this server")

  @classmethod
  def from_proto(cls, parameters, **extra) -> BatchingOptions:
    """From a `serving.protos.BatchingParameters` message, and options of our own."""
    values = dict(extra)
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads"):
      if parameters.HasField(name):
        values[name] = getattr(parameters, name).value
    values["allowed_batch_sizes"] = tuple(parameters.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = parameters.pad_variable_length_inputs
    if parameters.HasField("enable_large_batch_splitting"):
      values["enable_large_batch_splitting"] = parameters.enable_large_batch_splitting.value
    if parameters.HasField("max_execution_batch_size"):
      values["max_execution_batch_size"] = parameters.max_execution_batch_size.value
    return cls(**values)

  def padded_size(self, size: int) -> int:
    for allowed in self.allowed_batch_sizes:
      if allowed >= size:
        return allowed
    return size
