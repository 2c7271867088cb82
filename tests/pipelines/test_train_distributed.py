"""pipelines.train with MultiWorkerMirroredStrategy: two real workers on loopback.

Two workers with a per-replica batch of 50 train on the same global
minibatches of 100 as one process with --batch_size=100; they differ only in
the z draws (each replica draws for its half), so the curves agree within a
few nats rather than exactly.
"""

from __future__ import annotations

import csv
import json
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from cli_helpers import finish, start

RUN = ("--preset=modern", "--train_examples=5000", "--hidden_units=64", "--latent_dim=5",
       "--steps=200", "--checkpoint_every_steps=100")
WORKER_TEMP = "vae_tf_worker_checkpoints_*"


def free_ports(count: int) -> list[int]:
  probes = [socket.socket() for _ in range(count)]
  for probe in probes:
    probe.bind(("127.0.0.1", 0))
  ports = [probe.getsockname()[1] for probe in probes]
  for probe in probes:
    probe.close()
  return ports


def worker_envs(env: dict[str, str]) -> list[dict[str, str]]:
  cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
  return [{**env, "TF_CONFIG": json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": index}})}
          for index in range(2)]


def start_workers(env, model_dir: Path, *flags: str):
  return [start("pipelines.train", *RUN, "--batch_size=50", f"--model_dir={model_dir}", *flags,
                env=worker_env) for worker_env in worker_envs(env)]


def metrics(model_dir: Path) -> list[dict[str, float]]:
  with open(model_dir / "metrics.csv") as f:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(env, tmp_path_factory) -> dict[str, Path]:
  """One process, and two workers run side by side with it."""
  root = tmp_path_factory.mktemp("distributed")
  temp_before = set(Path(tempfile.gettempdir()).glob(WORKER_TEMP))
  single = start("pipelines.train", *RUN, "--batch_size=100", "--updates_per_call=1",
                 f"--model_dir={root / 'single'}", "--noexport", env=env)
  workers = start_workers(env, root / "two_workers", f"--export_base={root / 'export'}")
  for process in [single, *workers]:
    result = finish(process)
    assert result.returncode == 0, result.stderr[-3000:]
  assert set(Path(tempfile.gettempdir()).glob(WORKER_TEMP)) == temp_before
  return {"single": root / "single", "two_workers": root / "two_workers",
          "export": root / "export"}


def test_two_workers_match_one_process_with_the_global_batch(runs):
  single, distributed = metrics(runs["single"]), metrics(runs["two_workers"])
  assert [row["steps"] for row in distributed] == [row["steps"] for row in single]
  assert [row["steps"] for row in single] == [50.0, 100.0, 150.0, 200.0]
  # Both count the global minibatch: 100 examples per step.
  assert [row["examples_seen"] for row in distributed] == [row["steps"] * 100 for row in single]
  for one, two in zip(single, distributed):
    assert two["elbo"] == pytest.approx(one["elbo"], abs=4.0)
    assert two["val_elbo"] == pytest.approx(one["val_elbo"], abs=4.0)
  assert distributed[-1]["val_elbo"] > distributed[0]["val_elbo"] + 20


def test_only_the_chief_writes(runs):
  model_dir = runs["two_workers"]
  checkpoints = sorted(path.name for path in (model_dir / "checkpoints").glob("*.index"))
  assert checkpoints == ["ckpt-100.index", "ckpt-200.index"]
  assert len(metrics(model_dir)) == 4  # one row per epoch, not one per worker
  assert sorted(path.name for path in (runs["export"] / "vae").iterdir()) == ["1"]
  config = json.loads((model_dir / "config.json").read_text())
  assert config["train"]["batch_size"] == 50 and config["train"]["updates_per_call"] == 1


def test_killed_worker_stops_the_other_and_both_resume(env, tmp_path, runs):
  model_dir = tmp_path / "run"
  workers = start_workers(env, model_dir, "--noexport")
  deadline = time.monotonic() + 180
  while not (model_dir / "checkpoints" / "ckpt-100.index").exists():
    assert time.monotonic() < deadline and workers[0].poll() is None, "no checkpoint at step 100"
    time.sleep(0.2)
  workers[1].send_signal(signal.SIGKILL)
  survivor = finish(workers[0], timeout=120)
  workers[1].wait()
  assert survivor.returncode == 1
  last_line = survivor.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: lost a worker (")
  assert last_line.endswith("restart every worker to resume from the last checkpoint")

  results = [finish(process) for process in start_workers(env, model_dir, "--noexport")]
  for result in results:
    assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from 100" in results[0].stdout
  # The stream and the seeds are functions of the step: the resumed run ends
  # where the uninterrupted one did.
  resumed, uninterrupted = metrics(model_dir)[-1], metrics(runs["two_workers"])[-1]
  assert resumed["val_elbo"] == pytest.approx(uninterrupted["val_elbo"], abs=1e-3)
