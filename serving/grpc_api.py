"""TF Serving's gRPC API with the official tensorflow_serving.apis protos:
PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus."""

from __future__ import annotations

import time

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving import errors, tensor_protos
from serving import backend as backend_lib
from serving.backend import ServingBackend

async def _abort(context: grpc.aio.ServicerContext, error: errors.ServingError):
  await context.abort(error.code, errors.bounded(error.message))


def _spec_of(request) -> tuple[str, int | None, str | None]:
  if not request.HasField("model_spec"):
    raise errors.invalid_argument("Missing ModelSpec")
  spec = request.model_spec
  if not spec.name:
    raise errors.invalid_argument("ModelSpec has no name specified.")
  choice = spec.WhichOneof("version_choice")
  if choice == "version":
    return spec.name, spec.version.value, None
  if choice == "version_label":
    return spec.name, None, spec.version_label
  return spec.name, None, None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, backend: ServingBackend):
    self.backend = backend

  async def Predict(self, request: predict_pb2.PredictRequest, context):
    started = time.monotonic()
    name = request.model_spec.name
    try:
      name, version, label = _spec_of(request)
      with self.backend.manager.servable(name, version, label) as servable:
        signature = servable.signature(request.model_spec.signature_name)
        inputs = {}
        for alias, proto in request.inputs.items():
          try:
            inputs[alias] = tensor_protos.to_array(proto)
          except (TypeError, ValueError):
            raise errors.invalid_argument(f"tensor parsing error: {alias}") from None
        outputs = await self.backend.run(servable, signature, inputs,
                                         list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for alias, value in outputs.items():
          response.outputs[alias].CopyFrom(tensor_protos.to_proto(value))
    except errors.ServingError as error:
      self.backend.record(name, error, "GRPC", started)
      await _abort(context, error)
    self.backend.record(name, None, "GRPC", started)
    return response

  async def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                             context):
    try:
      name, version, label = _spec_of(request)
      if not request.metadata_field:
        raise errors.invalid_argument(
            "GetModelMetadataRequest must specify at least one metadata_field")
      for field in request.metadata_field:
        if field != "signature_def":
          # TF Serving's own text, with its unformatted "%s".
          raise errors.invalid_argument(f"Metadata field %s is not supported{field}")
      with self.backend.manager.servable(name, version, label) as servable:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(backend_lib.signature_def_map(servable))
    except errors.ServingError as error:
      await _abort(context, error)
    return response

  async def Classify(self, request, context):
    await _abort(context, errors.method_not_supported("classify"))

  async def Regress(self, request, context):
    await _abort(context, errors.method_not_supported("regress"))


class ModelStatusService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, backend: ServingBackend):
    self.backend = backend

  async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
    try:
      name, version, label = _spec_of(request)
      response = backend_lib.status_response(self.backend.manager.statuses(name, version, label))
    except errors.ServingError as error:
      await _abort(context, error)
    return response


def add_services(server: grpc.aio.Server, backend: ServingBackend) -> None:
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(backend), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusService(backend), server)
