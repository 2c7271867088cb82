"""TF Serving's Prometheus metrics, in its exposition format.

Names and labels are TF Serving's (`:tensorflow:serving:request_count` and
so on), so dashboards and alerts written for it work unchanged. The text
format is TF Serving's too: a `# TYPE` line per metric, no HELP lines, and
counters without the `_total` suffix that prometheus_client would add.
"""

from __future__ import annotations

import bisect
import threading

# TF Serving's request-latency buckets: Exponential(10, 1.8, 33), in us.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
BATCH_SIZE_BUCKETS = tuple(2**i for i in range(14))


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
  parts = [f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
           for n, v in zip(names, values)]
  if extra:
    parts.append(extra)
  return "{" + ",".join(parts) + "}"


def _number(value: float) -> str:
  return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:

  def __init__(self, name: str, labels: tuple[str, ...]):
    self.name, self.label_names = name, labels
    self._values: dict[tuple[str, ...], int] = {}

  def increment(self, *labels: str, by: int = 1) -> None:
    self._values[labels] = self._values.get(labels, 0) + by

  def value(self, *labels: str) -> int:
    return self._values.get(labels, 0)

  def lines(self) -> list[str]:
    return [f"# TYPE {self.name} counter"] + [
        f"{self.name}{_labels(self.label_names, k)} {v}" for k, v in self._values.items()]


class Histogram:

  def __init__(self, name: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
    self.name, self.label_names, self.buckets = name, labels, buckets
    self._values: dict[tuple[str, ...], list] = {}

  def observe(self, value: float, *labels: str) -> None:
    entry = self._values.setdefault(labels, [[0] * (len(self.buckets) + 1), 0.0])
    entry[0][bisect.bisect_left(self.buckets, value)] += 1
    entry[1] += value

  def count(self, *labels: str) -> int:
    entry = self._values.get(labels)
    return sum(entry[0]) if entry else 0

  def lines(self) -> list[str]:
    lines = [f"# TYPE {self.name} histogram"]
    for key, (counts, total) in self._values.items():
      cumulative = 0
      for limit, count in zip((*map(_number, self.buckets), "+Inf"), counts):
        cumulative += count
        lines.append(f"{self.name}_bucket{_labels(self.label_names, key, f'le={chr(34)}{limit}{chr(34)}')} "
                     f"{cumulative}")
      lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
      lines.append(f"{self.name}_count{_labels(self.label_names, key)} {cumulative}")
    return lines


class ServerMetrics:
  """The metrics this server keeps; `exposition()` renders them."""

  def __init__(self):
    self._lock = threading.Lock()
    self.request_count = Counter(":tensorflow:serving:request_count", ("model_name", "status"))
    self.request_latency = Histogram(":tensorflow:serving:request_latency",
                                     ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US)
    self.runtime_latency = Histogram(":tensorflow:serving:runtime_latency",
                                     ("model_name", "API", "runtime"), LATENCY_BUCKETS_US)
    self.load_attempt_count = Counter(":tensorflow:cc:saved_model:load_attempt_count",
                                      ("model_path", "status"))
    self.load_latency = Histogram(":tensorflow:serving:model_load_latency", ("model_path",),
                                  LATENCY_BUCKETS_US)
    self.batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                ("model_name",), BATCH_SIZE_BUCKETS)
    self.padding_size = Histogram(":tensorflow:serving:batching_session:padding_size",
                                  ("model_name",), BATCH_SIZE_BUCKETS)
    self.queuing_latency = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                                     ("model_name",), LATENCY_BUCKETS_US)

  def record_request(self, model_name: str, status: str, entrypoint: str,
                     seconds: float | None) -> None:
    with self._lock:
      self.request_count.increment(model_name, status)
      if status == "OK" and seconds is not None:
        self.request_latency.observe(seconds * 1e6, model_name, "Predict", entrypoint)

  def record_runtime(self, model_name: str, seconds: float) -> None:
    with self._lock:
      self.runtime_latency.observe(seconds * 1e6, model_name, "Predict", "TF1")

  def record_load(self, model_path: str, status: str, seconds: float) -> None:
    with self._lock:
      self.load_attempt_count.increment(model_path, status)
      self.load_latency.observe(seconds * 1e6, model_path)

  def record_batch(self, model_name: str, size: int, padded: int, queue_seconds: float) -> None:
    with self._lock:
      self.batch_size.observe(padded, model_name)
      self.padding_size.observe(padded - size, model_name)
      self.queuing_latency.observe(queue_seconds * 1e6, model_name)

  def exposition(self) -> str:
    with self._lock:
      metrics = [self.request_count, self.request_latency, self.runtime_latency,
                 self.load_attempt_count, self.load_latency, self.batch_size, self.padding_size,
                 self.queuing_latency]
      return "\n".join(line for m in metrics for line in m.lines()) + "\n"
