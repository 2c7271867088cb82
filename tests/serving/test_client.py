"""serving.client against the real server subprocess: the library over REST
and gRPC, checked against the in-process model, and the CLI end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
from PIL import Image

from serving.client import GrpcClient, RestClient, ServingClientError, VersionStatus
from serving_helpers import LATENT_DIM, REPO, free_port

EVENT_SIZE = 784


@pytest.fixture(scope="module")
def rest(vae_server):
  with RestClient(vae_server.rest, "vae") as client:
    yield client


@pytest.fixture(scope="module")
def grpc_client(vae_server):
  with GrpcClient(vae_server.grpc_target, "vae") as client:
    yield client


def both(rest, grpc_client, call):
  """call(client) over REST and over gRPC; the two answers must be identical."""
  over_rest, over_grpc = call(rest), call(grpc_client)
  assert over_rest.keys() == over_grpc.keys()
  for name in over_rest:
    assert over_rest[name].dtype == over_grpc[name].dtype, name
    np.testing.assert_array_equal(over_rest[name], over_grpc[name], err_msg=name)
  return over_rest


def run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "serving.client", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def last_line(text: str) -> str:
  return text.strip().splitlines()[-1] if text.strip() else ""


# --- library -----------------------------------------------------------------


def test_status_and_metadata_agree_over_both_transports(rest, grpc_client):
  assert rest.status() == grpc_client.status() == [VersionStatus(1, "AVAILABLE", "OK", "")]
  metadata = rest.metadata()
  assert metadata == grpc_client.metadata()
  assert (metadata.model_name, metadata.version) == ("vae", 1)
  signatures = metadata.signatures
  assert {"encode", "decode", "sample", "reconstruct", "score",
          "serving_default"} <= set(signatures)
  assert signatures["encode"].inputs["x"].shape == (-1, EVENT_SIZE)
  assert signatures["encode"].inputs["x"].dtype == "DT_FLOAT"
  assert signatures["decode"].inputs["z"].shape == (-1, LATENT_DIM)
  assert signatures["sample"].inputs["seed"].dtype == "DT_INT64"
  assert set(signatures["score"].outputs) == {"elbo", "log_likelihood"}


def test_encode_decode_reconstruct_match_the_model(rest, grpc_client, trained_model, mnist_test_x):
  x = mnist_test_x[:20]
  posterior = both(rest, grpc_client, lambda client: client.encode(x))
  assert {name: value.shape for name, value in posterior.items()} == {
      name: (20, LATENT_DIM) for name in ("mean", "stddev", "z")}
  assert posterior["mean"].dtype == np.float32
  expected = trained_model.encode(x)
  np.testing.assert_allclose(posterior["mean"], expected.mean(), atol=1e-5)
  np.testing.assert_allclose(posterior["stddev"], expected.stddev(), atol=1e-5)
  # z is a draw seeded by the image, so it is repeatable.
  np.testing.assert_array_equal(rest.encode(x)["z"], posterior["z"])

  decoded = both(rest, grpc_client, lambda client: client.decode(posterior["mean"]))
  assert list(decoded) == ["mean"]  # Bernoulli decoder: no stddev
  np.testing.assert_allclose(decoded["mean"], trained_model.decode(posterior["mean"]).mean(),
                             atol=1e-5)
  # [N, 28, 28] images are flattened; reconstruct is decode at the posterior mean.
  reconstructed = both(rest, grpc_client,
                       lambda client: client.reconstruct(x.reshape(20, 28, 28)))
  np.testing.assert_allclose(reconstructed["x_mean"], decoded["mean"], atol=1e-5)


def test_sample_is_a_function_of_each_rows_seed(rest, grpc_client, trained_model):
  drawn = both(rest, grpc_client, lambda client: client.sample(5, seed=3))
  assert drawn["x"].shape == (5, EVENT_SIZE) and drawn["z"].shape == (5, LATENT_DIM)
  assert 0 <= drawn["x"].min() and drawn["x"].max() <= 1
  again = rest.sample(5, seed=3)
  np.testing.assert_array_equal(again["z"], drawn["z"])
  shifted = grpc_client.sample(3, seed=5)  # seeds 5, 6, 7: the last three rows above
  np.testing.assert_array_equal(shifted["z"], drawn["z"][2:])
  np.testing.assert_allclose(shifted["x"], drawn["x"][2:], atol=1e-6)
  assert not np.allclose(rest.sample(1, seed=4)["z"], drawn["z"][0])
  np.testing.assert_allclose(drawn["x"], trained_model.decode(drawn["z"]).mean(), atol=1e-5)


def test_score_bounds_log_likelihood_by_elbo(rest, grpc_client, mnist_test_x):
  x = mnist_test_x[:10]
  scores = both(rest, grpc_client, lambda client: client.score(x, 50))
  assert scores["elbo"].shape == scores["log_likelihood"].shape == (10,)
  assert np.all(np.isfinite(scores["elbo"])) and np.all(scores["elbo"] < 0)
  assert np.all(scores["log_likelihood"] >= scores["elbo"])
  # One count per row; with a single draw both estimates are log w of that draw.
  counts = np.array([1] * 5 + [50] * 5)
  mixed = both(rest, grpc_client, lambda client: client.score(x, counts))
  np.testing.assert_allclose(mixed["log_likelihood"][:5], mixed["elbo"][:5], atol=1e-3)
  np.testing.assert_allclose(mixed["log_likelihood"][5:], scores["log_likelihood"][5:], atol=1e-3)


def test_predict_casts_inputs_to_the_signatures_dtypes(rest, grpc_client, mnist_test_x):
  x = mnist_test_x[:3].astype(np.float64)
  outputs = both(rest, grpc_client, lambda client: client.predict("", {"x": x}))  # serving_default
  np.testing.assert_array_equal(outputs["mean"], rest.encode(x)["mean"])
  seeds = both(rest, grpc_client, lambda client: client.predict("sample", {"seed": [7, 8]}))
  np.testing.assert_array_equal(seeds["z"], rest.sample(2, seed=7)["z"])


def test_version_pinning(vae_server, mnist_test_x):
  with RestClient(vae_server.rest, "vae", version=1) as client:
    assert [status.version for status in client.status()] == [1]
    assert client.encode(mnist_test_x[:1])["mean"].shape == (1, LATENT_DIM)
  with RestClient(vae_server.rest, "vae", version=7) as client, \
      pytest.raises(ServingClientError) as error:
    client.sample(1)
  assert (error.value.code, error.value.message) == (
      404, "Servable not found for request: Specific(vae, 7)")
  with GrpcClient(vae_server.grpc_target, "vae", version=7) as client, \
      pytest.raises(ServingClientError) as error:
    client.metadata()
  assert error.value.code == grpc.StatusCode.NOT_FOUND
  assert error.value.message == "Servable not found for request: Specific(vae, 7)"


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_server_errors_carry_the_servers_message_and_code(vae_server, rest, grpc_client,
                                                          protocol):
  client = rest if protocol == "rest" else grpc_client
  invalid = 400 if protocol == "rest" else grpc.StatusCode.INVALID_ARGUMENT
  with pytest.raises(ServingClientError) as error:
    client.encode(np.full((2, EVENT_SIZE), 2.0))
  assert error.value.code == invalid
  assert "x must lie in [0, 1]" in error.value.message
  with pytest.raises(ServingClientError) as error:
    client.score(np.zeros((2, EVENT_SIZE)), 0)
  assert "num_samples must be >= 1" in error.value.message
  with pytest.raises(ServingClientError) as error:
    client.decode(np.zeros((1, LATENT_DIM + 1)))
  assert error.value.code == invalid
  assert f"expects shape [-1,{LATENT_DIM}]" in error.value.message
  with pytest.raises(ServingClientError, match='"nope" not found'):
    client.predict("nope", {"x": np.zeros((1, EVENT_SIZE))})

  address = vae_server.rest if protocol == "rest" else vae_server.grpc_target
  other = (RestClient if protocol == "rest" else GrpcClient)(address, "unknown_model")
  with other, pytest.raises(ServingClientError) as error:
    other.sample(1)
  assert error.value.code == (404 if protocol == "rest" else grpc.StatusCode.NOT_FOUND)
  assert "unknown_model" in error.value.message


def test_unreachable_server():
  port = free_port()  # nothing listens on it
  with RestClient(f"127.0.0.1:{port}", "vae", timeout=5) as client, \
      pytest.raises(ServingClientError, match="cannot reach the REST server") as error:
    client.status()
  assert error.value.code is None
  with GrpcClient(f"127.0.0.1:{port}", "vae", timeout=5) as client, \
      pytest.raises(ServingClientError) as error:
    client.status()
  assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_rest_client_keeps_its_connection_alive_and_renews_it(rest):
  rest.status()
  connection = rest._connection
  rest.sample(2)
  rest.metadata()
  assert rest._connection is connection
  # As when the server drops an idle kept-alive connection.
  connection.sock.shutdown(socket.SHUT_RDWR)
  assert rest.sample(1)["x"].shape == (1, EVENT_SIZE)
  assert rest._connection is not connection


# --- command line ------------------------------------------------------------


def test_cli_sample_writes_a_png_grid(vae_server, rest, tmp_path):
  output = tmp_path / "samples.png"
  result = run_cli("sample", f"--server={vae_server.rest}", "--num_samples=12", "--seed=3",
                   "--ncols=4", "--scale=2", f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert last_line(result.stdout) == (f"wrote {output}: 12 images of 28x28, 4 per row, "
                                      "seeds 3..14")
  with Image.open(output) as image:
    assert image.size == (2 * (4 * 29 + 1), 2 * (3 * 29 + 1))
    pixels = np.asarray(image)
  # Tile 5 (row 1, column 1) is the sample of seed 3 + 5, upscaled 2x.
  tile = pixels[2 * 30:2 * 30 + 56:2, 2 * 30:2 * 30 + 56:2]
  expected = rest.sample(1, seed=8)["x"].reshape(28, 28)
  np.testing.assert_array_equal(tile, np.round(expected * 255).astype(np.uint8))


def test_cli_encode_prints_or_saves_posterior_means(vae_server, rest, mnist_test_x, tmp_path):
  images = tmp_path / "images.npy"
  np.save(images, mnist_test_x[:5].reshape(5, 28, 28))
  result = run_cli("encode", str(images), f"--server={vae_server.rest}")
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  assert [(line["file"], line["index"]) for line in lines] == [(str(images), i) for i in range(5)]
  expected = rest.encode(mnist_test_x[:5])
  for name in ("mean", "stddev", "z"):
    np.testing.assert_array_equal(np.array([line[name] for line in lines], np.float32),
                                  expected[name])

  latents = tmp_path / "latents.npy"
  result = run_cli("encode", str(images), f"--server={vae_server.rest}", f"--output={latents}",
                   "--batch_size=2")
  assert result.returncode == 0, result.stderr
  assert last_line(result.stdout) == f"wrote {latents}: posterior means [5, {LATENT_DIM}]"
  # Other batch sizes may round differently in the last bits.
  np.testing.assert_allclose(np.load(latents), expected["mean"], atol=1e-6)


def test_cli_encode_reads_png_over_grpc(vae_server, rest, mnist_test_x, tmp_path):
  digit = tmp_path / "digit.png"
  gray = np.round(mnist_test_x[0].reshape(28, 28) * 255).astype(np.uint8)
  Image.fromarray(gray).convert("RGB").save(digit)
  result = run_cli("encode", str(digit), "--protocol=grpc", f"--server={vae_server.grpc_target}")
  assert result.returncode == 0, result.stderr
  (line,) = [json.loads(line) for line in result.stdout.splitlines()]
  np.testing.assert_array_equal(np.float32(line["mean"]), rest.encode(mnist_test_x[:1])["mean"][0])


def test_cli_score_prints_rows_and_means(vae_server, mnist_test_x, tmp_path):
  images = tmp_path / "images.npy"
  np.save(images, mnist_test_x[:4])
  result = run_cli("score", str(images), f"--server={vae_server.rest}", "--num_samples=20")
  assert result.returncode == 0, result.stderr
  *rows, summary = [json.loads(line) for line in result.stdout.splitlines()]
  assert len(rows) == 4 and all(row["log_likelihood"] >= row["elbo"] for row in rows)
  assert summary["examples"] == 4 and summary["num_samples"] == 20
  assert summary["mean_elbo"] == pytest.approx(np.mean([row["elbo"] for row in rows]))
  assert summary["mean_log_likelihood"] == pytest.approx(
      np.mean([row["log_likelihood"] for row in rows]))


def test_cli_decode_and_status(vae_server, tmp_path):
  output = tmp_path / "decoded.png"
  result = run_cli("decode", "--z=0.5,-1,0,2", f"--server={vae_server.rest}",
                   f"--output={output}")
  assert result.returncode == 0, result.stderr
  with Image.open(output) as image:
    assert image.size == (30, 30)
  result = run_cli("status", f"--server={vae_server.rest}")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout) == [
      {"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]


def test_cli_errors_are_one_line(vae_server, mnist_test_x, tmp_path):
  wrong_size = tmp_path / "wrong_size.png"
  Image.fromarray(np.zeros((32, 32), np.uint8)).save(wrong_size)
  out_of_range = tmp_path / "out_of_range.npy"
  np.save(out_of_range, mnist_test_x[:2] * 255)
  server = f"--server={vae_server.rest}"
  cases = {
      (str(tmp_path / "missing.png"), server): f"error: no such file: {tmp_path}/missing.png",
      (str(wrong_size), server): (f"error: {wrong_size}: image is 32x32 (HxW), the model takes "
                                  "28x28"),
      (str(out_of_range), server): f"error: {out_of_range}: values must lie in [0, 1]",
      (str(out_of_range), server, "--model_name=nope"): (
          "error: Servable not found for request: Latest(nope) (HTTP 404)"),
      (str(out_of_range), f"--server=127.0.0.1:{free_port()}"): "error: cannot reach the REST",
  }
  for args, message in cases.items():
    result = run_cli("encode", *args)
    assert result.returncode != 0, args
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message), (args, result.stderr)
  result = run_cli("shrink")
  assert result.returncode != 0 and result.stderr.startswith("error: unknown command 'shrink'")
  result = run_cli("sample", "--image_shape=28")
  assert result.returncode != 0 and "--image_shape must be two positive integers" in result.stderr
