"""A process's role in a distributed search, from KerasTuner's environment.

Kept free of TensorFlow and KerasTuner imports, so `pipelines.tune` can refuse
a bad setup before loading them.
"""

from __future__ import annotations

import os

KERASTUNER_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def distributed_role(environ=os.environ) -> str:
  """'chief', 'worker' or 'standalone', from KerasTuner's environment variables."""
  present = [name for name in KERASTUNER_ENV if environ.get(name)]
  if not present:
    return "standalone"
  missing = [name for name in KERASTUNER_ENV if name not in present]
  if missing:
    raise ValueError(f"distributed tuning needs all of {', '.join(KERASTUNER_ENV)}; "
                     f"{', '.join(missing)} not set")
  port = environ["KERASTUNER_ORACLE_PORT"]
  if not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"KERASTUNER_ORACLE_PORT must be a port number, got {port!r}")
  # KerasTuner's own rule: any tuner id containing "chief" runs the oracle.
  return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"
