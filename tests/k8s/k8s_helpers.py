"""Building the kustomize overlays and reading what they contain."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
# Published CRD schemas, kept beside the repository (no internet here).
CRD_DIR = REPO_ROOT.parent / "shared" / "k8s-crds"
CRD_FILES = {
    ("kubeflow.org/v1", "TFJob"): "kubeflow.org_tfjobs.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
}
# The kubectl these machines have; the API the manifests target.
KUBERNETES_VERSION = "1.32"

OVERLAYS = ("local", "cluster")
COMPONENTS = ("tfjob", "kserve")
# Each overlay as shipped, and with every optional component switched on (as
# a user would by uncommenting its `components:` lines).
VARIANTS = {
    **{overlay: (overlay, ()) for overlay in OVERLAYS},
    **{f"{overlay}+operators": (overlay, COMPONENTS) for overlay in OVERLAYS},
}

# KServe's TensorFlow Serving runtime listens for REST here (its
# ClusterServingRuntime's --rest_api_port); the InferenceService cannot change it.
KSERVE_TENSORFLOW_REST_PORT = 8080
KSERVE_CONTAINER_NAME = "kserve-container"

YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KustomizeError(AssertionError):
  pass


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
  result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60, check=False)
  if result.returncode != 0:
    raise KustomizeError(f"kubectl kustomize {directory} failed:\n{result.stderr.strip()}")
  return [document for document in yaml.load_all(result.stdout, Loader=YamlLoader) if document]


def build_variant(kubectl: str, overlay: str, components: tuple[str, ...],
                  scratch: Path) -> list[dict[str, Any]]:
  """Builds overlays/<overlay>, with `components` added to its kustomization.

  Components must go inside the overlay (the overlay's image and size patches
  apply to what they add), so the tree is copied and the copy's overlay edited.
  """
  if not components:
    return kustomize(kubectl, K8S_DIR / "overlays" / overlay)
  tree = scratch / "k8s"
  shutil.copytree(K8S_DIR, tree, ignore=shutil.ignore_patterns("README.md"))
  kustomization_file = tree / "overlays" / overlay / "kustomization.yaml"
  kustomization = yaml.safe_load(kustomization_file.read_text())
  kustomization["components"] = [f"../../components/{name}" for name in components]
  kustomization_file.write_text(yaml.safe_dump(kustomization, sort_keys=False))
  return kustomize(kubectl, tree / "overlays" / overlay)


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
  return [obj for obj in objects
          if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)]


def find_one(objects: list[dict], kind: str, name: str) -> dict:
  found = find(objects, kind, name)
  assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
  return found[0]


# --- Pod templates --------------------------------------------------------------


def pod_templates(obj: dict) -> list[tuple[str, dict, dict]]:
  """(label, pod metadata, pod spec) of every pod `obj` creates; [] for non-workloads.

  An InferenceService's predictor is a pod spec whose container is `model`
  (KServe names it kserve-container), so it is returned in that shape.
  """
  kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
  if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
    template = spec["template"]
    return [(f"{kind}/{name}", template.get("metadata", {}), template["spec"])]
  if kind == "CronJob":
    template = spec["jobTemplate"]["spec"]["template"]
    return [(f"{kind}/{name}", template.get("metadata", {}), template["spec"])]
  if kind == "Pod":
    return [(f"Pod/{name}", obj["metadata"], spec)]
  if kind == "TFJob":
    return [(f"TFJob/{name}/{role}", replica["template"].get("metadata", {}),
             replica["template"]["spec"])
            for role, replica in spec["tfReplicaSpecs"].items()]
  if kind == "InferenceService":
    predictor = copy.deepcopy(spec["predictor"])
    containers = predictor.pop("containers", [])
    model = predictor.pop("model", None)
    if model is not None:
      containers = [{"name": KSERVE_CONTAINER_NAME, **model}, *containers]
    metadata = {"labels": predictor.pop("labels", {}),
                "annotations": predictor.pop("annotations", {})}
    pod_spec = {**predictor, "containers": containers}
    return [(f"InferenceService/{name}/predictor", metadata, pod_spec)]
  return []


def containers_of(pod_spec: dict) -> list[dict]:
  return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def all_pods(objects: list[dict]) -> Iterator[tuple[str, dict, dict]]:
  for obj in objects:
    yield from pod_templates(obj)


_QUANTITY_SUFFIXES = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
  """A Kubernetes resource quantity ("500m", "2", "1536Mi") as a number."""
  match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", str(value))
  if not match or match.group(2) not in _QUANTITY_SUFFIXES:
    raise ValueError(f"not a resource quantity: {value!r}")
  return float(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2)]


def pod_problems(pod_spec: dict) -> list[str]:
  """What keeps a pod spec from the hardening and sizing every pod must have."""
  problems = []
  security = pod_spec.get("securityContext", {})
  if security.get("runAsNonRoot") is not True:
    problems.append("pod securityContext.runAsNonRoot is not true")
  if security.get("runAsUser") == 0:
    problems.append("pod runs as uid 0")
  if security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
    problems.append("pod seccompProfile is not RuntimeDefault")
  for field in ("hostNetwork", "hostPID", "hostIPC"):
    if pod_spec.get(field):
      problems.append(f"pod sets {field}")
  volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
  for volume in volumes.values():
    if "hostPath" in volume:
      problems.append(f"volume {volume['name']} is a hostPath")
  for container in containers_of(pod_spec):
    where = f"container {container['name']}"
    context = container.get("securityContext", {})
    if context.get("allowPrivilegeEscalation") is not False:
      problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if context.get("privileged"):
      problems.append(f"{where}: privileged")
    if context.get("readOnlyRootFilesystem") is not True:
      problems.append(f"{where}: readOnlyRootFilesystem is not true")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
      problems.append(f"{where}: capabilities do not drop ALL")
    if capabilities.get("add"):
      problems.append(f"{where}: adds capabilities {capabilities['add']}")
    if context.get("runAsUser") == 0:
      problems.append(f"{where}: runs as uid 0")
    # TensorFlow, Keras and the servers write temporary files.
    tmp_mounts = [mount for mount in container.get("volumeMounts", [])
                  if mount["mountPath"] == "/tmp"]
    if not tmp_mounts or "emptyDir" not in volumes.get(tmp_mounts[0]["name"], {}):
      problems.append(f"{where}: /tmp is not an emptyDir")
    resources = container.get("resources", {})
    for resource in ("cpu", "memory"):
      request = resources.get("requests", {}).get(resource)
      limit = resources.get("limits", {}).get(resource)
      if request is None or limit is None:
        problems.append(f"{where}: no {resource} request and limit")
      elif quantity(limit) < quantity(request):
        problems.append(f"{where}: {resource} limit {limit} is below its request {request}")
  return problems


# --- Commands -------------------------------------------------------------------


def expand_kubernetes_vars(value: str, env: dict[str, str]) -> str:
  """$(NAME) in command and args, as the kubelet expands it from the container's env."""
  return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda match: env.get(match.group(1), match.group(0)), value)


def literal_env(container: dict) -> dict[str, str]:
  return {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}


def python_module(container: dict) -> str | None:
  """The module a container runs with `python -m`, directly or from a shell script."""
  match = re.search(r"\bpython3?\s+-m\s+([\w.]+)", " ".join(container.get("command", [])))
  return match.group(1) if match else None


def flag_names(container: dict) -> list[str]:
  """Names of the --flags a container passes to its program.

  They come from `args`, from the command after `python -m <module>`, and,
  when the command is a shell script, from its `python -m <module> --flag` lines.
  """
  tokens = [*container.get("args", [])]
  command = container.get("command", [])
  if command[:2] in (["python", "-m"], ["python3", "-m"]):
    tokens += command[3:]
  else:
    for script in command:
      for flags in re.findall(r"\bpython3?\s+-m\s+[\w.]+((?:[ \t]+--[\w-]+(?:=\S*)?)*)",
                              script):
        tokens += flags.split()
  return [token[2:].split("=", 1)[0] for token in tokens if token.startswith("--")]


def mounted_config_file(pod_spec: dict, container: dict, path: str,
                        objects: list[dict]) -> str:
  """The contents of the file at `path` in `container`, which a ConfigMap must provide."""
  volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
  for mount in container.get("volumeMounts", []):
    prefix = mount["mountPath"].rstrip("/") + "/"
    if path.startswith(prefix):
      volume = volumes[mount["name"]]
      assert "configMap" in volume, f"{path} is on volume {mount['name']}, not a ConfigMap"
      config_map = find_one(objects, "ConfigMap", volume["configMap"]["name"])
      key = path[len(prefix):]
      assert key in config_map.get("data", {}), f"ConfigMap {config_map['metadata']['name']} " \
          f"has no key {key} for {path}"
      return config_map["data"][key]
  raise AssertionError(f"no volume of container {container['name']} holds {path}")


# --- CRD schemas ----------------------------------------------------------------


def crd_schema(crd: dict, api_version: str) -> dict:
  version = api_version.split("/")[1]
  for entry in crd["spec"]["versions"]:
    if entry["name"] == version:
      return entry["schema"]["openAPIV3Schema"]
  raise KeyError(f"{crd['metadata']['name']} has no version {version}")


def disallow_unknown_fields(schema: Any) -> Any:
  """A copy of an OpenAPI schema that rejects fields it does not declare.

  The API server drops undeclared fields of a custom resource (kubectl warns,
  or refuses with --validate=strict), so a misspelled field would silently do
  nothing; plain JSON Schema would accept it.
  """
  if isinstance(schema, list):
    return [disallow_unknown_fields(item) for item in schema]
  if not isinstance(schema, dict):
    return schema
  strict = dict(schema)
  if "properties" in strict:
    strict["properties"] = {name: disallow_unknown_fields(sub)
                            for name, sub in strict["properties"].items()}
    if ("additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")):
      strict["additionalProperties"] = False
  for key in ("items", "not"):
    if isinstance(strict.get(key), dict):
      strict[key] = disallow_unknown_fields(strict[key])
  if isinstance(strict.get("additionalProperties"), dict):
    strict["additionalProperties"] = disallow_unknown_fields(strict["additionalProperties"])
  for key in ("allOf", "anyOf", "oneOf"):
    if key in strict:
      strict[key] = disallow_unknown_fields(strict[key])
  return strict
