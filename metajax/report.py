"""Building blocks of `report.md`: confidence intervals, tables, plots."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def mean_ci95(values) -> tuple[float, float]:
  """Mean and the half-width of its 95% normal confidence interval (1.96·s/√n)."""
  v = np.asarray(values, dtype=np.float64).ravel()
  if v.size < 2:
    return float(v.mean()) if v.size else float("nan"), float("nan")
  return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(v.size))


def md_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
  """A GitHub-flavoured Markdown table."""
  def cell(x):
    return f"{x:.4g}" if isinstance(x, float) else str(x)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
  return "\n".join(lines)


def plot_curves(path: str, curves: dict[str, Sequence[tuple[float, float]]],
                xlabel: str = "step", ylabel: str = "", title: str = "",
                logy: bool = False) -> str:
  """Line plot of named (x, y) series to a PNG at `path`; returns the file name."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
  for name, pts in curves.items():
    if pts:
      x, y = zip(*pts)
      ax.plot(x, y, label=name, marker="." if len(pts) < 30 else None)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return os.path.basename(path)
