"""TF Serving's `BatchingParameters` and `MonitoringConfig` messages.

The tensorflow-serving-api wheel ships the request and model-config protos
but not these two, which `--batching_parameters_file` and
`--monitoring_config_file` hold as text protos. They are declared here with
the field names and numbers of tensorflow_serving's
servables/tensorflow/session_bundle_config.proto and
config/monitoring_config.proto, so the same files parse here and in the
official server.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_Field = descriptor_pb2.FieldDescriptorProto


def _file(name: str, messages: dict[str, list[tuple]], dependencies=()) -> descriptor_pb2.FileDescriptorProto:
  proto = descriptor_pb2.FileDescriptorProto(
      name=name, package="tensorflow.serving", syntax="proto3", dependency=list(dependencies))
  for message_name, fields in messages.items():
    message = proto.message_type.add(name=message_name)
    for field_name, number, kind, type_name, repeated in fields:
      field = message.field.add(
          name=field_name, number=number, type=kind,
          label=_Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL)
      if type_name:
        field.type_name = type_name
  return proto


_INT64_VALUE = (_Field.TYPE_MESSAGE, ".google.protobuf.Int64Value", False)

_BATCHING = _file(
    "vae_tf_serving/session_bundle_config.proto",
    {"BatchingParameters": [
        ("max_batch_size", 1, *_INT64_VALUE),
        ("batch_timeout_micros", 2, *_INT64_VALUE),
        ("max_enqueued_batches", 3, *_INT64_VALUE),
        ("num_batch_threads", 4, *_INT64_VALUE),
        ("thread_pool_name", 5, _Field.TYPE_MESSAGE, ".google.protobuf.StringValue", False),
        ("allowed_batch_sizes", 6, _Field.TYPE_INT64, None, True),
        ("pad_variable_length_inputs", 7, _Field.TYPE_BOOL, None, False),
        ("enable_large_batch_splitting", 8, _Field.TYPE_MESSAGE, ".google.protobuf.BoolValue",
         False),
        ("max_execution_batch_size", 9, *_INT64_VALUE),
    ]},
    dependencies=["google/protobuf/wrappers.proto"])

_MONITORING = _file(
    "vae_tf_serving/monitoring_config.proto",
    {"PrometheusConfig": [
        ("enable", 1, _Field.TYPE_BOOL, None, False),
        ("path", 2, _Field.TYPE_STRING, None, False),
    ],
     "MonitoringConfig": [
         ("prometheus_config", 1, _Field.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig", False),
     ]})


def _message_classes():
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  for proto in (_BATCHING, _MONITORING):
    pool.Add(proto)
  get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
  return get("tensorflow.serving.BatchingParameters"), get("tensorflow.serving.MonitoringConfig")


BatchingParameters, MonitoringConfig = _message_classes()
