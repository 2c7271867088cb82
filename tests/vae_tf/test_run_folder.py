"""`vae_tf.run_folder`: the one record-or-refuse of settings, and its light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vae_tf import run_folder


def refuse(saved, differences):
  return ValueError(f"holds other settings ({differences})")


def test_the_first_record_wins_and_others_are_compared_with_it(tmp_path):
  path = tmp_path / "sub" / "settings.json"
  run_folder.record_or_refuse(path, {"b": (1, 2), "a": {"x": 1}}, refuse)
  assert path.read_text() == json.dumps({"a": {"x": 1}, "b": [1, 2]}, indent=2)
  run_folder.record_or_refuse(path, {"a": {"x": 1}, "b": [1, 2]}, refuse)
  with pytest.raises(ValueError, match=r"^holds other settings \(a: saved \{'x': 1\}, "
                                       r"requested \{'x': 2\}; c: saved None, requested 3\)$"):
    run_folder.record_or_refuse(path, {"a": {"x": 2}, "b": [1, 2], "c": 3}, refuse)
  assert [p.name for p in path.parent.iterdir()] == ["settings.json"]


def test_compared_picks_what_must_match(tmp_path):
  path = tmp_path / "settings.json"
  run_folder.record_or_refuse(path, {"where_to_stop": 1, "rate": 0.1}, refuse)
  only_rate = {"compared": lambda settings: {"rate": settings["rate"]}}
  run_folder.record_or_refuse(path, {"where_to_stop": 2, "rate": 0.1}, refuse, **only_rate)
  with pytest.raises(ValueError, match=r"\(rate: saved 0\.1, requested 0\.2\)"):
    run_folder.record_or_refuse(path, {"where_to_stop": 2, "rate": 0.2}, refuse, **only_rate)


def test_name_lists_and_shared_flags_load_without_tensorflow():
  """So the command lines check names and flags before anything heavy loads."""
  code = ("import sys; import pipelines.flags_common, vae_tf.reproduction.budgets, "
          "vae_tf.search_space, vae_tf.run_folder; "
          "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
  assert result.stdout.strip() == "[]"
