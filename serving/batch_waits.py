"""How long a queue's open batch waits for more requests before it starts.

TF Serving's `batch_timeout_micros` is one wait for every batch. With
`busy_batch_timeout_micros` (not TF Serving's) a queue whose recent batches
held more than one request is busy: its batch waits up to that long instead,
and starts as soon as it holds as many requests as the largest of those
batches (the company to expect: with fewer clients than the batch size, a
batch would otherwise always wait out its timeout). A busy batch that starts
with a single request makes the queue forget its history, so when the load
drops to one client, one request pays the wait. With `batch_timeout_micros`
0 a lone client is answered at once, while concurrent clients fill batches.
"""

from __future__ import annotations

import collections

from serving.batching_options import BatchingOptions

# Batches per queue key whose sizes say how busy it is, and the keys kept (one
# per servable, signature and per-row shape; a variable-length input could make
# many).
_RECENT_BATCHES = 8
_REMEMBERED_KEYS = 1024


class BatchWaits:
  """The waits of every queue, from the sizes of its recent batches; not thread-safe
  (the scheduler calls it under its lock)."""

  def __init__(self, options: BatchingOptions):
    self._timeout = options.batch_timeout_micros / 1e6
    self._busy_timeout = (None if options.busy_batch_timeout_micros is None
                          else options.busy_batch_timeout_micros / 1e6)
    # Requests in each of the recent batches, per queue key.
    self._recent: dict[object, collections.deque[int]] = {}

  def _company(self, key) -> int | None:
    """Requests a busy queue's batch waits for (None: the queue is not busy)."""
    if self._busy_timeout is None:
      return None
    recent = self._recent.get(key)
    most = max(recent) if recent else 1
    return most if most > 1 else None

  def timeout(self, key) -> float:
    """Seconds the open batch of the queue `key` may wait for more requests."""
    return self._timeout if self._company(key) is None else self._busy_timeout

  def due(self, key, opened_at: float, requests: int) -> float:
    """When the open batch of `key`, opened at `opened_at` and holding
    `requests`, should start (time.monotonic() seconds)."""
    company = self._company(key)
    if company is None:
      return opened_at + self._timeout
    return float("-inf") if requests >= company else opened_at + self._busy_timeout

  def started(self, key, requests: int) -> None:
    """Records a batch of `key` that started with `requests`."""
    recent = self._recent.get(key)
    if recent is None:
      if len(self._recent) >= _REMEMBERED_KEYS:
        self._recent.clear()  # keys are few; forgetting one only skips one wait
      recent = self._recent[key] = collections.deque(maxlen=_RECENT_BATCHES)
    elif requests == 1 and self._company(key) is not None:
      # A busy queue's batch started with one request: the load has dropped
      # to one client, who should not wait for the seven batches after this.
      # (Fewer clients than before are no such sign: under steady load
      # batches vary, and forgetting their size made smaller ones.)
      recent.clear()
    recent.append(requests)
