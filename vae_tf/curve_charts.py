"""Matplotlib charts of numbers: learning curves and search results.

Pictures made of the model's images are `vae_tf.image_grids`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402


def _save(figure, path: str | os.PathLike) -> Path:
  figure.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, format="png")
  plt.close(figure)
  return path


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
  return _save(figure, path)


class Line(NamedTuple):
  """One curve of a panel: y against x, drawn in `color` with `linestyle`."""

  label: str
  x: Sequence[float]
  y: Sequence[float]
  color: str
  linestyle: str = "-"


def save_line_panels(panels: dict[str, Sequence[Line]], path: str | os.PathLike, *,
                     xlabel: str, ylabel: str, ncols: int = 3, log_x: bool = True) -> Path:
  """A grid of panels, one per title in `panels`, each with its lines and a legend."""
  nrows = -(-len(panels) // ncols)
  ncols = min(ncols, len(panels))
  figure, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.5 * nrows), dpi=100,
                              squeeze=False)
  for ax, (title, lines) in zip(axes.ravel(), panels.items()):
    for line in lines:
      ax.plot(line.x, line.y, color=line.color, linestyle=line.linestyle, marker=".",
              label=line.label)
    if log_x:
      ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  for ax in axes.ravel()[len(panels):]:
    ax.set_visible(False)
  return _save(figure, path)
