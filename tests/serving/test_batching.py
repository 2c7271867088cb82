"""The batch scheduler on its own: real batch threads, a model that records its calls."""

from __future__ import annotations

import asyncio
import contextlib
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


@contextlib.contextmanager
def running_scheduler(options: BatchingOptions, on_batch=None):
  scheduler = BatchScheduler(options, on_batch=on_batch)
  try:
    yield scheduler
  finally:
    scheduler.stop()


def test_requests_submitted_while_held_share_one_call():
  model = RecordingModel()
  with running_scheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1)) as scheduler:
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
  options = BatchingOptions(max_batch_size=8, num_batch_threads=1)
  record = lambda key, size, padded, wait: batches.append(size)  # noqa: E731
  with running_scheduler(options, record) as scheduler:
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


def test_run_now_leaves_a_request_to_wait_out_a_batch_timeout():
  model = RecordingModel()
  with running_scheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1,
                                         batch_timeout_micros=20_000)) as scheduler:
    assert scheduler.run_now("key", model, row(1)) is None
    assert model.calls == []


def test_a_busy_queue_waits_for_the_company_its_recent_batches_had():
  model = RecordingModel()
  batches = []
  with running_scheduler(
      BatchingOptions(max_batch_size=8, num_batch_threads=1, busy_batch_timeout_micros=300_000),
      on_batch=lambda key, size, padded, wait: batches.append((size, wait))) as scheduler:
    # A lone client: no wait, and it may run in the caller's thread.
    assert scheduler.submit("key", model, row(1)).result(timeout=10)["y"][0, 0] == 2
    assert scheduler.run_now("key", model, row(2)) is not None
    scheduler.hold()
    together = [scheduler.submit("key", model, row(i)) for i in range(3)]
    scheduler.release()
    for future in together:
      future.result(timeout=10)
    assert model.calls == [1, 1, 3] and max(wait for _, wait in batches) < 0.2
    # Busy now: the next batch starts once it has the 3 requests of the largest
    # recent batch, long before the busy timeout...
    assert scheduler.run_now("key", model, row(1)) is None
    started = time.monotonic()
    pending = []
    for i in range(3):
      pending.append(scheduler.submit("key", model, row(i)))
      time.sleep(0.05)
    for future in pending:
      future.result(timeout=10)
    assert model.calls[-1] == 3 and 0.1 <= batches[-1][1] < 0.25
    assert time.monotonic() - started < 0.3
    # ... and waits the busy timeout out when that company does not come.
    scheduler.submit("key", model, row(1)).result(timeout=10)
    assert model.calls[-1] == 1 and batches[-1][1] >= 0.3
    # Then it expects what came, one request: the next lone one does not wait.
    scheduler.submit("key", model, row(1)).result(timeout=10)
    assert batches[-1][1] < 0.2
    # Another queue keeps its own history: not busy.
    scheduler.submit("other", model, row(1)).result(timeout=10)
    assert batches[-1][1] < 0.2


def test_when_the_load_drops_one_request_waits_for_the_company_that_left():
  model = RecordingModel()
  with running_scheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1,
                                         busy_batch_timeout_micros=50_000)) as scheduler:
    scheduler.hold()
    pair = [scheduler.submit("key", model, row(i)) for i in range(2)]
    scheduler.release()
    for future in pair:
      future.result(timeout=10)
    waits = []
    for _ in range(5):
      started = time.monotonic()
      scheduler.submit("key", model, row(1)).result(timeout=10)
      waits.append(time.monotonic() - started)
    assert waits[0] >= 0.05 and max(waits[1:]) < 0.04, waits
    assert model.calls == [2, 1, 1, 1, 1, 1]


def test_a_batch_short_of_its_company_but_shared_keeps_the_queue_busy():
  model = RecordingModel()
  batches = []
  with running_scheduler(BatchingOptions(max_batch_size=8, num_batch_threads=1,
                                         busy_batch_timeout_micros=50_000),
                         lambda key, size, padded, wait: batches.append(wait)) as scheduler:
    scheduler.hold()
    trio = [scheduler.submit("key", model, row(i)) for i in range(3)]
    scheduler.release()
    for future in trio:
      future.result(timeout=10)
    pair = [scheduler.submit("key", model, row(i)) for i in range(2)]
    for future in pair:
      future.result(timeout=10)
    scheduler.submit("key", model, row(1)).result(timeout=10)
    # The pair waited for a third in vain, and so did the lone request after it.
    assert model.calls == [3, 2, 1] and min(batches[1:]) >= 0.05, batches


def test_a_loops_requests_are_completed_on_it_and_a_cancelled_one_leaves_its_batch():
  model = RecordingModel()

  async def requests(scheduler: BatchScheduler):
    loop = asyncio.get_running_loop()
    scheduler.hold()
    kept = scheduler.submit("key", model, row(1), loop)
    dropped = scheduler.submit("key", model, row(2), loop)
    assert isinstance(kept, asyncio.Future) and kept.get_loop() is loop
    dropped.cancel()
    scheduler.release()
    one = await asyncio.wait_for(kept, 10)
    # A request run in pieces is awaited the same way.
    rows = {"x": np.arange(20 * 3, dtype=np.float32).reshape(20, 3)}
    pieces = await asyncio.wait_for(scheduler.submit("key", model, rows, loop), 10)
    return one, pieces, rows

  with running_scheduler(BatchingOptions(max_batch_size=32, num_batch_threads=1,
                                         enable_large_batch_splitting=True,
                                         max_execution_batch_size=8)) as scheduler:
    one, pieces, rows = asyncio.run(requests(scheduler))
  assert float(one["y"][0, 0]) == 2
  np.testing.assert_array_equal(pieces["y"], rows["x"] * 2)
  assert model.calls == [1, 8, 8, 4]
