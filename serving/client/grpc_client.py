"""TF Serving's gRPC API with the official tensorflow_serving.apis stubs
(TensorFlow for its tensor protos)."""

from __future__ import annotations

from typing import Callable

from serving.client.base import (DEFAULT_TIMEOUT, ModelMetadata, ServingClient,
                                 ServingClientError, VersionStatus, signatures_from_json,
                                 statuses_from_json)


class GrpcClient(ServingClient):
  """TF Serving's gRPC API with the official tensorflow_serving.apis stubs."""

  def __init__(self, address: str, model_name: str, version: int | None = None,
               timeout: float = DEFAULT_TIMEOUT):
    super().__init__(address, model_name, version, timeout)
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    # As TF Serving, no 4 MB cap on messages: a batch of images is bigger.
    self._channel = grpc.insecure_channel(address, options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

  def close(self) -> None:
    self._channel.close()

  def _call(self, method: Callable, request):
    import grpc

    request.model_spec.name = self.model_name
    if self.version is not None:
      request.model_spec.version.value = self.version
    try:
      return method(request, timeout=self.timeout)
    except grpc.RpcError as error:
      raise ServingClientError(error.details() or error.code().name, error.code()) from None

  def status(self) -> list[VersionStatus]:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2

    response = self._call(self._models.GetModelStatus,
                          get_model_status_pb2.GetModelStatusRequest())
    return statuses_from_json(json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))

  def _metadata(self) -> ModelMetadata:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    response = self._call(self._predictions.GetModelMetadata, request)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_def_map)
    return ModelMetadata(
        model_name=response.model_spec.name, version=response.model_spec.version.value,
        signatures=signatures_from_json(json_format.MessageToDict(
            signature_def_map, preserving_proto_field_name=True)))

  def _predict(self, signature_name, inputs, signature):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    for name, array in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    response = self._call(self._predictions.Predict, request)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
