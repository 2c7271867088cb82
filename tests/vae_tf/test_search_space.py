"""Parsing and validating search spaces, from mappings and from files."""

from __future__ import annotations

import json
import sys

import pytest

from vae_tf import search_space
from vae_tf.search_space import Choice, Range, SearchSpaceError


def test_lists_are_choices_values_are_fixed_mappings_are_ranges():
  space = search_space.parse_search_space({
      "latent_dim": [2, 5, 20],
      "hidden_units": 200,
      "learning_rate": {"min": 0.001, "max": 0.1, "sampling": "log"},
      "hidden_layers": {"min": 1, "max": 3, "step": 1},
      "estimator": ["A", "B"],
      "activation": "relu",
  })
  assert space == {
      "latent_dim": Choice((2, 5, 20)),
      "hidden_units": Choice((200,)),
      "learning_rate": Range(0.001, 0.1, None, "log"),
      "hidden_layers": Range(1, 3, 1, "linear"),
      "estimator": Choice(("A", "B")),
      "activation": Choice(("relu",)),
  }
  # Integers are accepted where a float is expected, and stored as floats.
  assert search_space.parse_search_space({"learning_rate": [1]})["learning_rate"].values == (1.0,)


def test_default_space_is_valid_and_round_trips():
  space = search_space.parse_search_space(search_space.DEFAULT_SEARCH_SPACE)
  assert search_space.search_space_to_dict(space) == search_space.DEFAULT_SEARCH_SPACE
  assert search_space.grid_size(space) == 8 * 3 * 3


def test_grid_size_counts_stepped_ranges_and_refuses_continuous_ones():
  stepped = search_space.parse_search_space(
      {"latent_dim": {"min": 2, "max": 10, "step": 2}, "estimator": ["A", "B"]})
  assert search_space.grid_size(stepped) == 5 * 2
  continuous = search_space.parse_search_space({"learning_rate": {"min": 0.01, "max": 0.1}})
  assert search_space.grid_size(continuous) is None


BAD_SPACES = {
    "unknown parameter": ({"latent_dims": [2]}, "unknown parameter(s) latent_dims; searchable: "
                          "latent_dim, hidden_units, hidden_layers, learning_rate, estimator, "
                          "num_samples, activation"),
    "empty choices": ({"latent_dim": []}, "latent_dim: the list of choices is empty"),
    "non-integer": ({"latent_dim": [2, 2.5]}, "latent_dim: 2.5 is not an integer >= 1"),
    "zero": ({"hidden_units": [0]}, "hidden_units: 0 is not an integer >= 1"),
    "boolean": ({"latent_dim": [True]}, "latent_dim: True is not an integer >= 1"),
    "string number": ({"learning_rate": ["0.1"]}, "learning_rate: '0.1' is not a number > 0"),
    "nan": ({"learning_rate": [float("nan")]}, "learning_rate: nan is not a number > 0"),
    "estimator": ({"estimator": ["C"]}, "estimator: 'C' is not one of A, B, iwae"),
    "repeats": ({"latent_dim": [2, 2]}, "latent_dim: choices repeat a value: [2, 2]"),
    "range of strings": ({"activation": {"min": "a", "max": "b"}},
                         "activation: a range needs numbers; give a list of choices"),
    "range keys": ({"latent_dim": {"min": 2, "maximum": 5}},
                   "latent_dim: a range is {min, max[, step][, sampling]}, got keys "
                   "['maximum', 'min']"),
    "empty range": ({"latent_dim": {"min": 5, "max": 5}},
                    "latent_dim: min (5) must be below max (5)"),
    "sampling": ({"learning_rate": {"min": 0.01, "max": 0.1, "sampling": "exp"}},
                 "learning_rate: sampling 'exp' is not one of linear, log, reverse_log"),
    "step": ({"latent_dim": {"min": 2, "max": 8, "step": 0}},
             "latent_dim: step 0 is not a positive int"),
    "not a mapping": ([2, 5], "a search space is a mapping of parameter to choices, got list"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_spaces_name_what_is_wrong(case):
  spec, message = BAD_SPACES[case]
  with pytest.raises(SearchSpaceError) as raised:
    search_space.parse_search_space(spec)
  assert str(raised.value) == message


def test_json_and_yaml_files_give_the_same_space(tmp_path):
  spec = {"latent_dim": [2, 3], "learning_rate": {"min": 0.01, "max": 0.1, "sampling": "log"}}
  (tmp_path / "space.json").write_text(json.dumps(spec))
  (tmp_path / "space.yaml").write_text(
      "latent_dim: [2, 3]\nlearning_rate: {min: 0.01, max: 0.1, sampling: log}\n")
  assert search_space.load_search_space_file(tmp_path / "space.json") == spec
  assert search_space.load_search_space_file(tmp_path / "space.yaml") == spec


@pytest.mark.parametrize("name, text, message", [
    ("missing.json", None, "does not exist"),
    ("space.txt", "latent_dim: [2]", "use a .json, .yaml or .yml file"),
    ("space.json", '{"latent_dim": [2,', "is not valid JSON: "),
    ("space.yml", "latent_dim: [2, 3\n", "is not valid YAML: "),
    ("space.yaml", "- 2\n- 3\n", "must hold a mapping of parameter to choices"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, text, message):
  path = tmp_path / name
  if text is not None:
    path.write_text(text)
  with pytest.raises(SearchSpaceError) as raised:
    search_space.load_search_space_file(path)
  assert str(path) in str(raised.value) and message in str(raised.value)


def test_needs_no_tensorflow():
  # So the command line reports search-space errors before heavy imports.
  import subprocess

  probe = "import sys, vae_tf.search_space; print('tensorflow' in sys.modules)"
  output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout
  assert output.strip() == "False"
