"""Which model versions are loaded: discovery, version policy, hot swap.

Each model's base path is polled for integer-named version folders. The
version policy (TF Serving's ModelVersionPolicy: latest N, all, specific)
picks the aspired versions among those that have not failed to load. A new
version is loaded and warmed up in the background, and only then made
visible; a version that leaves the aspired set is unloaded once the requests
that hold it have finished. So requests never see a half-loaded version and
are never cut off, and a version that fails to load is reported in the model
status and skipped while the previous one keeps serving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving import errors
from serving.servable import Servable

logger = logging.getLogger(__name__)


class State(enum.Enum):
  """ModelVersionStatus.State."""
  START = 10
  LOADING = 20
  AVAILABLE = 30
  UNLOADING = 40
  END = 50


@dataclasses.dataclass
class VersionStatus:
  version: int
  state: State
  error: errors.ServingError | None = None


@dataclasses.dataclass
class _Model:
  config: model_server_config_pb2.ModelConfig
  statuses: dict[int, VersionStatus] = dataclasses.field(default_factory=dict)
  servables: dict[int, Servable] = dataclasses.field(default_factory=dict)
  in_use: dict[int, int] = dataclasses.field(default_factory=dict)


def on_disk_versions(base_path: str) -> list[int]:
  """Integer-named subfolders of base_path; other names are ignored, as in TF Serving."""
  path = Path(base_path)
  if not path.is_dir():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir())


def newest_version_path(base_path: str) -> Path:
  """The folder of the highest version under base_path."""
  versions = on_disk_versions(base_path)
  if not versions:
    raise FileNotFoundError(f"no integer-named SavedModel version under {base_path}")
  return Path(base_path) / str(versions[-1])


def aspired_versions(policy: model_server_config_pb2.ModelConfig, available: list[int]) -> list[int]:
  """The versions the model's version policy asks for, among `available`."""
  version_policy = policy.model_version_policy
  choice = version_policy.WhichOneof("policy_choice")
  if choice == "all":
    return list(available)
  if choice == "specific":
    return [v for v in available if v in set(version_policy.specific.versions)]
  count = version_policy.latest.num_versions if choice == "latest" else 1
  return available[-max(count, 1):] if available else []


class ModelManager:
  """Loads, serves and unloads the versions of the configured models."""

  def __init__(self, configs: list[model_server_config_pb2.ModelConfig],
               on_load: Callable[[str, int, str, float], None] | None = None):
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
      raise ValueError(f"model names must be unique, got {names}")
    self._models = {c.name: _Model(c) for c in configs}
    self._lock = threading.Condition()
    self._on_load = on_load
    self._poller: threading.Thread | None = None
    self._stop = threading.Event()

  def poll(self) -> None:
    """Brings every model's loaded versions in line with disk and policy."""
    for name, model in self._models.items():
      with self._lock:
        failed = {v for v, s in model.statuses.items() if s.error is not None}
      available = [v for v in on_disk_versions(model.config.base_path) if v not in failed]
      aspired = aspired_versions(model.config, available)
      for version in aspired:
        if version not in model.servables:
          self._load(name, model, version)
      with self._lock:
        loaded = set(model.servables)
      # Unload only what a newer aspired version has replaced: never leave a
      # model with nothing to serve because its replacement failed to load.
      if loaded & set(aspired) or not aspired:
        for version in loaded - set(aspired):
          self._unload(model, version)

  def _load(self, name: str, model: _Model, version: int) -> None:
    path = str(Path(model.config.base_path) / str(version))
    with self._lock:
      model.statuses[version] = VersionStatus(version, State.LOADING)
    started = time.monotonic()
    try:
      servable = Servable(name, version, path)
      servable.warm_up()
    except Exception as error:  # any failure: report it, keep serving the others
      message = f"Failed to load servable version {version} of model {name} at {path}: {error}"
      logger.error(message)
      with self._lock:
        model.statuses[version] = VersionStatus(
            version, State.END, errors.ServingError(grpc.StatusCode.UNKNOWN, message))
      if self._on_load:
        self._on_load(name, version, "error", time.monotonic() - started)
      return
    with self._lock:
      model.servables[version] = servable
      model.in_use.setdefault(version, 0)
      model.statuses[version] = VersionStatus(version, State.AVAILABLE)
    logger.info("Successfully loaded servable version %d of model %s", version, name)
    if self._on_load:
      self._on_load(name, version, "success", time.monotonic() - started)

  def _unload(self, model: _Model, version: int) -> None:
    with self._lock:
      model.statuses[version] = VersionStatus(version, State.UNLOADING)
      servable = model.servables.pop(version)
      while model.in_use.get(version):
        self._lock.wait()
      model.in_use.pop(version, None)
      model.statuses[version] = VersionStatus(version, State.END)
    logger.info("Unloaded servable version %d of model %s", version, servable.name)

  def start_polling(self, wait_seconds: float) -> None:
    """Polls in the background every `wait_seconds` (0: never)."""
    if wait_seconds <= 0:
      return

    def loop():
      while not self._stop.wait(wait_seconds):
        try:
          self.poll()
        except Exception:  # the poller must outlive a bad file system moment
          logger.exception("polling the model folders failed")

    self._poller = threading.Thread(target=loop, name="model-poller", daemon=True)
    self._poller.start()

  def stop(self) -> None:
    self._stop.set()
    if self._poller is not None:
      self._poller.join()

  def _model(self, name: str) -> _Model:
    model = self._models.get(name)
    if model is None:
      raise errors.not_found(f"Servable not found for request: Latest({name})")
    return model

  def resolve_version(self, name: str, version: int | None = None,
                      label: str | None = None) -> int:
    """The version a request for (name, version or label) gets."""
    model = self._model(name)
    if label:
      labels = model.config.version_labels
      if label not in labels:
        raise errors.invalid_argument(f"Unrecognized servable version label: {label}")
      version = labels[label]
    with self._lock:
      if version is None:
        if not model.servables:
          raise errors.not_found(f"Servable not found for request: Latest({name})")
        return max(model.servables)
      if version not in model.servables:
        raise errors.not_found(f"Servable not found for request: Specific({name}, {version})")
      return version

  @contextlib.contextmanager
  def servable(self, name: str, version: int | None = None,
               label: str | None = None) -> Iterator[Servable]:
    """Holds a loaded version for the duration of one request."""
    model = self._model(name)
    with self._lock:
      resolved = self.resolve_version(name, version, label)
      model.in_use[resolved] += 1
      servable = model.servables[resolved]
    try:
      yield servable
    finally:
      with self._lock:
        model.in_use[resolved] -= 1
        if not model.in_use[resolved]:
          self._lock.notify_all()

  def statuses(self, name: str, version: int | None = None,
               label: str | None = None) -> list[VersionStatus]:
    """Status of every version seen (or of one), newest first."""
    model = self._models.get(name)
    if model is None:
      if version is not None:
        raise errors.not_found(f"Could not find version {version} of model {name}")
      raise errors.not_found(f"Could not find any versions of model {name}")
    if label:
      if label not in model.config.version_labels:
        raise errors.invalid_argument(f"Unrecognized servable version label: {label}")
      version = model.config.version_labels[label]
    with self._lock:
      if version is not None:
        if version not in model.statuses:
          raise errors.not_found(
              f"Could not find version {version} of model {name}")
        return [model.statuses[version]]
      if not model.statuses:
        raise errors.not_found(f"Could not find any versions of model {name}")
      return [model.statuses[v] for v in sorted(model.statuses, reverse=True)]
