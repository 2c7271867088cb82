"""Runs that train side by side, each in its own single-threaded process.

On 2 cores, two single-threaded runs do more examples per second in total
than one run on both cores (measured in docs/likelihood.md and
docs/reproduction.md): a minibatch of 100 is too small for TensorFlow's
intra-op threads to keep two cores busy.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Callable, Iterable, TypeVar

from vae_tf import process_lifetime

Job = TypeVar("Job")
Result = TypeVar("Result")


def _start_worker() -> None:
  """Single-threaded TensorFlow, and death with the parent: a run stopped by a
  signal must not leave its workers training on (their checkpoints are
  atomic, so a rerun resumes either way)."""
  process_lifetime.die_with_parent()
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def map_in_processes(function: Callable[[Job], Result], jobs: Iterable[Job],
                     parallel_runs: int) -> list[Result]:
  """`function` on every job, in order of `jobs`, `parallel_runs` at a time.

  Jobs start in the order given (so give the longest first); 1 runs them one
  after another in this process. `function` and the jobs must pickle.
  """
  jobs = list(jobs)
  if parallel_runs <= 1 or len(jobs) <= 1:
    return [function(job) for job in jobs]
  # Spawned, not forked: TensorFlow's thread pools do not survive a fork.
  with concurrent.futures.ProcessPoolExecutor(
      max_workers=min(parallel_runs, len(jobs)),
      mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker) as pool:
    return list(pool.map(function, jobs))
