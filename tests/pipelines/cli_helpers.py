"""Running the pipelines as a user does: real subprocesses of `python -m`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 240


def start(module: str, *flags: str, env: dict[str, str]) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", module, *flags], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen,
           timeout: float = TIMEOUT_SECONDS) -> subprocess.CompletedProcess:
  stdout, stderr = process.communicate(timeout=timeout)
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run(module: str, *flags: str, env: dict[str, str]) -> subprocess.CompletedProcess:
  return finish(start(module, *flags, env=env))


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
  return result.stderr.strip().splitlines()
