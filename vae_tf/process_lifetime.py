"""Child processes that end with the process that started them.

A parent stopped by SIGKILL (or any signal it does not handle) gets no chance
to stop its children; without this, spawned workers would train or serve on.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys


def die_with_parent() -> None:
  """Called first in a multiprocessing child: SIGTERM when the parent dies
  (Linux's PR_SET_PDEATHSIG), and exit at once if it already has. Elsewhere
  than Linux, nothing."""
  if not sys.platform.startswith("linux"):
    return
  with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  # A parent that died before the call above went unnoticed by it.
  parent = multiprocessing.parent_process()
  if parent is not None and os.getppid() != parent.pid:
    os._exit(1)
