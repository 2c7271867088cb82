#!/usr/bin/env python3
"""The host's pip network settings, for `pip install` inside an image build.

  pip_build_settings.py OUT_DIR [PYTHON]

Reads `PYTHON -m pip config list` (config files and PIP_* variables, as pip
itself would) and writes, when there is something to pass:
  OUT_DIR/pip.conf  the settings that reach an index: index-url,
                    extra-index-url, trusted-host, proxy, timeout, retries;
                    local paths and file:// indexes are left out, since the
                    build cannot see them;
and finds the CA bundle pip uses (`cert`). Prints `--secret id=pip-conf,src=...` / `--secret id=pip-ca,src=...` lines
for the builder. The Dockerfile mounts these secrets for its one `pip
install` and nothing of them reaches a layer.
"""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

NETWORK_OPTIONS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout",
                   "default-timeout", "retries")


def _is_local(value: str) -> bool:
  return value.startswith(("file:", "/", ".", "~"))


def main(argv: list[str]) -> int:
  out = Path(argv[1])
  python = argv[2] if len(argv) > 2 else sys.executable
  result = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                          text=True, check=False)
  if result.returncode != 0:
    return 0  # No pip on the host: the build uses pip's defaults.
  settings: dict[tuple[str, str], str] = {}
  for line in result.stdout.splitlines():
    key, sep, raw = line.partition("=")
    if not sep or "." not in key:
      continue
    section, _, name = key.rpartition(".")
    section = "global" if section in (":env:", "") else section
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    settings[(section, name)] = str(value)  # Later lines (env) override earlier ones.

  config = configparser.ConfigParser(interpolation=None)
  cert = None
  for (section, name), value in settings.items():
    if name == "cert":
      cert = value
    if name not in NETWORK_OPTIONS:
      continue
    if name in ("index-url", "extra-index-url"):
      value = " ".join(url for url in value.split() if not _is_local(url))
    if value:
      if not config.has_section(section):
        config.add_section(section)
      config.set(section, name, value)

  out.mkdir(parents=True, exist_ok=True)
  if config.sections():
    with open(out / "pip.conf", "w") as f:
      config.write(f)
    print(f"--secret=id=pip-conf,src={out / 'pip.conf'}")
  if cert and Path(cert).is_file():
    print(f"--secret=id=pip-ca,src={Path(cert).resolve()}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
