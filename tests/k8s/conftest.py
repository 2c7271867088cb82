"""Fixtures: the overlays built once per session, and the schemas to check them."""

from __future__ import annotations

import shutil

import pytest
import yaml

from k8s_helpers import (CRD_DIR, CRD_FILES, VARIANTS, YamlLoader, build_variant, crd_schema,
                         disallow_unknown_fields)


@pytest.fixture(scope="session")
def kubectl() -> str:
  path = shutil.which("kubectl")
  if path is None:
    pytest.skip("kubectl not found on PATH: the kustomize overlays cannot be built "
                "(kubectl 1.32 bundles kustomize v5)")
  return path


@pytest.fixture(scope="session")
def built(kubectl, tmp_path_factory) -> dict[str, list[dict]]:
  """Variant name -> the objects `kubectl kustomize` renders for it."""
  return {name: build_variant(kubectl, overlay, components, tmp_path_factory.mktemp(name))
          for name, (overlay, components) in VARIANTS.items()}


@pytest.fixture(scope="session")
def crd_validators() -> dict[tuple[str, str], object]:
  """(apiVersion, kind) -> a JSON Schema validator from the published CRD."""
  jsonschema = pytest.importorskip("jsonschema")
  missing = [name for name in CRD_FILES.values() if not (CRD_DIR / name).is_file()]
  if missing:
    pytest.skip(f"CRD schemas not found: {', '.join(missing)} missing from {CRD_DIR}")
  validators = {}
  for (api_version, kind), name in CRD_FILES.items():
    crd = yaml.load((CRD_DIR / name).read_text(), Loader=YamlLoader)
    assert crd["spec"]["names"]["kind"] == kind, f"{name} defines {crd['spec']['names']['kind']}"
    schema = disallow_unknown_fields(crd_schema(crd, api_version))
    # Structural OpenAPI v3 schemas use the draft-4 keywords.
    validators[(api_version, kind)] = jsonschema.Draft4Validator(schema)
  return validators


@pytest.fixture(scope="session")
def kubernetes_validate():
  return pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate is not installed (the dev extra)")
