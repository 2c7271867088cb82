"""The client's command line.

  python -m serving.client sample --num_samples=64 --seed=0 --output=samples.png
  python -m serving.client encode digit.png batch.npy [--output=latents.npy]
  python -m serving.client decode --z=0.5,-1,0,2 --output=decoded.png
  python -m serving.client score batch.npy --num_samples=1000
  python -m serving.client status|metadata [--protocol=grpc --server=host:8500]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from absl import app, flags

from serving.client import ServingClient, ServingClientError, images, make_client

FLAGS = flags.FLAGS

COMMANDS = ("encode", "decode", "sample", "score", "status", "metadata")

flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "API to use.")
flags.DEFINE_string("server", None, "host:port of the model server (default localhost:8501 for "
                    "REST, localhost:8500 for gRPC); REST also takes http(s)://host:port.")
flags.DEFINE_string("model_name", "vae", "Name of the served model.")
flags.DEFINE_integer("version", None, "Model version (default: the newest the server has).",
                     lower_bound=0)
flags.DEFINE_float("timeout", 60, "Seconds to wait for each request.")
flags.DEFINE_integer("batch_size", 100, "Examples per request.", lower_bound=1)
flags.DEFINE_string("output", None, "encode: .npy file for the posterior means (default: print "
                    "JSON lines); decode, sample: the PNG grid (default decoded.png, samples.png).")
flags.DEFINE_string("latents", None, "decode: .npy file of latent vectors [N, Nz].")
flags.DEFINE_list("z", None, "decode: one latent vector, comma-separated.")
flags.DEFINE_integer("num_samples", None, "sample: images to draw (default 64); score: "
                     "importance samples per example (default 1000).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "sample: seed of the first image; image i has seed + i.",
                     lower_bound=-2**63, upper_bound=2**63 - 1)
flags.DEFINE_list("image_shape", None, "H,W of the images (default: the most nearly square "
                  "H,W with H >= W of the model's input size D, 784 -> 28,28 for MNIST and "
                  "560 -> 28,20 for Frey Face).")
flags.DEFINE_integer("ncols", None, "Images per row of a PNG grid (default: a square grid).",
                     lower_bound=1)
flags.DEFINE_integer("scale", 1, "Pixels per image pixel in a PNG grid.", lower_bound=1)

flags.register_validator("timeout", lambda value: value > 0, "--timeout must be positive")
flags.register_validator(
    "image_shape",
    lambda value: value is None or (len(value) == 2 and all(s.isdigit() and int(s) > 0
                                                            for s in value)),
    "--image_shape must be two positive integers H,W")


def _is_number_list(values: list[str] | None) -> bool:
  if values is None:
    return True
  try:
    return len(values) > 0 and all(math.isfinite(float(value)) for value in values)
  except ValueError:
    return False


flags.register_validator("z", _is_number_list, "--z must be comma-separated finite numbers")
flags.mark_flags_as_mutual_exclusive(["latents", "z"])


# --- command line --------------------------------------------------------------


def _model_sizes(client: ServingClient) -> tuple[int, int]:
  """(D, Nz) from the encode and decode signatures' inputs."""
  signatures = client.metadata().signatures
  try:
    return signatures["encode"].inputs["x"].shape[-1], signatures["decode"].inputs["z"].shape[-1]
  except (KeyError, TypeError, IndexError):
    raise ValueError(f"model {client.model_name} has no VAE signatures encode(x) and "
                     "decode(z)") from None


def _image_shape(event_size: int) -> tuple[int, int]:
  """(H, W) from --image_shape, else from the model's input size D."""
  if FLAGS.image_shape:
    height, width = map(int, FLAGS.image_shape)
    if height * width != event_size:
      raise ValueError(f"--image_shape={height},{width} has {height * width} pixels, the model "
                       f"takes {event_size}")
    return height, width
  return images.likely_image_shape(event_size)


def _read_examples(path: str, event_size: int) -> np.ndarray:
  """[N, D] float32 in [0, 1] from a .npy array or a greyscale (or colour) image."""
  if not Path(path).is_file():
    raise ValueError(f"no such file: {path}")
  if path.endswith(".npy"):
    try:
      array = np.load(path, allow_pickle=False)
    except ValueError as error:
      raise ValueError(f"{path}: not a numeric .npy array ({error})") from None
    if array.dtype.kind not in "fiub" or array.ndim not in (1, 2, 3):
      raise ValueError(f"{path}: expected numbers [N, D] or [N, H, W], got {array.dtype} "
                       f"{list(array.shape)}")
    examples = array.reshape(1 if array.ndim == 1 else len(array), -1).astype(np.float32)
    if examples.shape[1] != event_size:
      raise ValueError(f"{path}: examples have {examples.shape[1]} values, the model takes "
                       f"{event_size}")
    if not np.all((examples >= 0) & (examples <= 1)):
      raise ValueError(f"{path}: values must lie in [0, 1]")
    return examples
  pixels = images.read_greyscale(path)
  expected = _image_shape(event_size)
  if pixels.shape != expected:
    raise ValueError(f"{path}: image is {pixels.shape[0]}x{pixels.shape[1]} (HxW), the model "
                     f"takes {expected[0]}x{expected[1]}")
  return pixels.reshape(1, -1)


def _read_all(paths: list[str], event_size: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
  """All examples [N, D], and each one's (file, row in file)."""
  arrays = [_read_examples(path, event_size) for path in paths]
  sources = [(path, row) for path, array in zip(paths, arrays) for row in range(len(array))]
  return np.concatenate(arrays), sources


def _in_batches(function: Callable[[np.ndarray], dict], x: np.ndarray) -> dict[str, np.ndarray]:
  parts = [function(x[start:start + FLAGS.batch_size])
           for start in range(0, len(x), FLAGS.batch_size)]
  return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _floats(values) -> list[float] | float:
  """float32 values for JSON, written with the fewest digits that read back exactly."""
  values = np.asarray(values, dtype=np.float32)
  if values.ndim == 0:
    return float(str(values))
  return [float(str(value)) for value in values]


def _save_grid(flat_images: np.ndarray, event_size: int, path: str) -> str:
  shape = _image_shape(event_size)
  ncols = FLAGS.ncols or math.ceil(math.sqrt(len(flat_images)))
  images.save_grid(flat_images.reshape(len(flat_images), *shape), path, ncols=ncols,
                   scale=FLAGS.scale)
  return f"{len(flat_images)} images of {shape[0]}x{shape[1]}, {ncols} per row"


def _encode(client: ServingClient, paths: list[str]) -> None:
  event_size, latent_dim = _model_sizes(client)
  x, sources = _read_all(paths, event_size)
  posterior = _in_batches(client.encode, x)
  if FLAGS.output:
    np.save(FLAGS.output, posterior["mean"])
    print(f"wrote {FLAGS.output}: posterior means [{len(x)}, {latent_dim}]")
    return
  for (path, row), mean, stddev, z in zip(sources, posterior["mean"], posterior["stddev"],
                                          posterior["z"]):
    print(json.dumps({"file": path, "index": row, "mean": _floats(mean),
                      "stddev": _floats(stddev), "z": _floats(z)}))


def _decode(client: ServingClient, paths: list[str]) -> None:
  event_size, latent_dim = _model_sizes(client)
  if FLAGS.latents:
    if not Path(FLAGS.latents).is_file():
      raise ValueError(f"no such file: {FLAGS.latents}")
    try:
      z = np.load(FLAGS.latents, allow_pickle=False)
    except ValueError as error:
      raise ValueError(f"{FLAGS.latents}: not a numeric .npy array ({error})") from None
  else:
    z = np.array([float(value) for value in FLAGS.z])
  z = np.atleast_2d(z)
  if z.ndim != 2 or z.shape[1] != latent_dim or z.dtype.kind not in "fiu":
    raise ValueError(f"latents must be numbers [N, {latent_dim}], got {z.dtype} {list(z.shape)}")
  means = _in_batches(client.decode, z.astype(np.float32))["mean"]
  output = FLAGS.output or "decoded.png"
  print(f"wrote {output}: {_save_grid(means, event_size, output)}")


def _sample(client: ServingClient, paths: list[str]) -> None:
  num_samples = FLAGS.num_samples or 64
  if FLAGS.seed + num_samples - 1 >= 2**63:
    raise ValueError("--seed + --num_samples - 1 must fit in an int64")
  parts = [client.sample(min(FLAGS.batch_size, num_samples - start), seed=FLAGS.seed + start)
           for start in range(0, num_samples, FLAGS.batch_size)]
  drawn = np.concatenate([part["x"] for part in parts])
  output = FLAGS.output or "samples.png"
  summary = _save_grid(drawn, drawn.shape[1], output)
  print(f"wrote {output}: {summary}, seeds {FLAGS.seed}..{FLAGS.seed + num_samples - 1}")


def _score(client: ServingClient, paths: list[str]) -> None:
  event_size, _ = _model_sizes(client)
  x, sources = _read_all(paths, event_size)
  num_samples = FLAGS.num_samples or 1000
  scores = _in_batches(lambda batch: client.score(batch, num_samples), x)
  for (path, row), elbo, log_likelihood in zip(sources, scores["elbo"],
                                               scores["log_likelihood"]):
    print(json.dumps({"file": path, "index": row, "elbo": _floats(elbo),
                      "log_likelihood": _floats(log_likelihood)}))
  print(json.dumps({"examples": len(x), "num_samples": num_samples,
                    "mean_elbo": float(np.mean(scores["elbo"], dtype=np.float64)),
                    "mean_log_likelihood": float(np.mean(scores["log_likelihood"],
                                                         dtype=np.float64))}))


def _status(client: ServingClient, paths: list[str]) -> None:
  print(json.dumps([dataclasses.asdict(status) for status in client.status()], indent=2))


def _metadata(client: ServingClient, paths: list[str]) -> None:
  print(json.dumps(dataclasses.asdict(client.metadata()), indent=2))


def _check_arguments(command: str, paths: list[str]) -> None:
  """Raises ValueError for arguments and flags the command does not take."""
  if command in ("encode", "score"):
    if not paths:
      raise ValueError(f"{command} needs at least one FILE (.png image or .npy array)")
  elif paths:
    raise ValueError(f"{command} takes no FILE arguments, got: {' '.join(paths)}")
  if command == "decode" and not (FLAGS.latents or FLAGS.z):
    raise ValueError("decode needs --latents=FILE.npy or --z=z1,z2,...")
  if command != "decode" and (FLAGS.latents or FLAGS.z):
    raise ValueError("--latents and --z are for decode only")
  if command == "encode" and FLAGS.output and not FLAGS.output.endswith(".npy"):
    raise ValueError("encode --output must name a .npy file")
  if command in ("score", "status", "metadata") and FLAGS.output:
    raise ValueError(f"{command} prints its results: --output is not used")
  if command not in ("sample", "score") and FLAGS.num_samples:
    raise ValueError("--num_samples is for sample and score only")


def main(argv):
  # TensorFlow (imported for gRPC's tensor protos) would bury a one-line error in start-up chatter.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = f"unknown command {argv[1]!r}" if len(argv) >= 2 else "no command"
    sys.exit(f"error: {given}; expected one of: {', '.join(COMMANDS)}")
  command, paths = argv[1], argv[2:]
  run = {"encode": _encode, "decode": _decode, "sample": _sample, "score": _score,
         "status": _status, "metadata": _metadata}[command]
  try:
    _check_arguments(command, paths)
    with make_client(FLAGS.protocol, FLAGS.server, FLAGS.model_name, FLAGS.version,
                     FLAGS.timeout) as client:
      run(client, paths)
  except ServingClientError as error:
    # TensorFlow's messages go on with the failing graph node on further lines.
    first_line = error.message.strip().splitlines()[0] if error.message.strip() else ""
    code = f" ({error.describe_code()})" if error.code is not None else ""
    sys.exit(f"error: {first_line}{code}")
  except (ValueError, OSError) as error:
    sys.exit(f"error: {error}")


if __name__ == "__main__":
  app.run(main)
