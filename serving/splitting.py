"""TF Serving's enable_large_batch_splitting: a request bigger than the room
left in the open batch goes in pieces (batching_session.cc SplitInputTask,
InputSplitMetadata; capacity and errors from shared_batch_scheduler.h), and
its answer is the pieces' answers joined in order."""

from __future__ import annotations

import threading
from concurrent import futures

import numpy as np

from serving import errors


def piece_sizes(options, num_batches: int, open_size: int, size: int) -> list[int]:
  """Sizes of the pieces of a `size`-row task, for a queue holding `num_batches`
  batches, the last (open) one with `open_size` rows: first what fits in the open
  batch, then pieces of `options.execution_batch_size` rows."""
  limit = options.execution_batch_size
  room = limit - open_size if num_batches else 0
  capacity = (options.max_enqueued_batches - num_batches) * limit + room
  if size > capacity:
    raise errors.unavailable(
        f"The batch scheduling queue to which this task was submitted is full; task size is "
        f"{size} but scheduling capacity is only {capacity} (num_enqueued_batches="
        f"{max(num_batches, 1)}, max_enqueued_batches={options.max_enqueued_batches}, "
        f"open_batch_size={open_size}, max_execution_batch_size={limit})")
  pieces = [min(room, size)] if room > 0 else []
  left = size - sum(pieces)
  while left > 0:
    pieces.append(min(limit, left))
    left -= pieces[-1]
  return pieces


def joined(parts: list[futures.Future]) -> futures.Future:
  """One future for a split task: its pieces' outputs concatenated in order,
  or the first piece's error; cancelling it cancels the pieces not yet run."""
  joined: futures.Future = futures.Future()
  lock, left = threading.Lock(), [len(parts)]

  def piece_done(_) -> None:
    with lock:
      left[0] -= 1
      if left[0]:
        return
    if joined.done():  # cancelled by the caller
      return
    failed = [p for p in parts if p.cancelled() or p.exception() is not None]
    try:
      if failed:
        joined.set_exception(failed[0].exception() if not failed[0].cancelled()
                             else errors.unavailable("A piece of the request was cancelled"))
      else:
        results = [p.result() for p in parts]
        joined.set_result({name: np.concatenate([r[name] for r in results])
                           for name in results[0]})
    except futures.InvalidStateError:  # cancelled meanwhile
      pass

  def cancel_pieces(future: futures.Future) -> None:
    if future.cancelled():
      for part in parts:
        part.cancel()

  joined.add_done_callback(cancel_pieces)
  for part in parts:
    part.add_done_callback(piece_done)
  return joined
