"""Matplotlib charts of numbers (image grids live in `vae_tf.plotting`)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402


def save_best_by_parameter(xs, ys, path: str | os.PathLike, *, xlabel: str, ylabel: str,
                           title: str, log_x: bool = False) -> Path:
  """Every (x, y) point, and a line through the best (highest) y at each x."""
  best = {}
  for x, y in zip(xs, ys):
    best[x] = max(y, best.get(x, y))
  figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
  axes.scatter(xs, ys, s=18, alpha=0.5, label="trial")
  keys = sorted(best)
  axes.plot(keys, [best[k] for k in keys], marker="o", label="best")
  if log_x:
    axes.set_xscale("log")
    axes.set_xticks(keys, [str(k) for k in keys])
    axes.minorticks_off()
  axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
  axes.grid(alpha=0.3)
  axes.legend()
  figure.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, format="png")
  plt.close(figure)
  return path
