"""map_in_processes' workers end with the process that started them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from vae_tf.reproduction import workers

# Two jobs that would sleep for a minute, in two worker processes.
_PARENT = ("from vae_tf.reproduction import workers; import time; "
           "workers.map_in_processes(time.sleep, [60, 60], parallel_runs=2)")


def test_jobs_run_in_order_in_worker_processes():
  assert workers.map_in_processes(abs, [-3, 2, -1], parallel_runs=2) == [3, 2, 1]


def test_workers_die_with_a_killed_parent():
  parent = subprocess.Popen([sys.executable, "-c", _PARENT])
  try:
    process = psutil.Process(parent.pid)
    deadline = time.monotonic() + 120
    while len(children := [c for c in process.children() if "spawn_main" in " ".join(
        c.cmdline())]) < 2:
      assert time.monotonic() < deadline, "the workers did not start"
      time.sleep(0.2)
    parent.send_signal(signal.SIGKILL)  # no chance to clean up
    parent.wait(30)
    _, alive = psutil.wait_procs(children, timeout=90)  # one may still be starting
    assert not alive, f"workers outlived their parent: {[c.pid for c in alive]}"
  finally:
    if parent.poll() is None:
      parent.kill()
