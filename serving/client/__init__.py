"""A client for a VAE served by TensorFlow Serving (or serving.server), over REST or gRPC.

The command line is serving/client/__main__.py (`python -m serving.client`);
base.py holds what both transports share, rest_client.py and grpc_client.py one each.

  with RestClient("localhost:8501", "vae") as client:   # or GrpcClient("localhost:8500", "vae")
    means = client.encode(x)["mean"]

Both clients speak only TF Serving's public APIs (REST: /v1/models/...;
gRPC: PredictionService and ModelService), so they work against the official
`tensorflow_model_server` too. Failures of the server, or of reaching it,
raise ServingClientError. The REST client needs only the standard library
and NumPy; the gRPC one imports TensorFlow for its tensor protos.
"""

from __future__ import annotations

from serving.client.base import (DEFAULT_ADDRESSES, DEFAULT_TIMEOUT, GRPC_PORT, REST_PORT,
                                 ModelMetadata, ServingClient, ServingClientError, Signature,
                                 TensorSpec, VersionStatus)
from serving.client.grpc_client import GrpcClient
from serving.client.rest_client import RestClient

__all__ = ["DEFAULT_ADDRESSES", "DEFAULT_TIMEOUT", "GRPC_PORT", "REST_PORT", "GrpcClient",
           "ModelMetadata", "RestClient", "ServingClient", "ServingClientError", "Signature",
           "TensorSpec", "VersionStatus", "make_client"]


def make_client(protocol: str, address: str | None, model_name: str,
                version: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> ServingClient:
  """A RestClient or GrpcClient; address defaults to localhost on the protocol's usual port."""
  clients = {"rest": RestClient, "grpc": GrpcClient}
  if protocol not in clients:
    raise ValueError(f"protocol must be rest or grpc, got {protocol!r}")
  return clients[protocol](address or DEFAULT_ADDRESSES[protocol], model_name, version, timeout)
