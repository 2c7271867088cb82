"""A real exported model, and the real server as a subprocess on loopback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving_helpers import LATENT_DIM, MAX_BODY_BYTES, Server


@pytest.fixture(scope="session")
def mnist_test_x(shared_data_dir, tfds_data_dir) -> np.ndarray:
  """100 real MNIST test images, flat, binarized at 0.5."""
  from vae_tf.data import pipeline, sources

  images = sources.load_images("mnist", "test", tfds_data_dir, str(shared_data_dir))[:100]
  return pipeline.evaluation_array(images, "static")


@pytest.fixture(scope="session")
def trained_model(shared_data_dir, tfds_data_dir):
  """A small VAE trained for 200 steps on 2,000 real MNIST images."""
  from vae_tf import config as config_lib
  from vae_tf import learners
  from vae_tf.data import pipeline, sources

  images = sources.load_images("mnist", "train", tfds_data_dir, str(shared_data_dir))
  model_config, train_config = config_lib.preset("modern", "mnist", 2000)
  model_config = config_lib.ModelConfig(**{**model_config.to_dict(), "latent_dim": LATENT_DIM,
                                           "hidden_units": (64,),
                                           "input_shape": (28, 28)})
  model = learners.build_model(model_config, train_config)
  train_x = pipeline.evaluation_array(images[:2000], "static")
  model.fit(train_x.reshape(20, 100, -1)[np.arange(200) % 20], batch_size=50, epochs=1, verbose=0)
  return model


@pytest.fixture(scope="session")
def export_base(tmp_path_factory, trained_model) -> Path:
  """<base>/vae/1: the trained model, exported once per session."""
  from vae_tf import export

  base = tmp_path_factory.mktemp("exports")
  export.export_saved_model(trained_model, base, "vae", config_json="{}")
  return base


@pytest.fixture
def start_server(tmp_path):
  """Starts servers with the given flags; stops them after the test."""
  servers = []

  def start(*args: str, wait: bool = True) -> Server:
    server = Server(list(args), tmp_path / f"server{len(servers)}.log")
    servers.append(server)
    if wait:
      server.wait_ready()
    return server

  yield start
  for server in servers:
    server.stop()


@pytest.fixture(scope="module")
def vae_server(tmp_path_factory, export_base):
  """One server for a module's read-only tests: model `vae` from export_base."""
  server = Server(["--model_name=vae", f"--model_base_path={export_base / 'vae'}",
                   f"--rest_api_max_body_bytes={MAX_BODY_BYTES}"],
                  tmp_path_factory.mktemp("server") / "server.log")
  server.wait_ready()
  yield server
  server.stop()
