"""The server's configuration files: TF Serving's text protos.

  --model_config_file         ModelServerConfig { model_config_list { config { ... } } }
  --batching_parameters_file  BatchingParameters
  --monitoring_config_file    MonitoringConfig { prometheus_config { enable path } }
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import protos
from serving.batching_options import BatchingOptions

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def _parse(path: str, message):
  try:
    text = Path(path).read_text()
  except OSError as error:
    raise ValueError(f"cannot read {path}: {error.strerror}") from None
  try:
    return text_format.Parse(text, message)
  except text_format.ParseError as error:
    raise ValueError(f"{path} is not a valid {type(message).__name__} text proto: "
                     f"{error}") from None


def single_model(name: str, base_path: str) -> model_server_config_pb2.ModelConfig:
  return model_server_config_pb2.ModelConfig(
      name=name, base_path=os.path.abspath(base_path), model_platform="tensorflow")


def read_model_config_file(path: str) -> list[model_server_config_pb2.ModelConfig]:
  server_config = _parse(path, model_server_config_pb2.ModelServerConfig())
  if server_config.WhichOneof("config") != "model_config_list":
    raise ValueError(f"{path} must hold a model_config_list")
  models = list(server_config.model_config_list.config)
  if not models:
    raise ValueError(f"{path} lists no models")
  seen = set()
  for model in models:
    if not model.name:
      raise ValueError(f"{path}: every model needs a name")
    if model.name in seen:
      raise ValueError(f"Illegal to list model {model.name} multiple times in config list")
    seen.add(model.name)
    if not os.path.isabs(model.base_path):
      raise ValueError(f"Expected model {model.name} to have an absolute path or URI; got "
                       f"base_path()={model.base_path}")
    if model.model_platform not in ("", "tensorflow"):
      raise ValueError(f"model {model.name}: model_platform {model.model_platform!r} is not "
                       "supported (only tensorflow)")
  return models


def check_base_paths(models: list[model_server_config_pb2.ModelConfig]) -> None:
  for model in models:
    if not os.path.isdir(model.base_path):
      raise ValueError(f"Could not find base path {model.base_path} for servable {model.name}")


def read_batching_parameters(path: str | None, **extra) -> BatchingOptions:
  """The BatchingParameters at `path` (TF Serving's defaults if None), with our `extra` options."""
  if path is None:
    return BatchingOptions(**extra)
  return BatchingOptions.from_proto(_parse(path, protos.BatchingParameters()), **extra)


def read_metrics_path(path: str | None) -> str | None:
  """The Prometheus path if monitoring is enabled, else None."""
  if path is None:
    return None
  prometheus = _parse(path, protos.MonitoringConfig()).prometheus_config
  if not prometheus.enable:
    return None
  return prometheus.path or DEFAULT_METRICS_PATH
