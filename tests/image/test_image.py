"""The container image, built and run for real (`make test-image`).

Builds vae-tf:<version> (container/build-image.sh), then, inside it as its
user: trains with the command, flags and environment of the Kubernetes
training Job (k8s/base) for a few hundred steps on the real MNIST files,
mounted read-only where the offline cluster setup puts them (/store/data),
with downloads made impossible; exports; evaluates; serves the exports with
the TF Serving container's flags and config files (k8s/base/serving), and
answers a REST predict request and `serving.client` calls from the host.

Only with VAE_TF_IMAGE_TEST=1 (it downloads TensorFlow into the image); plain
`make test` skips it. Settings:
  VAE_TF_TEST_IMAGE=<tag>   image to test (default vae-tf:<version>)
  VAE_TF_IMAGE_BUILD=0      test that image as it is, without building
  BASE_IMAGE, VAE_TF_BUILDER, BUILDAH_ISOLATION: as for `make image`
  IMAGE_TEST_STEPS=300      training steps
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

if os.environ.get("VAE_TF_IMAGE_TEST") != "1":
  pytest.skip("the image test runs only with VAE_TF_IMAGE_TEST=1 (make test-image)",
              allow_module_level=True)

from container_helpers import (REPO_ROOT, Image, detect_builder, free_port, offline_env,  # noqa: E402
                               project_version, wait_for_http)

K8S_BASE = REPO_ROOT / "k8s" / "base"
ENTRY_POINTS = ("train", "tune", "export", "evaluate", "client", "serve")
STEPS = int(os.environ.get("IMAGE_TEST_STEPS", "300"))
# Where the manifests mount things (k8s/base): the store volume, and the
# TF Serving config files from the tf-serving-config ConfigMap.
STORE = "/store"
TF_SERVING_CONFIG = "/etc/tf-serving"


def _manifest(relative: str, kind: str) -> dict:
  [obj] = [doc for doc in yaml.safe_load_all((K8S_BASE / relative).read_text())
           if doc and doc["kind"] == kind]
  return obj


def _container(obj: dict) -> dict:
  return obj["spec"]["template"]["spec"]["containers"][0]


def _runtime_env() -> dict[str, str]:
  """The vae-runtime ConfigMap's literals (every vae-tf container's envFrom)."""
  kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
  [generator] = [g for g in kustomization["configMapGenerator"] if g["name"] == "vae-runtime"]
  return dict(literal.split("=", 1) for literal in generator["literals"])


def _flags(args: list[str]) -> dict[str, str]:
  return {token[2:].split("=", 1)[0]: token.split("=", 1)[1] for token in args
          if token.startswith("--") and "=" in token}


# --- Fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(request) -> Image:
  builder = detect_builder()
  if builder is None:
    pytest.fail("VAE_TF_IMAGE_TEST=1 but no container builder works here "
                "(docker with a daemon, podman or buildah)")
  tag = os.environ.get("VAE_TF_TEST_IMAGE") or f"vae-tf:{project_version()}"
  if os.environ.get("VAE_TF_IMAGE_BUILD", "1") != "0":
    start = time.monotonic()
    result = subprocess.run([str(REPO_ROOT / "container" / "build-image.sh")], cwd=REPO_ROOT,
                            env={**os.environ, "IMAGE": tag}, capture_output=True, text=True,
                            timeout=3600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    print(f"\nbuilt {tag} with {builder} in {time.monotonic() - start:.0f}s: "
          f"{result.stderr.strip().splitlines()[-1]}")
  image = Image(builder, tag)
  request.addfinalizer(image.close)
  return image


@pytest.fixture(scope="module")
def data_dir() -> Path:
  folder = Path(os.environ.get("VAE_TF_MANUAL_DIR") or REPO_ROOT.parent / "shared" / "data")
  if not (folder / "mnist" / "train-images-idx3-ubyte.gz").is_file():
    pytest.fail(f"the MNIST files are not in {folder}/mnist (set VAE_TF_MANUAL_DIR)")
  return folder.resolve()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
  """The store volume: a host folder the image's user can write."""
  folder = tmp_path_factory.mktemp("store")
  folder.chmod(0o777)
  return folder


@pytest.fixture(scope="module")
def mounts(store, data_dir) -> dict[str, str]:
  return {str(store): STORE, str(data_dir / "mnist"): f"{STORE}/data/mnist:ro"}


@pytest.fixture(scope="module")
def runtime_env() -> dict[str, str]:
  # The offline cluster setup (k8s/README.md): the original files on the store volume.
  return {**_runtime_env(), "VAE_TF_MANUAL_DIR": f"{STORE}/data", **offline_env()}


# --- The image itself ------------------------------------------------------------------


def test_runs_as_the_non_root_user_the_manifests_expect(image):
  uid = int(re.search(r"^ARG UID=(\d+)$", (REPO_ROOT / "Dockerfile").read_text(), re.M).group(1))
  assert image.config()["User"] == f"{uid}:{uid}"
  result = image.run(["id"])
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f"uid={uid}(vae) gid={uid}(vae)"), result.stdout
  for relative, kind in (("training/train-job.yaml", "Job"),
                         ("tuning/tune-chief.yaml", "Deployment"),
                         ("tuning/tune-workers.yaml", "Job")):
    security = _manifest(relative, kind)["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == uid


def test_the_installed_package_imports_without_the_source_tree(image):
  script = ("import json, pipelines, serving, vae_tf, vae_tf.data.sources\n"
            "print(json.dumps([m.__file__ for m in (vae_tf, pipelines, serving)]))")
  result = image.run(["python", "-c", script])
  assert result.returncode == 0, result.stderr
  files = json.loads(result.stdout.splitlines()[-1])
  assert all(re.search(r"/(site|dist)-packages/", path) for path in files), files
  # The build removes its copy of the sources.
  assert image.run(["test", "-e", "/tmp/vae-tf-src"]).returncode == 1


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_every_entry_point_answers_helpshort(image, command):
  result = image.run(["vae-tf", command, "--helpshort"], timeout=180)
  # absl prints the help and exits with status 1, as it does outside the image.
  output = result.stdout + result.stderr
  assert result.returncode in (0, 1) and "Traceback" not in output, output[-3000:]
  assert "Try --helpfull to get a list of all flags." in result.stdout, output[-3000:]


def test_entry_point_usage(image):
  helped = image.run(["vae-tf", "help"])
  assert helped.returncode == 0 and "usage: vae-tf" in helped.stdout
  unknown = image.run(["vae-tf", "trian"])
  assert unknown.returncode == 2 and "usage: vae-tf" in unknown.stderr
  config = image.config()
  assert config["Entrypoint"] == ["vae-tf"] and config["Cmd"] == ["help"]


def test_the_manifests_programs_exist_in_the_image(image):
  """Every program the vae-tf containers of k8s/base start, and every module
  they run with `python -m`, is in the image."""
  programs, modules = set(), set()
  for relative, kind in (("training/train-job.yaml", "Job"),
                         ("tuning/tune-chief.yaml", "Deployment"),
                         ("tuning/tune-workers.yaml", "Job")):
    container = _container(_manifest(relative, kind))
    command = container.get("command", [])
    programs.add(command[0])
    script = " ".join(command)
    modules.update(re.findall(r"\bpython3?\s+-m\s+([\w.]+)", script))
    if "exec sleep" in script:
      programs.add("sleep")
  programs.add("python")
  assert modules == {"pipelines.train", "pipelines.tune"}
  check = " && ".join(f"command -v {shlex.quote(p)}" for p in sorted(programs))
  result = image.run(["/bin/sh", "-c", check])
  assert result.returncode == 0, f"missing in the image: {programs}\n{result.stdout}"
  find = ("import importlib.util, sys\n"
          "missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n"
          "assert not missing, missing")
  result = image.run(["python", "-c", find, *sorted(modules)])
  assert result.returncode == 0, result.stderr


# --- Train, export, evaluate, serve, as the manifests do ---------------------------------


@pytest.fixture(scope="module")
def trained(image, store, mounts, runtime_env) -> dict[str, str]:
  """Runs the training Job's container (k8s/base/training/train-job.yaml): its
  shell script and flags, as one worker (the local overlay), --epochs swapped
  for --steps."""
  container = _container(_manifest("training/train-job.yaml", "Job"))
  env = {var["name"]: var["value"] for var in container["env"] if "value" in var}
  env.update(NUM_WORKERS="1", JOB_NAME="vae-train", JOB_COMPLETION_INDEX="0", **runtime_env)
  args = [arg for arg in container["args"] if not arg.startswith("--epochs=")]
  args += [f"--steps={STEPS}", "--checkpoint_every_steps=100"]
  start = time.monotonic()
  result = image.run([*container["command"], *args], mounts=mounts, env=env, timeout=1200)
  seconds = time.monotonic() - start
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  print(f"\ntrained {STEPS} steps in the image in {seconds:.0f}s")
  flags = _flags(args)
  assert flags["model_dir"].startswith(STORE + "/") and flags["export_base"].startswith(STORE + "/")
  return flags


def _host_path(store: Path, path: str) -> Path:
  return store / posixpath.relpath(path, STORE)


def test_training_wrote_its_run_folder_and_first_export(trained, store):
  run = _host_path(store, trained["model_dir"])
  assert run.is_dir() and any(run.iterdir())
  version = _host_path(store, trained["export_base"]) / trained["model_name"] / "1"
  assert (version / "saved_model.pb").is_file()


def test_export_adds_a_version_in_the_layout_tf_serving_reads(image, trained, store, mounts,
                                                               runtime_env):
  result = image.run(["vae-tf", "export", f"--model_dir={trained['model_dir']}",
                      f"--export_base={trained['export_base']}",
                      f"--model_name={trained['model_name']}"],
                     mounts=mounts, env=runtime_env, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  # TF Serving's layout: <base_path>/<integer version>/saved_model.pb, where
  # base_path is models.config's (the ConfigMap the model servers mount).
  config = (K8S_BASE / "serving" / "models.config").read_text()
  base_path = re.search(r'base_path:\s*"([^"]+)"', config).group(1)
  assert base_path == posixpath.join(trained["export_base"], trained["model_name"])
  model_path = _host_path(store, base_path)
  versions = sorted(entry.name for entry in model_path.iterdir()
                    if not entry.name.startswith("."))
  assert versions == ["1", "2"], versions
  for version in versions:
    assert (model_path / version / "saved_model.pb").is_file()
    assert (model_path / version / "variables").is_dir()


def test_evaluate_reports_the_bound(image, trained, store, mounts, runtime_env):
  result = image.run(["vae-tf", "evaluate", f"--model_dir={trained['model_dir']}",
                      "--num_examples=500", "--num_importance_samples=20"],
                     mounts=mounts, env=runtime_env, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  report = json.loads((_host_path(store, trained["model_dir"]) / "evaluation.json").read_text())
  print(f"\nevaluate: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else report}")
  assert report


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
  """The tf-serving-config ConfigMap's files, as the serving pod mounts them."""
  folder = tmp_path_factory.mktemp("tf-serving-config")
  for name in ("models.config", "batching_parameters.pbtxt", "monitoring.config"):
    (folder / name).write_text((K8S_BASE / "serving" / name).read_text())
    (folder / name).chmod(0o644)
  folder.chmod(0o755)
  return folder


def test_serve_answers_predict_and_the_client(image, trained, store, config_dir, tmp_path):
  """`vae-tf serve` with the TF Serving Deployment's flags and config files."""
  container = _container(_manifest("serving/tf-serving.yaml", "Deployment"))
  grpc_port, rest_port = free_port(), free_port()
  args = [arg for arg in container["args"] if not arg.startswith(("--port=", "--rest_api_port="))]
  args += [f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
  if image.builder != "buildah":
    args.append("--host=0.0.0.0")  # Reached through published ports.
  flags = _flags(container["args"])
  assert posixpath.dirname(flags["model_config_file"]) == TF_SERVING_CONFIG
  serve_mounts = {str(store): f"{STORE}:ro", str(config_dir): f"{TF_SERVING_CONFIG}:ro"}
  name = trained["model_name"]
  rest = f"http://127.0.0.1:{rest_port}"
  log = tmp_path / "serve.log"
  with image.background(["vae-tf", "serve", *args], log, (grpc_port, rest_port),
                        mounts=serve_mounts):
    try:
      status = json.loads(wait_for_http(f"{rest}/v1/models/{name}", timeout=240))
    except TimeoutError:
      pytest.fail(f"the server did not come up:\n{log.read_text()[-4000:]}")
    [version] = status["model_version_status"]  # num_versions: 1, the newest.
    assert version["version"] == "2" and version["state"] == "AVAILABLE", status

    request = json.dumps({"signature_name": "serving_default",
                          "instances": [[0.0] * 784, [1.0] * 784]}).encode()
    with urllib.request.urlopen(urllib.request.Request(
        f"{rest}/v1/models/{name}:predict", data=request,
        headers={"Content-Type": "application/json"}), timeout=60) as response:
      predictions = json.loads(response.read())["predictions"]
    assert len(predictions) == 2

    metrics = wait_for_http(f"{rest}/monitoring/prometheus/metrics", timeout=30)
    assert metrics

    # The client from the host, through the ports: REST, then gRPC.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for protocol, port in (("rest", rest_port), ("grpc", grpc_port)):
      client = subprocess.run(
          [sys.executable, "-m", "serving.client", "status", f"--protocol={protocol}",
           f"--server=127.0.0.1:{port}", f"--model_name={name}", "--timeout=30"],
          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
      assert client.returncode == 0, client.stderr[-3000:]
      assert "AVAILABLE" in client.stdout, client.stdout
    samples = tmp_path / "samples.png"
    client = subprocess.run(
        [sys.executable, "-m", "serving.client", "sample", "--num_samples=4", "--seed=0",
         f"--server=127.0.0.1:{rest_port}", f"--model_name={name}", f"--output={samples}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert client.returncode == 0, client.stderr[-3000:]
    assert samples.stat().st_size > 0
  # Stopped: nothing listens on its ports any more.
  with pytest.raises(OSError):
    urllib.request.urlopen(f"{rest}/v1/models/{name}", timeout=5)
