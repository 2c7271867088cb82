"""A quiet console for every pipeline: warnings and errors, not INFO chatter.

Imported first by each pipelines/*.py entry point, before anything loads
TensorFlow, because TensorFlow reads its logging settings from the
environment when it loads. By default only warnings and errors reach the
console; absl's own `--verbosity` flag brings the rest back:
  --verbosity=-1  (default) warnings and errors, from Python and TensorFlow's C++,
                  less TensorFlow's advice on retracing
  --verbosity=0   also INFO: absl, TFDS, TensorFlow's Python and C++ logs
  --verbosity=1   also debug
An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins for the C++ logs.

TensorFlow loads without scikit-learn and matplotlib, which Keras would import
for integrations this project does not use (over a quarter of TensorFlow's
import time, paid by every pipeline, server and subprocess); KerasTuner and our
charts still import them when they need them.

On a machine without a GPU, TensorFlow's CUDA build still probes for one and
logs `failed call to cuInit` as an ERROR; TF_ENABLED_DEVICE_TYPES=CPU keeps it
from probing at all (set TF_ENABLED_DEVICE_TYPES= to probe anyway).

Processes that a pipeline spawns (pipelines.reproduce's parallel runs) import
this module again when they re-import the entry point; they take the parent's
verbosity from the environment.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.util
import logging as std_logging
import os
import re
import sys
import tempfile

from absl import app, flags, logging

_TF_CPP_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# How a spawned child learns the verbosity its parent's flags settled on.
_CHILD_VERBOSITY = "VAE_TF_CONSOLE_VERBOSITY"
_TF_CPP_LEVEL_FROM_USER = _TF_CPP_LEVEL in os.environ

# Written to stderr while TensorFlow's libraries load, before any of our
# settings can reach their C++ logging: absl's notice that logging is not set
# up yet (once per library) and INFO lines such as cudart_stub's "Could not
# find cuda drivers on your machine".
_LOAD_TIME_CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] .*")

# Device files of accelerators TensorFlow could use: NVIDIA (also under WSL),
# AMD ROCm, TPUs.
_ACCELERATOR_DEVICES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd", "/dev/accel*")


def _has_accelerator() -> bool:
  return any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICES)


def _tf_cpp_level(verbosity: int) -> str:
  # C++ warnings stay off by default: at WARNING, tf.data logs a "Local
  # rendezvous is aborting" line at the end of every epoch.
  return "0" if verbosity >= logging.INFO else "2"


@contextlib.contextmanager
def _without_load_time_chatter():
  """Captures file descriptor 2 (C++ writes there directly, not through
  sys.stderr) and writes back every captured line but the known chatter."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
              if not _LOAD_TIME_CHATTER.fullmatch(line.rstrip("\n"))]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()


# Keras, which TensorFlow loads, imports these for optional integrations this
# project does not use through Keras (scikit-learn wrappers, a matplotlib
# image gallery): about 1.7 of the 5.1 to 5.5 CPU seconds of its import.
_HIDDEN_WHILE_TENSORFLOW_LOADS = ("sklearn", "matplotlib")


@contextlib.contextmanager
def _without_optional_imports():
  """Makes the imports of `_HIDDEN_WHILE_TENSORFLOW_LOADS` fail while
  TensorFlow loads; later imports of them (KerasTuner's of scikit-learn, our
  charts' of matplotlib) load them as usual."""
  hidden = [name for name in _HIDDEN_WHILE_TENSORFLOW_LOADS if name not in sys.modules]
  for name in hidden:
    sys.modules[name] = None  # `import name` raises ImportError
  try:
    yield
  finally:
    for name in hidden:
      if sys.modules.get(name, ...) is None:
        del sys.modules[name]


class _TensorFlowLoader(importlib.abc.Loader):
  def __init__(self, loader: importlib.abc.Loader):
    self._loader = loader

  def __getattr__(self, name):
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    # Its C++ INFO logs are off unless asked for, but the chatter comes
    # before that setting takes effect.
    quiet = os.environ.get(_TF_CPP_LEVEL) != "0"
    with _without_optional_imports(), \
        _without_load_time_chatter() if quiet else contextlib.nullcontext():
      self._loader.exec_module(module)


class _TensorFlowImport(importlib.abc.MetaPathFinder):
  """Loads TensorFlow, when something first imports it, without the chatter
  and without Keras's optional imports.

  Lazily, so that usage errors found in a pipeline's main stay instant.
  """

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _TensorFlowLoader(spec.loader)
    return spec


class _WithoutRetracingAdvice(std_logging.Filter):
  """Drops TensorFlow's "triggered tf.function retracing" advice.

  A process that trains several models (`pipelines.reproduce
  --parallel_runs=1`) builds each model's compiled functions anew, by
  design; TensorFlow takes that for a loop that retraces and says so in a
  paragraph per function.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def _set_up_tensorflow_logging(verbosity: int) -> None:
  if verbosity < logging.INFO:
    std_logging.getLogger("tensorflow").addFilter(_WithoutRetracingAdvice())
  if not _TF_CPP_LEVEL_FROM_USER:
    os.environ[_TF_CPP_LEVEL] = _tf_cpp_level(verbosity)


def _re_imported_by_a_spawned_child() -> bool:
  # multiprocessing's spawn re-imports the parent's main module as
  # __mp_main__, apart from the child's own __main__, before unpickling the
  # work (which imports TensorFlow); in the parent the two are one module.
  return sys.modules.get("__mp_main__", sys.modules["__main__"]) is not sys.modules["__main__"]


def _after_flags() -> None:
  # app.run raises an unset --verbosity to INFO once flags are parsed; this
  # runs right after that, before main.
  if not flags.FLAGS["verbosity"].present:
    flags.FLAGS.verbosity = logging.WARNING
  os.environ[_CHILD_VERBOSITY] = str(flags.FLAGS.verbosity)
  _set_up_tensorflow_logging(flags.FLAGS.verbosity)


if sys.platform == "linux" and not _has_accelerator():
  os.environ.setdefault("TF_ENABLED_DEVICE_TYPES", "CPU")
os.environ.setdefault(_TF_CPP_LEVEL, _tf_cpp_level(logging.WARNING))
if "tensorflow" not in sys.modules:
  sys.meta_path.insert(0, _TensorFlowImport())
flags.FLAGS["verbosity"].help = (
    "-1 (the default): warnings and errors only; 0: also INFO logs (absl, TensorFlow's Python "
    "and C++); 1: also debug.")

if _re_imported_by_a_spawned_child() and _CHILD_VERBOSITY in os.environ:
  logging.use_absl_handler()
  logging.set_verbosity(int(os.environ[_CHILD_VERBOSITY]))
  _set_up_tensorflow_logging(int(os.environ[_CHILD_VERBOSITY]))
else:
  app.call_after_init(_after_flags)
