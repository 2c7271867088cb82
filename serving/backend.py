"""What the REST and gRPC front ends share: the models, running a checked
request on a held servable, batched or not, and accounting for it in the metrics."""

from __future__ import annotations

import asyncio
import time
from concurrent import futures

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving import batching, errors
from serving.batching import BatchScheduler
from serving.manager import ModelManager, VersionStatus
from serving.metrics import ServerMetrics
from serving.servable import Servable, Signature


class ServingBackend:
  """The served models, the batch scheduler (if batching) and the metrics, with
  the predict path both APIs run; one per server process."""

  def __init__(self, manager: ModelManager, scheduler: BatchScheduler | None,
               metrics: ServerMetrics, executor: futures.Executor):
    self.manager = manager
    self.scheduler = scheduler
    self.metrics = metrics
    self._executor = executor
    self._holding: set[asyncio.AbstractEventLoop] = set()

  def _run(self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray],
           output_names: list[str]) -> dict[str, np.ndarray]:
    started = time.monotonic()
    outputs = servable.run(signature, inputs, output_names)
    self.metrics.record_runtime(servable.name, time.monotonic() - started)
    return outputs

  async def run(self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray],
                output_filter: list[str], alone: bool = False) -> dict[str, np.ndarray]:
    """Checks and runs one predict request on a servable the caller holds.

    `alone`: no other request waits behind this one, so if the batch threads
    are idle too it runs at once in the caller's thread (still a batch, as
    the metrics count it).
    """
    output_names = servable.check_names(signature, inputs, output_filter)
    if self.scheduler is not None:
      batching.batch_size_of(inputs)  # TF Serving's batching errors come before the session's
    servable.check_tensors(signature, inputs)
    if self.scheduler is None:
      return await asyncio.get_running_loop().run_in_executor(
          self._executor, self._run, servable, signature, inputs, output_names)
    # Only requests that agree on all of this can share one model call.
    key = (servable.name, servable.version, id(servable), signature.name,
           tuple((name, inputs[name].shape[1:]) for name in sorted(inputs)), tuple(output_names))
    run = lambda merged: self._run(servable, signature, merged, output_names)
    if alone and (done := self.scheduler.run_now(key, run, inputs)) is not None:
      return done.result()
    loop = asyncio.get_running_loop()
    if loop not in self._holding:
      # The requests this loop parses before it next waits share model calls.
      self._holding.add(loop)
      self.scheduler.hold()
      loop.call_soon(self._release, loop)
    return await self.scheduler.submit(key, run, inputs, loop)

  def _release(self, loop: asyncio.AbstractEventLoop) -> None:
    self._holding.discard(loop)
    self.scheduler.release()

  def record(self, model_name: str, error: errors.ServingError | None, entrypoint: str,
             started: float) -> None:
    status = "OK" if error is None else error.code.name
    self.metrics.record_request(model_name, status, entrypoint, time.monotonic() - started)


def status_response(statuses: list[VersionStatus]) -> get_model_status_pb2.GetModelStatusResponse:
  response = get_model_status_pb2.GetModelStatusResponse()
  for status in statuses:
    entry = response.model_version_status.add(version=status.version, state=status.state.value)
    entry.status.SetInParent()  # TF Serving always sends it, OK included
    if status.error is not None:
      entry.status.error_code = status.error.code.value[0]
      entry.status.error_message = status.error.message
  return response


def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
  signatures = get_model_metadata_pb2.SignatureDefMap()
  for key, definition in servable.signature_defs.items():
    signatures.signature_def[key].CopyFrom(definition)
  return signatures
