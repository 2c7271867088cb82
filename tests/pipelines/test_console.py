"""What a pipeline prints: quiet by default, readable progress, INFO on request."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cli_helpers import REPO_ROOT, TIMEOUT_SECONDS, run

# 1000 MNIST images in blocks of 10 updates of 100: one `fit` step per epoch.
SHORT_RUN = ("--preset=modern", "--train_examples=1000", "--hidden_units=32", "--latent_dim=2",
             "--updates_per_call=10")
# The prefix of an INFO line from absl's Python logging and from TensorFlow's C++.
PYTHON_INFO = re.compile(r"I\d{4} [\d:.]+ +\d+ \S+\.py:\d+\] ")
CPP_INFO = re.compile(r"I\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\] ")
NUMBER = r"-?\d+\.\d{2,4}"  # fixed-point: 2 decimals, 4 below 1
PROGRESS = re.compile(
    rf"epoch (?P<epoch>\d)/2 +(?P<examples>[\d,]+) examples +[\d,]+ examples/s +"
    rf"(?P<timing>ETA \d+:\d\d|done in \d+:\d\d) +elbo {NUMBER} nats "
    rf"\(reconstruction {NUMBER}, kl {NUMBER}\) +validation elbo {NUMBER} nats")


def quiet_env(env: dict[str, str]) -> dict[str, str]:
  """`env` without settings that would decide the logging for the pipeline."""
  return {key: value for key, value in env.items()
          if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLED_DEVICE_TYPES",
                         "VAE_TF_CONSOLE_VERBOSITY")}


def test_train_prints_progress_and_no_info_chatter(env, tmp_path):
  result = run("pipelines.train", *SHORT_RUN, "--epochs=2", f"--model_dir={tmp_path}",
               env=quiet_env(env))

  assert result.returncode == 0, result.stderr[-3000:]
  output = result.stdout + result.stderr
  lines = output.splitlines()
  assert "cuInit" not in output
  assert "absl::InitializeLog" not in output
  assert not [line for line in lines if PYTHON_INFO.match(line) or CPP_INFO.match(line)]
  # The export at the end of training would log signature renaming at INFO.
  assert "exported" in result.stdout
  progress_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
  # Keras's bar would show fused blocks as steps and values as 1.2345e+02.
  assert not re.search(r"\de[+-]\d\d|/step", "\n".join(progress_lines))
  progress = [PROGRESS.fullmatch(line) for line in progress_lines]
  assert all(progress), result.stdout
  assert [(m["epoch"], m["examples"]) for m in progress] == [("1", "1,000"), ("2", "2,000")]
  assert progress[0]["timing"].startswith("ETA")
  assert progress[-1]["timing"].startswith("done in")


def test_verbosity_zero_brings_info_back(env, tmp_path):
  result = run("pipelines.train", *SHORT_RUN, "--epochs=1", "--verbosity=0",
               f"--model_dir={tmp_path}", env=quiet_env(env))

  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert [line for line in lines if PYTHON_INFO.match(line)], result.stderr[-3000:]
  assert [line for line in lines if CPP_INFO.match(line)], result.stderr[-3000:]


# A pipeline in miniature that builds a fresh tf.function per "model", as
# `pipelines.reproduce --parallel_runs=1` does, which TensorFlow reads as retracing.
MANY_FUNCTIONS = """
from pipelines import console
from absl import app

def main(argv):
  import tensorflow as tf
  for size in range(1, 9):
    tf.function(lambda x: x * 2.0)(tf.ones([size]))
  print("done")

app.run(main)
"""


@pytest.mark.parametrize("verbosity, advice_shown", [([], False), (["--verbosity=0"], True)],
                         ids=["default", "verbosity_0"])
def test_retracing_advice_only_at_info(env, verbosity, advice_shown):
  result = subprocess.run([sys.executable, "-c", MANY_FUNCTIONS, *verbosity], cwd=REPO_ROOT,
                          env=quiet_env(env), capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout == "done\n"
  assert ("triggered tf.function retracing" in result.stderr) == advice_shown, result.stderr


def test_tensorflow_loads_without_kerass_optional_imports_which_stay_importable(env):
  script = ("from pipelines import console\n"
            "import sys\n"
            "import tensorflow\n"
            "assert 'sklearn' not in sys.modules, 'TensorFlow loaded scikit-learn'\n"
            "assert 'matplotlib' not in sys.modules, 'TensorFlow loaded matplotlib'\n"
            "from keras_tuner.src.tuners import bayesian\n"
            "assert bayesian.sklearn is not None, 'KerasTuner found no scikit-learn'\n"
            "from vae_tf import curve_charts\n"
            "import matplotlib\n"
            "assert matplotlib.get_backend().lower() == 'agg', matplotlib.get_backend()\n"
            "print('ok')\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=quiet_env(env),
                          capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout == "ok\n"
