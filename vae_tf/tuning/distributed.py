"""The chief of a distributed search, which serves the oracle.

Unlike KerasTuner's own chief loop, `serve_oracle` notices workers that went
silent, sends their trials back for retry, and returns once no worker is left
instead of waiting forever.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent import futures

import grpc
import keras_tuner

from vae_tf.tuning import keras_tuner_internals

@dataclasses.dataclass
class ChiefOutcome:
  finished: bool  # every trial ended and every worker was told the search is over
  lost_workers: list[str]  # workers that went silent while running a trial


_ANSWER_GRACE_SECONDS = 5.0


def serve_oracle(tuner: keras_tuner.Tuner, worker_timeout_seconds: float,
                 poll_seconds: float = 0.5) -> ChiefOutcome:
  """Runs the chief: the tuner's oracle behind KerasTuner's gRPC service.

  Returns when the search is finished and no trial is running, or when no
  worker has been heard from for `worker_timeout_seconds` (workers report at
  every epoch end, so the timeout must exceed the longest epoch). A worker
  silent that long while running a trial is declared lost: its trial ends as
  INVALID, which KerasTuner retries on the next worker that asks (up to
  `max_retries_per_trial`). A restarted worker with the same tuner id resumes
  its trial, as in KerasTuner.
  """
  oracle = tuner.oracle
  last_heard: dict[str, float] = {}
  lock = threading.Lock()

  def heard(tuner_id: str | None) -> None:
    with lock:
      last_heard[tuner_id or ""] = time.monotonic()

  def runner_of(trial_id: str) -> str | None:
    return next((tid for tid, trial in list(oracle.ongoing_trials.items())
                 if trial.trial_id == trial_id), None)

  class Servicer(keras_tuner_internals.OracleServicer):

    def CreateTrial(self, request, context):
      heard(request.tuner_id)
      return super().CreateTrial(request, context)

    def UpdateTrial(self, request, context):
      heard(runner_of(request.trial_id))
      return super().UpdateTrial(request, context)

    def EndTrial(self, request, context):
      heard(runner_of(request.trial.trial_id))
      return super().EndTrial(request, context)

  tuner.save()
  servicer = Servicer(oracle)
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
  keras_tuner_internals.add_oracle_servicer(servicer, server)
  address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
  if not server.add_insecure_port(address):
    raise OSError(f"cannot listen on {address} for the oracle")
  server.start()
  started = time.monotonic()
  lost = []
  try:
    while True:
      time.sleep(poll_seconds)
      now = time.monotonic()
      with lock:
        silence = {tid: now - last_heard.get(tid, started) for tid in oracle.ongoing_trials}
        latest = max(last_heard.values(), default=started)
      for tuner_id, seconds in silence.items():
        if seconds > worker_timeout_seconds:
          lost.append(tuner_id)
          _give_up_on(oracle, tuner_id, f"worker {tuner_id} went silent for {seconds:.0f} s")
      if not oracle.ongoing_trials:
        # A lost worker's trial waits in the retry queue for the next worker to
        # ask, even after the others were told to stop.
        if (keras_tuner_internals.told_workers_to_stop(servicer) and not oracle.tuner_ids
            and not keras_tuner_internals.has_trials_to_retry(oracle)):
          return ChiefOutcome(True, lost)
        if now - latest > worker_timeout_seconds:
          return ChiefOutcome(False, lost)
  finally:
    # The worker told STOPPED may still be waiting for that answer: it gets it,
    # where grace=None would cancel it into an UNAVAILABLE error on the worker.
    server.stop(grace=_ANSWER_GRACE_SECONDS).wait()


@keras_tuner.synchronized
def _give_up_on(oracle, tuner_id: str, reason: str) -> None:
  trial = oracle.ongoing_trials.get(tuner_id)
  oracle.tuner_ids.discard(tuner_id)
  if trial is not None:
    trial.status = keras_tuner.engine.trial.TrialStatus.INVALID
    trial.message = reason
    oracle.end_trial(trial)
