"""The batch scheduler on its own: real batch threads, a model that records its calls."""

from __future__ import annotations

import threading
import time

import numpy as np

from serving.batching import BatchScheduler
from serving.batching_options import BatchingOptions


class RecordingModel:
  """Doubles its input and records the batch size of every call."""

  def __init__(self):
    self.calls: list[int] = []
    self._lock = threading.Lock()

  def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with self._lock:
      self.calls.append(len(inputs["x"]))
    return {"y": inputs["x"] * 2}


def row(value: float) -> dict[str, np.ndarray]:
  return {"x": np.full((1, 3), value, np.float32)}


def test_requests_submitted_while_held_share_one_call():
  model = RecordingModel()
  scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1))
  try:
    scheduler.hold()
    pending = [scheduler.submit("key", model, row(i)) for i in range(5)]
    time.sleep(0.1)  # a free batch thread with a zero timeout would have started
    assert model.calls == []
    scheduler.release()
    results = [future.result(timeout=10) for future in pending]
    assert model.calls == [5]
    assert [float(result["y"][0, 0]) for result in results] == [0, 2, 4, 6, 8]
    # Unheld, a lone request runs at once.
    assert float(scheduler.submit("key", model, row(7)).result(timeout=10)["y"][0, 0]) == 14
    assert model.calls == [5, 1]
  finally:
    scheduler.stop()


def test_a_full_batch_runs_while_held_and_stop_finishes_held_ones():
  model = RecordingModel()
  scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, num_batch_threads=1))
  scheduler.hold()
  full = [scheduler.submit("key", model, row(i)) for i in range(4)]
  assert [float(f.result(timeout=10)["y"][0, 0]) for f in full] == [0, 2, 4, 6]
  partial = scheduler.submit("key", model, row(9))
  scheduler.stop()  # never released: stopping still runs what is queued
  assert float(partial.result(timeout=0)["y"][0, 0]) == 18
  assert model.calls == [4, 1]


def test_run_now_runs_a_lone_request_in_the_callers_thread_only_when_idle():
  threads = []

  def model(inputs):
    threads.append(threading.current_thread())
    return {"y": inputs["x"] * 2}

  batches = []
  scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1),
                             on_batch=lambda key, size, padded, wait: batches.append(size))
  try:
    done = scheduler.run_now("key", model, row(3))
    assert float(done.result(timeout=0)["y"][0, 0]) == 6
    assert threads == [threading.current_thread()] and batches == [1]  # still a batch
    assert scheduler.run_now("key", model, {"x": np.zeros((9, 3), np.float32)}) is None
    scheduler.hold()
    assert scheduler.run_now("key", model, row(1)) is None
    queued = scheduler.submit("key", model, row(1))
    scheduler.release()
    queued.result(timeout=10)
    assert threads[-1] is not threading.current_thread()
  finally:
    scheduler.stop()


def test_run_now_leaves_a_request_to_wait_out_a_batch_timeout():
  model = RecordingModel()
  scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1,
                                             batch_timeout_micros=20_000))
  try:
    assert scheduler.run_now("key", model, row(1)) is None
    assert model.calls == []
  finally:
    scheduler.stop()
