"""The Kubernetes manifests (k8s/) and the Dockerfile.

Every overlay builds with `kubectl kustomize`, alone and with the optional
components; every object validates against the Kubernetes API schemas or the
published CRD schemas; every pod is hardened and sized; the TF Serving config
files parse as TF Serving's protos; and the manifests agree with the code
(its flags, its export layout) and with each other (ports, names, volumes).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import posixpath
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from k8s_helpers import (CRD_FILES, KSERVE_CONTAINER_NAME, KSERVE_TENSORFLOW_REST_PORT,
                         KUBERNETES_VERSION, REPO_ROOT, VARIANTS, all_pods, containers_of,
                         expand_kubernetes_vars, find, find_one, flag_names, literal_env,
                         mounted_config_file, pod_problems, pod_templates, python_module)

PORTABLE = [name for name, (_, components) in VARIANTS.items() if not components]
WITH_OPERATORS = [name for name, (_, components) in VARIANTS.items() if components]
NAMESPACE = "vae-tf"
VAE_TF_IMAGES = {"local": "vae-tf:dev", "cluster": "registry.example.com/vae-tf:0.1.0"}
KNOWN_KINDS = {"Namespace", "ConfigMap", "Service", "PersistentVolumeClaim", "Deployment", "Job",
               "HorizontalPodAutoscaler", "PodDisruptionBudget", "TFJob", "InferenceService"}
JOB_NAME_LABEL = "metadata.labels['batch.kubernetes.io/job-name']"


def overlay_of(variant: str) -> str:
  return VARIANTS[variant][0]


def training_container(objects: list[dict]) -> tuple[dict, dict]:
  """(pod spec, container) of the training workers, whichever path trains."""
  for obj in find(objects, "Job", "vae-train") + find(objects, "TFJob", "vae-train"):
    [(_, _, pod_spec)] = pod_templates(obj)
    return pod_spec, pod_spec["containers"][0]
  raise AssertionError("no training workload")


def is_model_server(label: str, container: dict) -> bool:
  """Whether a container runs TensorFlow Serving (ours, or KServe's runtime)."""
  return (container.get("command") == ["tensorflow_model_server"]
          or (label.startswith("InferenceService/") and container["name"] == KSERVE_CONTAINER_NAME))


def model_servers(objects: list[dict]) -> list[tuple[str, dict, dict, dict]]:
  """(label, pod metadata, pod spec, container) of every TensorFlow Serving container."""
  return [(label, metadata, pod_spec, container)
          for label, metadata, pod_spec in all_pods(objects)
          for container in pod_spec["containers"] if is_model_server(label, container)]


def flag_values(container: dict) -> dict[str, str]:
  values = {}
  for token in container.get("args", []):
    if token.startswith("--"):
      name, _, value = token[2:].partition("=")
      values[name] = value
  return values


def mount_of(container: dict, path: str) -> dict:
  """The volume mount of `container` that holds `path`."""
  mounts = [mount for mount in container.get("volumeMounts", [])
            if path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/")]
  assert mounts, f"no volume of container {container['name']} holds {path}"
  return max(mounts, key=lambda mount: len(mount["mountPath"]))


def claim_of(pod_spec: dict, mount: dict) -> str:
  [volume] = [volume for volume in pod_spec["volumes"] if volume["name"] == mount["name"]]
  return volume["persistentVolumeClaim"]["claimName"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
  return all(labels.get(key) == value for key, value in selector.items())


# --- Building and validating ----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_overlay_builds_the_expected_objects(built, variant):
  objects = built[variant]
  assert {obj["kind"] for obj in objects} <= KNOWN_KINDS
  names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
  common = {("Namespace", NAMESPACE), ("PersistentVolumeClaim", "vae-store"),
            ("Deployment", "vae-tune-chief"), ("Service", "vae-tune-oracle"),
            ("Job", "vae-tune-workers")}
  portable = {("Job", "vae-train"), ("Service", "vae-train-workers"),
              ("Deployment", "vae-serving"), ("Service", "vae-serving"),
              ("HorizontalPodAutoscaler", "vae-serving")}
  operators = {("TFJob", "vae-train"), ("InferenceService", "vae")}
  if variant in PORTABLE:
    assert common | portable <= names and not operators & names
  else:
    assert common | operators <= names and not portable & names
  for obj in objects:
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["kind"] != "Namespace":
      assert obj["metadata"].get("namespace") == NAMESPACE, where
    # `kubectl get,delete -l app.kubernetes.io/part-of=vae-tf` finds everything.
    assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vae-tf", where


@pytest.mark.parametrize("variant", VARIANTS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(built, variant,
                                                                 kubernetes_validate):
  checked, failures = set(), []
  for obj in built[variant]:
    if (obj["apiVersion"], obj["kind"]) in CRD_FILES:
      continue
    checked.add(obj["kind"])
    try:
      kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
      path = ".".join(str(part) for part in error.path)
      failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
  assert not failures, "\n".join(failures)
  assert {"Namespace", "ConfigMap", "Service", "PersistentVolumeClaim", "Deployment",
          "Job"} <= checked


@pytest.mark.parametrize("variant", WITH_OPERATORS)
def test_custom_resources_validate_against_the_published_crds(built, variant, crd_validators):
  custom = [obj for obj in built[variant] if (obj["apiVersion"], obj["kind"]) in CRD_FILES]
  assert {(obj["apiVersion"], obj["kind"]) for obj in custom} == set(CRD_FILES)
  failures = []
  for obj in custom:
    for error in crd_validators[(obj["apiVersion"], obj["kind"])].iter_errors(obj):
      path = ".".join(str(part) for part in error.absolute_path)
      failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
  assert not failures, "\n".join(failures)


def test_the_validators_reject_broken_objects(built, crd_validators, kubernetes_validate):
  """The checks above would catch a misspelled field, so their passing means something."""
  deployment = copy.deepcopy(find_one(built["local"], "Deployment", "vae-serving"))
  deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
  with pytest.raises(kubernetes_validate.ValidationError):
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)

  objects = built["local+operators"]
  tfjob = copy.deepcopy(find_one(objects, "TFJob", "vae-train"))
  tfjob["spec"]["tfReplicaSpecs"]["Worker"]["replica"] = 2
  service = copy.deepcopy(find_one(objects, "InferenceService", "vae"))
  service["spec"]["predictor"]["model"]["storageURI"] = "pvc://vae-store/models/vae"
  for obj in (tfjob, service):
    errors = list(crd_validators[(obj["apiVersion"], obj["kind"])].iter_errors(obj))
    assert errors, f"{obj['kind']} with a misspelled field passed its CRD schema"
  tfjob = copy.deepcopy(find_one(objects, "TFJob", "vae-train"))
  tfjob["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = "two"
  assert list(crd_validators[("kubeflow.org/v1", "TFJob")].iter_errors(tfjob))

  [(_, _, pod_spec)] = pod_templates(find_one(built["local"], "Job", "vae-train"))
  assert pod_problems(pod_spec) == []
  for breaking in (
      lambda pod: pod["securityContext"].pop("runAsNonRoot"),
      lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(drop=[]),
      lambda pod: pod["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
      lambda pod: pod["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
      lambda pod: pod["containers"][0]["resources"].pop("limits"),
      lambda pod: pod["containers"][0]["resources"]["limits"].update(memory="1Mi"),
      lambda pod: pod["containers"][0].update(volumeMounts=[])):
    broken = copy.deepcopy(pod_spec)
    breaking(broken)
    assert pod_problems(broken), "a broken pod passed the hardening check"


# --- Pods ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_is_hardened_and_sized(built, variant):
  pods = list(all_pods(built[variant]))
  # Training workers, tuning chief and workers, model servers.
  assert len(pods) == 4
  problems = {label: pod_problems(pod_spec) for label, _, pod_spec in pods}
  assert not any(problems.values()), json.dumps(problems, indent=2)


def test_namespace_enforces_the_restricted_pod_security_standard(built):
  for variant, objects in built.items():
    labels = find_one(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_vae_tf_pods_run_as_the_image_user(built, variant):
  uid = int(re.search(r"^ARG UID=(\d+)$", (REPO_ROOT / "Dockerfile").read_text(), re.M).group(1))
  image = VAE_TF_IMAGES[overlay_of(variant)]
  vae_tf_pods = [(label, pod_spec) for label, _, pod_spec in all_pods(built[variant])
                 if any(c.get("image") == image for c in pod_spec["containers"])]
  assert len(vae_tf_pods) == 3
  for label, pod_spec in vae_tf_pods:
    security = pod_spec["securityContext"]
    # fsGroup: the store volume must be writable by that user.
    assert security["runAsUser"] == security["fsGroup"] == uid, label


@pytest.mark.parametrize("variant", VARIANTS)
def test_images_are_pinned_and_match_the_project(built, variant):
  serving_api = re.search(r'"tensorflow-serving-api>=(\d+\.\d+)',
                          (REPO_ROOT / "pyproject.toml").read_text()).group(1)
  images = set()
  for _, _, pod_spec in all_pods(built[variant]):
    for container in containers_of(pod_spec):
      if "image" in container:
        images.add(container["image"])
  # The InferenceService leaves its image to KServe's runtime, at runtimeVersion.
  tf_serving = {f"tensorflow/serving:{serving_api}.0"} if variant in PORTABLE else set()
  assert images == {VAE_TF_IMAGES[overlay_of(variant)]} | tf_serving
  for obj in find(built[variant], "InferenceService"):
    assert obj["spec"]["predictor"]["model"]["runtimeVersion"] == f"{serving_api}.0"


# --- Serving ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tf_serving_protos() -> dict[str, type]:
  """--flag -> the TF Serving message its text-proto file holds.

  tensorflow-serving-api ships ModelServerConfig but not BatchingParameters or
  MonitoringConfig; serving.protos declares those two with TF Serving's field
  names and numbers, and is used where the wheel lacks them.
  """
  from tensorflow_serving.config import model_server_config_pb2
  try:
    from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import \
        BatchingParameters
  except ImportError:
    from serving.protos import BatchingParameters
  try:
    from tensorflow_serving.config.monitoring_config_pb2 import MonitoringConfig
  except ImportError:
    from serving.protos import MonitoringConfig
  return {"model_config_file": model_server_config_pb2.ModelServerConfig,
          "batching_parameters_file": BatchingParameters,
          "monitoring_config_file": MonitoringConfig}


def rest_port(obj_label: str, container: dict) -> int:
  if obj_label.startswith("InferenceService/"):
    return KSERVE_TENSORFLOW_REST_PORT
  return int(flag_values(container)["rest_api_port"])


def container_port(container: dict, port: int | str) -> int:
  if isinstance(port, int):
    return port
  [number] = [entry["containerPort"] for entry in container.get("ports", [])
              if entry.get("name") == port]
  return number


def served_model_names(label: str, pod_spec: dict, container: dict,
                       objects: list[dict], protos: dict[str, type]) -> list[str]:
  if label.startswith("InferenceService/"):
    return [label.split("/")[1]]  # KServe serves the model under the service's name.
  config = text_format.Parse(mounted_config_file(
      pod_spec, container, flag_values(container)["model_config_file"], objects),
      protos["model_config_file"]())
  return [model.name for model in config.model_config_list.config]


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_servers_probe_the_model_status_endpoint(built, variant, tf_serving_protos):
  servers = model_servers(built[variant])
  assert len(servers) == 1
  for label, _, pod_spec, container in servers:
    names = served_model_names(label, pod_spec, container, built[variant], tf_serving_protos)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
      if probe == "startupProbe" and probe not in container:
        continue
      http = container[probe]["httpGet"]
      assert http["path"] in {f"/v1/models/{name}" for name in names}, (label, probe)
      assert container_port(container, http["port"]) == rest_port(label, container), (label, probe)


@pytest.mark.parametrize("variant", VARIANTS)
def test_serving_config_maps_parse_as_tf_serving_protos(built, variant, tf_serving_protos):
  objects = built[variant]
  parsed_keys = set()
  for label, metadata, pod_spec, container in model_servers(objects):
    flags = flag_values(container)
    expected = set(tf_serving_protos)
    if label.startswith("InferenceService/"):
      expected.discard("model_config_file")  # KServe's runtime names the model itself.
    assert expected <= set(flags), label
    messages = {}
    for flag, message_class in tf_serving_protos.items():
      if flag in flags:
        text = mounted_config_file(pod_spec, container, flags[flag], objects)
        messages[flag] = text_format.Parse(text, message_class())  # Unknown fields raise.
        parsed_keys.add(posixpath.basename(flags[flag]))
    # tensorflow_model_server stops at start-up on a batching file without batching.
    assert flags["enable_batching"] == "true", label
    batching = messages["batching_parameters_file"]
    assert batching.max_batch_size.value > 0 and batching.num_batch_threads.value > 0
    # The cluster batches as `make serve` does (one set of batching defaults).
    assert batching == text_format.Parse(
        (REPO_ROOT / "serving" / "batching_parameters.pbtxt").read_text(), type(batching)()), label
    prometheus = messages["monitoring_config_file"].prometheus_config
    assert prometheus.enable, label
    annotations = metadata.get("annotations", {})
    assert annotations["prometheus.io/path"] == prometheus.path, label
    assert int(annotations["prometheus.io/port"]) == rest_port(label, container), label
    if "model_config_file" in messages:
      for model in messages["model_config_file"].model_config_list.config:
        assert model.model_platform == "tensorflow"
        assert mount_of(container, model.base_path).get("readOnly") is True, model.base_path
  [config_map] = [obj for obj in find(objects, "ConfigMap")
                  if obj["metadata"]["name"].startswith("tf-serving-config")]
  unused = set(config_map["data"]) - parsed_keys
  if variant in WITH_OPERATORS:
    unused.discard("models.config")
  assert not unused, f"keys no model server reads: {unused}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_servers_serve_what_training_and_tuning_export(built, variant, tf_serving_protos):
  objects = built[variant]
  exporters = [training_container(objects)]
  [(_, _, chief_pod)] = pod_templates(find_one(objects, "Deployment", "vae-tune-chief"))
  exporters.append((chief_pod, chief_pod["containers"][0]))
  [(label, _, server_pod, server)] = model_servers(objects)
  served_names = served_model_names(label, server_pod, server, objects, tf_serving_protos)
  for pod_spec, container in exporters:
    flags = flag_values(container)
    export_dir = posixpath.join(flags["export_base"], flags["model_name"])
    assert flags["model_name"] in served_names
    export_mount = mount_of(container, export_dir)
    claim = claim_of(pod_spec, export_mount)
    if label.startswith("InferenceService/"):
      relative = posixpath.relpath(export_dir, export_mount["mountPath"])
      predictor = find_one(objects, "InferenceService", flags["model_name"])["spec"]["predictor"]
      assert predictor["model"]["storageUri"] == f"pvc://{claim}/{relative}"
    else:
      config = text_format.Parse(mounted_config_file(
          server_pod, server, flag_values(server)["model_config_file"], objects),
          tf_serving_protos["model_config_file"]())
      [model] = [m for m in config.model_config_list.config if m.name == flags["model_name"]]
      assert model.base_path == export_dir
      assert claim_of(server_pod, mount_of(server, model.base_path)) == claim


def test_serving_is_scaled_by_its_autoscaler(built):
  for variant in PORTABLE:
    deployment = find_one(built[variant], "Deployment", "vae-serving")
    # A replica count in the Deployment would reset the autoscaler's on every apply.
    assert "replicas" not in deployment["spec"]
    autoscaler = find_one(built[variant], "HorizontalPodAutoscaler", "vae-serving")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "vae-serving"}
    assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]


# --- Wiring ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_references_resolve(built, variant):
  """ConfigMaps, claims and Services refer to objects of the same build.

  Kustomize renames generated ConfigMaps and updates references only where it
  knows them to be, which excludes custom resources unless told.
  """
  objects = built[variant]
  config_maps = {obj["metadata"]["name"] for obj in find(objects, "ConfigMap")}
  claims = {obj["metadata"]["name"] for obj in find(objects, "PersistentVolumeClaim")}
  pods = list(all_pods(objects))
  for label, _, pod_spec in pods:
    for volume in pod_spec.get("volumes", []):
      if "configMap" in volume:
        assert volume["configMap"]["name"] in config_maps, label
      if "persistentVolumeClaim" in volume:
        assert volume["persistentVolumeClaim"]["claimName"] in claims, label
    for container in containers_of(pod_spec):
      for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] in config_maps, label
      for mount in container.get("volumeMounts", []):
        assert mount["name"] in {volume["name"] for volume in pod_spec["volumes"]}, label
  for service in find(objects, "Service"):
    selected = [(pod_spec, metadata) for _, metadata, pod_spec in pods
                if selects(service["spec"]["selector"], metadata.get("labels", {}))]
    assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} pod templates"
    [(pod_spec, _)] = selected
    for port in service["spec"]["ports"]:
      target = port.get("targetPort", port["port"])
      offered = {p.get("name") for c in pod_spec["containers"] for p in c.get("ports", [])} | {
          p["containerPort"] for c in pod_spec["containers"] for p in c.get("ports", [])}
      assert target in offered, f"Service {service['metadata']['name']} port {target}"
  for budget in find(objects, "PodDisruptionBudget"):
    assert any(selects(budget["spec"]["selector"]["matchLabels"], metadata.get("labels", {}))
               for _, metadata, _ in pods)


# --- Training --------------------------------------------------------------------------


def _fake_programs(directory: Path) -> dict[str, str]:
  """A PATH whose `python` and `sleep` report how they were called."""
  directory.mkdir(exist_ok=True)
  (directory / "python").write_text(
      "#!/bin/sh\n"
      'printf "TF_CONFIG %s\\n" "${TF_CONFIG:-}"\n'
      'for arg in "$@"; do printf "ARG %s\\n" "$arg"; done\n'
      'exit "${FAKE_PYTHON_EXIT:-0}"\n')
  (directory / "sleep").write_text('#!/bin/sh\nprintf "SLEEP %s\\n" "$*"\n')
  for program in ("python", "sleep"):
    (directory / program).chmod(0o755)
  return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}


def _run_container(container: dict, env: dict[str, str]) -> subprocess.CompletedProcess:
  command = [expand_kubernetes_vars(part, env)
             for part in container["command"] + container.get("args", [])]
  return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30,
                        check=False)


def _reported(output: str, key: str) -> list[str]:
  return [line[len(key) + 1:] for line in output.splitlines() if line.startswith(key + " ")]


@pytest.mark.parametrize("variant", PORTABLE)
def test_indexed_job_workers_derive_tf_config_from_their_index(built, variant, tmp_path):
  objects = built[variant]
  job = find_one(objects, "Job", "vae-train")
  spec = job["spec"]
  pod_spec = spec["template"]["spec"]
  [container] = pod_spec["containers"]
  env = literal_env(container)
  workers = spec["completions"]
  assert spec["completionMode"] == "Indexed"
  assert spec["parallelism"] == workers == int(env["NUM_WORKERS"])
  assert workers == (1 if overlay_of(variant) == "local" else 4)
  [job_name_source] = [var["valueFrom"]["fieldRef"]["fieldPath"] for var in container["env"]
                       if var["name"] == "JOB_NAME"]
  assert job_name_source == JOB_NAME_LABEL
  # Pod i's DNS name is <hostname>.<subdomain>: the headless Service must be that subdomain.
  service = find_one(objects, "Service", pod_spec["subdomain"])
  assert service["spec"]["clusterIP"] == "None"
  assert env["WORKER_SERVICE"] == pod_spec["subdomain"]
  [port] = service["spec"]["ports"]
  assert port["port"] == int(env["WORKER_PORT"]) == container_port(container, port["name"])

  fake = _fake_programs(tmp_path / "bin")
  hosts = [f"{job['metadata']['name']}-{i}.{pod_spec['subdomain']}:{env['WORKER_PORT']}"
           for i in range(workers)]
  for index in range(workers):
    result = _run_container(container, {**fake, **env, "JOB_NAME": job["metadata"]["name"],
                                        "JOB_COMPLETION_INDEX": str(index)})
    assert result.returncode == 0, result.stderr
    [tf_config] = _reported(result.stdout, "TF_CONFIG")
    assert json.loads(tf_config) == {"cluster": {"worker": hosts},
                                     "task": {"type": "worker", "index": index}}
    assert _reported(result.stdout, "ARG") == ["-m", "pipelines.train", *container["args"]]


def test_indexed_job_tf_config_lists_every_worker(built, tmp_path):
  """The same script with three workers, as the cluster overlay would scale it."""
  container = find_one(built["cluster"], "Job", "vae-train")["spec"]["template"]["spec"][
      "containers"][0]
  env = {**_fake_programs(tmp_path / "bin"), **literal_env(container), "NUM_WORKERS": "3",
         "JOB_NAME": "vae-train", "JOB_COMPLETION_INDEX": "2"}
  [tf_config] = _reported(_run_container(container, env).stdout, "TF_CONFIG")
  assert json.loads(tf_config)["cluster"]["worker"] == [
      f"vae-train-{i}.vae-train-workers:2222" for i in range(3)]
  assert json.loads(tf_config)["task"] == {"type": "worker", "index": 2}


def test_both_training_paths_train_alike(built):
  for overlay in ("local", "cluster"):
    job_pod, job_container = training_container(built[overlay])
    tfjob_pod, tfjob_container = training_container(built[f"{overlay}+operators"])
    assert job_container["args"] == tfjob_container["args"]
    assert job_container["resources"] == tfjob_container["resources"]
    assert job_container["image"] == tfjob_container["image"]
    tfjob = find_one(built[f"{overlay}+operators"], "TFJob", "vae-train")
    workers = tfjob["spec"]["tfReplicaSpecs"]
    assert set(workers) == {"Worker"}
    assert workers["Worker"]["replicas"] == find_one(built[overlay], "Job", "vae-train")["spec"][
        "completions"]
    # The operator finds TensorFlow's container and port by these names.
    assert tfjob_container["name"] == "tensorflow"
    assert [port["name"] for port in tfjob_container["ports"]] == ["tfjob-port"]


# --- Tuning ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_tuning_chief_and_workers_share_one_search(built, variant):
  objects = built[variant]
  chief = find_one(objects, "Deployment", "vae-tune-chief")
  workers = find_one(objects, "Job", "vae-tune-workers")
  oracle = find_one(objects, "Service", "vae-tune-oracle")
  assert chief["spec"]["replicas"] == 1 and chief["spec"]["strategy"]["type"] == "Recreate"
  # A work queue: no completions, so parallelism alone sets the worker count.
  assert "completions" not in workers["spec"]
  assert workers["spec"]["parallelism"] == (1 if overlay_of(variant) == "local" else 4)
  chief_pod = chief["spec"]["template"]
  worker_pod = workers["spec"]["template"]
  [chief_container] = chief_pod["spec"]["containers"]
  [worker_container] = worker_pod["spec"]["containers"]
  assert python_module(chief_container) == python_module(worker_container) == "pipelines.tune"
  assert chief_container["args"] == worker_container["args"]
  assert "--overwrite" not in chief_container["args"]
  chief_env, worker_env = literal_env(chief_container), literal_env(worker_container)
  for name in ("TUNER_DIR", "PROJECT_NAME", "KERASTUNER_ORACLE_PORT"):
    assert chief_env[name] == worker_env[name], name
  # KerasTuner: an id containing "chief" runs the oracle; each worker's id is its pod's name.
  assert "chief" in chief_env["KERASTUNER_TUNER_ID"]
  [worker_id] = [var["valueFrom"]["fieldRef"]["fieldPath"] for var in worker_container["env"]
                 if var["name"] == "KERASTUNER_TUNER_ID"]
  assert worker_id == "metadata.name"
  assert worker_env["KERASTUNER_ORACLE_IP"] == oracle["metadata"]["name"]
  assert selects(oracle["spec"]["selector"], chief_pod["metadata"]["labels"])
  assert not selects(oracle["spec"]["selector"], worker_pod["metadata"]["labels"])
  [port] = oracle["spec"]["ports"]
  assert port["port"] == int(worker_env["KERASTUNER_ORACLE_PORT"])
  assert container_port(chief_container, port["targetPort"]) == int(
      chief_env["KERASTUNER_ORACLE_PORT"])
  tuner_dir = expand_kubernetes_vars(flag_values(chief_container)["tuner_dir"], chief_env)
  assert claim_of(chief_pod["spec"], mount_of(chief_container, tuner_dir)) == claim_of(
      worker_pod["spec"], mount_of(worker_container, tuner_dir))


def test_tuning_chief_runs_the_search_once(built, tmp_path):
  """The chief's script: search, then idle; after a restart, idle at once."""
  container = find_one(built["local"], "Deployment", "vae-tune-chief")["spec"]["template"][
      "spec"]["containers"][0]
  env = {**_fake_programs(tmp_path / "bin"), **literal_env(container),
         "TUNER_DIR": str(tmp_path / "tuner")}
  results = tmp_path / "tuner" / env["PROJECT_NAME"] / "results.json"
  # The file the script waits for is the one pipelines.tune writes last.
  assert 'project / "results.json"' in (REPO_ROOT / "pipelines" / "tune.py").read_text()
  expanded_args = [expand_kubernetes_vars(arg, env) for arg in container["args"]]
  assert f"--tuner_dir={tmp_path / 'tuner'}" in expanded_args

  first = _run_container(container, env)
  assert first.returncode == 0, first.stderr
  assert _reported(first.stdout, "ARG") == ["-m", "pipelines.tune", *expanded_args]
  assert _reported(first.stdout, "SLEEP") == ["infinity"]

  failed = _run_container(container, {**env, "FAKE_PYTHON_EXIT": "3"})
  assert failed.returncode == 3 and not _reported(failed.stdout, "SLEEP")

  results.parent.mkdir(parents=True)
  results.write_text("{}")
  restarted = _run_container(container, env)
  assert restarted.returncode == 0
  assert not _reported(restarted.stdout, "ARG")
  assert _reported(restarted.stdout, "SLEEP") == ["infinity"]


# --- The code behind the manifests ---------------------------------------------------------


@pytest.fixture(scope="session")
def defined_flags():
  """module -> the absl flags it defines, read in a fresh interpreter per module
  (absl's flags are global, and the pipelines define some of the same names)."""
  cache = {}

  def flags_of(module: str) -> set[str]:
    if module not in cache:
      script = ("import importlib, importlib.util, json, sys\n"
                "from absl import flags\n"
                "name = sys.argv[1]\n"
                "if importlib.util.find_spec(name).submodule_search_locations:\n"
                "  name += '.__main__'\n"
                "importlib.import_module(name)\n"
                "print(json.dumps(sorted(flags.FLAGS)))\n")
      result = subprocess.run([sys.executable, "-c", script, module], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
      assert result.returncode == 0, result.stderr
      cache[module] = set(json.loads(result.stdout.splitlines()[-1]))
    return cache[module]

  return flags_of


def test_every_flag_in_the_manifests_exists(built, defined_flags):
  """Flags passed to our programs, and to tensorflow_model_server, are real ones.

  tensorflow_model_server's flags are checked against serving.server, which
  takes the same names; so the manifests' server flags also run our server.
  """
  used: dict[str, dict[str, set[str]]] = {}
  for variant, objects in built.items():
    for label, _, pod_spec in all_pods(objects):
      for container in containers_of(pod_spec):
        module = "serving.server" if is_model_server(label, container) else python_module(container)
        if module is None:
          continue
        for flag in flag_names(container):
          used.setdefault(module, {}).setdefault(flag, set()).add(f"{variant}:{label}")
  assert set(used) == {"pipelines.train", "pipelines.tune", "serving.server"}
  unknown = {}
  for module, flags in used.items():
    defined = defined_flags(module)
    for flag, where in flags.items():
      negated = flag[2:] if flag.startswith("no") else None
      if flag not in defined and negated not in defined:
        unknown[f"{module} --{flag}"] = sorted(where)
  assert not unknown, json.dumps(unknown, indent=2)


def test_flag_check_sees_a_missing_flag(defined_flags):
  assert "model_dir" in defined_flags("pipelines.train")
  assert "no_such_flag" not in defined_flags("pipelines.train")
  assert {"tuner_dir", "worker_timeout_seconds"} <= defined_flags("pipelines.tune")


# --- Dockerfile ------------------------------------------------------------------------


ENTRYPOINT_SCRIPT = REPO_ROOT / "container" / "vae-tf"


def _entrypoint_script() -> str:
  dockerfile = (REPO_ROOT / "Dockerfile").read_text()
  assert re.search(r"^COPY container/vae-tf /usr/local/bin/vae-tf$", dockerfile, re.M), \
      "the Dockerfile does not install container/vae-tf as its entry point"
  assert re.search(r'^ENTRYPOINT \["vae-tf"\]$', dockerfile, re.M)
  return ENTRYPOINT_SCRIPT.read_text()


def _entrypoint_modules() -> dict[str, str]:
  """vae-tf COMMAND -> the module the image's entry point runs for it."""
  script = ENTRYPOINT_SCRIPT.read_text()
  modules = {}
  for commands, module in re.findall(r"^\s*([\w|]+)\)\s*module=\"([^\"]+)\"", script, re.M):
    for command in commands.split("|"):
      modules[command] = module.replace("$1", command)
  return modules


@pytest.mark.parametrize("command, module", [
    ("train", "pipelines.train"), ("tune", "pipelines.tune"), ("export", "pipelines.export"),
    ("evaluate", "pipelines.evaluate"), ("client", "serving.client"), ("serve", "serving.server"),
])
def test_dockerfile_entrypoint_runs_each_program(tmp_path, command, module):
  script = tmp_path / "vae-tf"
  script.write_text(_entrypoint_script())
  env = _fake_programs(tmp_path / "bin")
  result = subprocess.run(["/bin/sh", str(script), command, "--flag=1"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
  assert result.returncode == 0, result.stderr
  assert _reported(result.stdout, "ARG") == ["-m", module, "--flag=1"]
  assert importlib.util.find_spec(module) is not None


def test_dockerfile_entrypoint_refuses_unknown_commands(tmp_path):
  script = tmp_path / "vae-tf"
  script.write_text(_entrypoint_script())
  env = _fake_programs(tmp_path / "bin")
  unknown = subprocess.run(["/bin/sh", str(script), "trian"], env=env, capture_output=True,
                           text=True, timeout=30, check=False)
  assert unknown.returncode == 2 and "usage: vae-tf" in unknown.stderr
  assert not _reported(unknown.stdout, "ARG")
  helped = subprocess.run(["/bin/sh", str(script), "help"], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
  assert helped.returncode == 0 and "usage: vae-tf" in helped.stdout


def test_dockerfile_runs_as_a_numeric_non_root_user():
  dockerfile = (REPO_ROOT / "Dockerfile").read_text()
  uid = int(re.search(r"^ARG UID=(\d+)$", dockerfile, re.M).group(1))
  assert uid != 0
  # Numeric, so the kubelet can check runAsNonRoot against the image itself.
  assert re.findall(r"^USER (.+)$", dockerfile, re.M) == ["${UID}:${UID}"]
  copied = set(re.findall(r"^COPY (?!--)(\S+)/ ", dockerfile, re.M))
  assert copied == {"vae_tf", "pipelines", "serving"}
  allowed = {line[1:].rstrip("/") for line in
             (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
  assert {"pyproject.toml", "README.md"} | copied <= allowed
  assert "container/vae-tf" in allowed


def test_dockerfile_is_builder_neutral_and_keeps_index_settings_out():
  """Only what BuildKit and buildah 1.28 both read (docs/container.md), and no
  pip or CA settings baked in: those come as build secrets."""
  dockerfile = (REPO_ROOT / "Dockerfile").read_text()
  instructions = [line for line in dockerfile.splitlines() if not line.startswith("#")]
  text = "\n".join(instructions)
  assert "<<" not in text, "heredocs are BuildKit-only"
  assert not re.search(r"^(COPY|ADD)\s[^\n]*--(chmod|link|parents|exclude)", text, re.M)
  assert not re.match(r"#\s*syntax=", dockerfile), "a syntax line makes BuildKit pull a frontend"
  assert set(re.findall(r"--mount=type=(\w+)", text)) <= {"cache", "secret"}
  assert set(re.findall(r"--mount=type=secret,id=([\w-]+)", text)) == {"pip-ca", "pip-conf"}
  for setting in ("PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE",
                  "PIP_TRUSTED_HOST", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
    assert not re.search(rf"^(ENV|ARG)\b[^\n]*\b{setting}\b", text, re.M), setting
  assert not re.search(r"\.(crt|pem)\b|pip\.conf", " ".join(
      re.findall(r"^(?:COPY|ADD)\s.*$", text, re.M)))
  # Secrets are exported only inside the RUN that uses them.
  assert re.search(r"export PIP_CERT=/run/secrets/pip-ca", text)
  assert re.search(r"export PIP_CONFIG_FILE=/run/secrets/pip-conf", text)
  assert os.access(ENTRYPOINT_SCRIPT, os.X_OK)


# --- What the manifests ask of the image -------------------------------------------------


def _vae_tf_containers(objects: list[dict], variant: str):
  image = VAE_TF_IMAGES[overlay_of(variant)]
  for label, _, pod_spec in all_pods(objects):
    for container in containers_of(pod_spec):
      if container.get("image") == image:
        yield label, pod_spec, container


@pytest.mark.parametrize("variant", VARIANTS)
def test_vae_tf_containers_run_only_what_the_image_provides(built, variant):
  """Programs: the image's entry point, its Python, and the base's shell and
  sleep; modules: those the entry point runs (container/vae-tf)."""
  provided_programs = {"vae-tf", "python", "python3", "/bin/sh", "sh"}
  entry_points = _entrypoint_modules()
  assert set(entry_points) == {"train", "tune", "export", "evaluate", "client", "serve"}
  containers = list(_vae_tf_containers(built[variant], variant))
  assert len(containers) == 3
  for label, _, container in containers:
    command = container.get("command")
    assert command, f"{label}: relies on the image's entry point without a command"
    assert command[0] in provided_programs, (label, command[0])
    module = python_module(container)
    if command[0] == "vae-tf":
      assert container["args"][0] in entry_points, label
    else:
      assert module in entry_points.values(), (label, module)
    for script in command[1:]:
      for program in re.findall(r"\bexec\s+(\S+)", script):
        assert program in provided_programs | {"sleep"}, (label, program)


@pytest.mark.parametrize("variant", VARIANTS)
def test_vae_tf_containers_write_only_to_their_volumes(built, variant):
  """The root filesystem is read-only, and the image's home is not a volume:
  every folder a vae-tf program writes (run folders, exports, the search, HOME,
  TFDS) must be on a writable mount."""
  checked = 0
  for label, pod_spec, container in _vae_tf_containers(built[variant], variant):
    assert container["securityContext"]["readOnlyRootFilesystem"] is True, label
    env = literal_env(container)
    for source in container.get("envFrom", []):
      [config_map] = [obj for obj in find(built[variant], "ConfigMap")
                      if obj["metadata"]["name"] == source["configMapRef"]["name"]]
      env = {**config_map["data"], **env}
    written = {name: expand_kubernetes_vars(value, env)
               for name, value in flag_values(container).items()
               if name in ("model_dir", "export_base", "tuner_dir")}
    written.update({name: env[name] for name in ("HOME", "TFDS_DATA_DIR")})
    for name, path in written.items():
      assert path.startswith("/"), (label, name, path)
      mount = mount_of(container, path)
      assert not mount.get("readOnly"), (label, name, path)
      checked += 1
  assert checked >= 3 * 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_ports_agree_with_the_image_and_its_programs(built, variant):
  """Model servers use the ports the image's own server exposes (EXPOSE), so
  `vae-tf serve` can stand in for tensorflow/serving; the training and tuning
  containers open the ports their environment tells the program to use."""
  exposed = {int(port) for line in re.findall(r"^EXPOSE (.+)$",
                                              (REPO_ROOT / "Dockerfile").read_text(), re.M)
             for port in line.split()}
  for label, _, _, container in model_servers(built[variant]):
    if label.startswith("InferenceService/"):
      continue  # KServe's runtime picks its ports.
    ports = {entry["containerPort"] for entry in container["ports"]}
    flags = flag_values(container)
    assert ports == {int(flags["port"]), int(flags["rest_api_port"])} == exposed, label
  for label, _, container in _vae_tf_containers(built[variant], variant):
    ports = {entry["containerPort"] for entry in container.get("ports", [])}
    env = literal_env(container)
    expected = {int(env[name]) for name in ("WORKER_PORT", "KERASTUNER_ORACLE_PORT")
                if name in env and "tune-workers" not in label}
    if label.startswith("TFJob/"):
      expected = {2222}  # The operator's TF_CONFIG uses the tfjob-port.
    assert ports == expected, (label, ports, expected)


def test_model_layout_is_what_tf_serving_reads(built, tf_serving_protos):
  """TF Serving loads <base_path>/<integer version>/saved_model.pb; the export
  writes <export_base>/<model_name>/<version>/ with integer versions, and
  models.config's base_path is <export_base>/<model_name>."""
  source = (REPO_ROOT / "vae_tf" / "export.py").read_text()
  assert 'model_path = Path(export_base) / model_name' in source
  assert re.search(r"target = model_path / str\(version", source)
  objects = built["local"]
  training_pod, trainer = training_container(objects)
  flags = flag_values(trainer)
  [(label, _, server_pod, server)] = model_servers(objects)
  config = text_format.Parse(mounted_config_file(
      server_pod, server, flag_values(server)["model_config_file"], objects),
      tf_serving_protos["model_config_file"]())
  [model] = config.model_config_list.config
  assert model.base_path == posixpath.join(flags["export_base"], flags["model_name"])
  assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
