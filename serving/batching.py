"""Server-side batching, with TF Serving's BatchingParameters semantics.

Concurrent requests for the same servable, signature, inputs and outputs are
queued together; a batch thread takes a batch when it is full, when its
oldest request has waited `batch_timeout_micros`, or at once if the timeout
is 0 and a thread is free. So under load requests pile up while the threads
are busy and the next batch is larger: throughput adapts without a fixed
wait. An event loop holds the scheduler (`hold`) while it parses the
requests that arrived together, so they start as one batch. Inputs are
concatenated along axis 0 (padded with copies of the first row up to the next
of `allowed_batch_sizes`), run once, and the outputs are split back.

With `enable_large_batch_splitting` (TF Serving's SharedBatchScheduler and
batching_session.cc SplitInputTask), `max_batch_size` bounds a request and
`max_execution_batch_size` (default: max_batch_size) a model call: a request
first tops up the open batch, the rest goes in pieces of the execution size,
and its outputs are the pieces' outputs concatenated in order.

How long a batch waits, TF Serving's timeout or our wait under load
(`busy_batch_timeout_micros`), is serving/batch_waits.py's.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from concurrent import futures
from typing import Callable

import grpc
import numpy as np

from serving import errors, splitting
from serving.batch_waits import BatchWaits
from serving.batching_options import BatchingOptions

RunFunction = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclasses.dataclass
class _Task:
  inputs: dict[str, np.ndarray]
  size: int
  # An asyncio future is completed on its loop, with the rest of its batch.
  future: futures.Future | asyncio.Future
  enqueued_at: float


@dataclasses.dataclass
class _Batch:
  key: object
  tasks: list[_Task] = dataclasses.field(default_factory=list)
  size: int = 0


class _Queue:

  def __init__(self, run: RunFunction):
    self.run = run
    self.batches: collections.deque[_Batch] = collections.deque()


def batch_size_of(inputs: dict[str, np.ndarray]) -> int:
  """The shared size of axis 0, with TF Serving's errors for inputs without one."""
  if not inputs:
    raise errors.invalid_argument("Batching session Run() must have at least one input tensor")
  sizes = set()
  for value in inputs.values():
    if value.ndim == 0:
      raise errors.invalid_argument(
          "Batching session Run() input tensors must have at least one dimension")
    sizes.add(value.shape[0])
  if len(sizes) > 1:
    raise errors.invalid_argument(
        "Batching session Run() input tensors must have equal 0th-dimension size")
  return sizes.pop()


def _complete(done: list[tuple[asyncio.Future, dict | Exception]]) -> None:
  """Completes a batch's asyncio futures, on their loop."""
  for future, result in done:
    if future.done():  # cancelled: its client went away
      continue
    if isinstance(result, Exception):
      future.set_exception(result)
    else:
      future.set_result(result)


class BatchScheduler:
  """Batches tasks per queue key and runs them on `num_batch_threads` threads.

  Observers (e.g. metrics) get `on_batch(key, size, padded_size, queue_seconds)`.
  """

  def __init__(self, options: BatchingOptions, on_batch: Callable | None = None):
    self.options = options
    self._on_batch = on_batch
    self._queues: dict[object, _Queue] = {}
    self._condition = threading.Condition()
    self._stopping = False
    self._holds = 0
    self._running = 0  # batches being run
    self._waits = BatchWaits(options)
    self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                     for i in range(options.num_batch_threads)]
    for thread in self._threads:
      thread.start()

  def submit(self, key, run: RunFunction, inputs: dict[str, np.ndarray],
             loop: asyncio.AbstractEventLoop | None = None) -> futures.Future | asyncio.Future:
    """Queues one request; its future gets that request's rows of the outputs.

    `key` must identify everything that makes two requests mergeable (the
    servable, signature, input and output names, per-row shapes); `run`
    computes outputs for merged inputs. With `loop` (the caller's running
    loop) the future is one of that loop's, and a batch completes all of its
    requests from a loop in one callback there: a batch of 64 wakes the loop
    once, not 64 times.
    """
    size = batch_size_of(inputs)
    if size > self.options.max_batch_size:
      raise errors.invalid_argument(
          f"Task size {size} is larger than maximum input batch size "
          f"{self.options.max_batch_size}")
    with self._condition:
      if self._stopping:
        raise errors.unavailable("The server is shutting down")
      queue = self._queues.get(key)
      batches = queue.batches if queue is not None else collections.deque()
      if self.options.enable_large_batch_splitting:
        pieces = splitting.piece_sizes(self.options, len(batches),
                                       batches[-1].size if batches else 0, size)
      else:
        if (not batches or batches[-1].size + size > self.options.max_batch_size) and \
            len(batches) >= self.options.max_enqueued_batches:
          raise errors.unavailable(
              "The batch scheduling queue to which this task was submitted is full")
        pieces = [size]
      if queue is None:
        queue = self._queues[key] = _Queue(run)
      now, start, tasks = time.monotonic(), 0, []
      for piece in pieces:
        future = (loop.create_future() if loop is not None and len(pieces) == 1
                  else futures.Future())
        task = _Task({name: value[start:start + piece] for name, value in inputs.items()}
                     if len(pieces) > 1 else inputs, piece, future, now)
        start += piece
        tasks.append(task)
        if not queue.batches or \
            queue.batches[-1].size + piece > self.options.execution_batch_size:
          queue.batches.append(_Batch(key))
        queue.batches[-1].tasks.append(task)
        queue.batches[-1].size += piece
      if not self._holds or self._first_is_full(queue):
        self._condition.notify()  # while held, only a full batch may start
    if len(tasks) == 1:
      return tasks[0].future
    joined = splitting.joined([t.future for t in tasks])
    return joined if loop is None else asyncio.wrap_future(joined, loop=loop)

  def run_now(self, key, run: RunFunction, inputs: dict[str, np.ndarray]) -> futures.Future | None:
    """Runs a request in the caller's thread as a batch of its own if a batch
    thread would start it at once anyway (no batch timeout, nothing queued,
    running or held) and it fits one call; else None. A request that nothing
    else waits to share a call with gains nothing from the batch thread but
    two thread hand-offs."""
    size = batch_size_of(inputs)
    with self._condition:
      if (self._waits.timeout(key) or self._queues or self._running or self._holds
          or self._stopping or size > self.options.execution_batch_size):
        return None
      self._running += 1
      self._waits.started(key, 1)
    task = _Task(inputs, size, futures.Future(), time.monotonic())
    try:
      self._process(run, _Batch(key, [task], size))
    finally:
      with self._condition:
        self._running -= 1
    return task.future

  def hold(self) -> None:
    """Keeps batches that are not full from starting until `release`.

    A caller about to submit more requests (an event loop with more of them
    ready to parse) lets them share one model call instead of trailing the
    first in calls of their own.
    """
    with self._condition:
      self._holds += 1

  def release(self) -> None:
    with self._condition:
      self._holds -= 1
      self._condition.notify()

  def _first_is_full(self, queue: _Queue) -> bool:
    """Whether the queue's first batch takes no more: it has the execution
    size, or a batch has been opened after it."""
    return len(queue.batches) > 1 or queue.batches[0].size >= self.options.execution_batch_size

  def _ready_batch(self, now: float) -> tuple[_Queue, _Batch] | float | None:
    """A batch to run now, else seconds until one times out (None: no batches)."""
    held = self._holds and not self._stopping
    wait = None
    oldest = None
    for key, queue in self._queues.items():
      if not queue.batches:
        continue
      first = queue.batches[0]
      due = self._waits.due(key, first.tasks[0].enqueued_at, len(first.tasks))
      if self._first_is_full(queue) or (due <= now and not held):
        if oldest is None or first.tasks[0].enqueued_at < oldest[1].tasks[0].enqueued_at:
          oldest = (key, first)
      elif not held:  # a release notifies
        wait = due - now if wait is None else min(wait, due - now)
    if oldest is not None:
      key, batch = oldest
      queue = self._queues[key]
      queue.batches.popleft()
      if not queue.batches:
        del self._queues[key]
      self._waits.started(key, len(batch.tasks))
      return queue, batch
    return wait

  def _work(self) -> None:
    while True:
      with self._condition:
        while True:
          if self._stopping and not self._queues:
            return
          ready = self._ready_batch(time.monotonic())
          if isinstance(ready, tuple):
            break
          self._condition.wait(ready)
        self._running += 1
      queue, batch = ready
      try:
        self._process(queue.run, batch)
      finally:
        with self._condition:
          self._running -= 1

  def _process(self, run: RunFunction, batch: _Batch) -> None:
    started = time.monotonic()
    # A request whose client went away (its future cancelled) leaves the batch.
    tasks = [t for t in batch.tasks if (not t.future.done() if isinstance(t.future, asyncio.Future)
                                        else t.future.set_running_or_notify_cancel())]
    if not tasks:
      return
    padded = self.options.padded_size(sum(t.size for t in tasks))
    if self._on_batch is not None:
      self._on_batch(batch.key, sum(t.size for t in tasks), padded,
                     started - min(t.enqueued_at for t in tasks))
    try:
      outputs = run(self._merge(tasks, padded))
      results = self._split(outputs, tasks, padded)
    except errors.ServingError as error:
      results = [error] * len(tasks)
    except Exception as error:  # a failed batch must never strand its callers
      results = [errors.ServingError(grpc.StatusCode.INTERNAL,
                                     f"{type(error).__name__}: {error}")] * len(tasks)
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for task, result in zip(tasks, results):
      if isinstance(task.future, asyncio.Future):
        by_loop.setdefault(task.future.get_loop(), []).append((task.future, result))
      elif isinstance(result, Exception):
        task.future.set_exception(result)
      else:
        task.future.set_result(result)
    for loop, done in by_loop.items():
      try:
        loop.call_soon_threadsafe(_complete, done)
      except RuntimeError:  # the loop has closed: nobody waits
        pass

  @staticmethod
  def _merge(tasks: list[_Task], padded: int) -> dict[str, np.ndarray]:
    if len(tasks) == 1 and padded == tasks[0].size:
      return tasks[0].inputs
    padding = padded - sum(t.size for t in tasks)
    merged = {}
    for name, first in tasks[0].inputs.items():
      parts = [t.inputs[name] for t in tasks]
      if padding:
        parts.append(np.repeat(first[:1], padding, axis=0))
      merged[name] = np.concatenate(parts)
    return merged

  @staticmethod
  def _split(outputs: dict[str, np.ndarray], tasks: list[_Task],
             padded: int) -> list[dict[str, np.ndarray]]:
    if len(tasks) == 1 and padded == tasks[0].size:
      return [outputs]
    total = sum(t.size for t in tasks)
    bounds = np.cumsum([t.size for t in tasks])[:-1]
    pieces = [{} for _ in tasks]
    for name, value in outputs.items():
      if value.ndim == 0:
        raise errors.failed_precondition("Batched output tensor has 0 dimensions")
      if value.shape[0] != padded:
        raise errors.failed_precondition(
            "Batched output tensor's 0th dimension does not equal the sum of the 0th "
            "dimension sizes of the input tensors")
      for piece, part in zip(pieces, np.split(value[:total], bounds)):
        piece[name] = part
    return pieces

  def stop(self) -> None:
    """Finishes queued batches, then ends the threads."""
    with self._condition:
      self._stopping = True
      self._condition.notify_all()
    for thread in self._threads:
      thread.join()

