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


Curves = dict[str, Sequence[tuple[float, float]]]


def _draw(ax, curves: Curves, xlabel: str, ylabel: str, logy: bool = False,
          integer_x: bool = False, legend_below: bool = False, legend: bool = True) -> None:
  from matplotlib.ticker import MaxNLocator
  for name, pts in curves.items():
    if pts:
      x, y = zip(*pts)
      ax.plot(x, y, label=name, marker="." if len(pts) < 30 else None)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if logy:
    ax.set_yscale("log")
  if integer_x:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
  if legend and any(curves.values()):
    if legend_below:  # never over the data
      ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                ncol=min(3, len(curves)))
    else:
      ax.legend(fontsize=8)


def _save(fig, path: str) -> str:
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  import matplotlib.pyplot as plt
  plt.close(fig)
  return os.path.basename(path)


def plot_curves(path: str, curves: Curves, xlabel: str = "step", ylabel: str = "",
                title: str = "", logy: bool = False, integer_x: bool = False,
                legend_below: bool = False, ylim: tuple[float, float] | None = None) -> str:
  """Line plot of named (x, y) series, one quantity (`ylabel`), to a PNG at `path`; returns
  the file name."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.4 if legend_below else 4.0), dpi=110)
  _draw(ax, curves, xlabel, ylabel, logy, integer_x, legend_below)
  if ylim:
    ax.set_ylim(*ylim)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def plot_panels(path: str, panels: Sequence[tuple[str, Curves]], xlabel: str = "step",
                title: str = "", integer_x: bool = False) -> str:
  """One panel per quantity, side by side, and one legend below them all: `panels` is
  [(ylabel, curves), ...]; returns the file name. Panels without data are left out."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = [(label, c) for label, c in panels if any(c.values())] or list(panels[:1])
  names = list(dict.fromkeys(n for _, c in panels for n, pts in c.items() if pts))
  legend_h = 0.22 * len(names) + 0.2
  fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0 + legend_h),
                           dpi=110, squeeze=False)
  colours = {n: f"C{i}" for i, n in enumerate(names)}  # a series keeps its colour in every panel
  for ax, (ylabel, curves) in zip(axes[0], panels):
    for name, pts in curves.items():
      if pts:
        x, y = zip(*pts)
        ax.plot(x, y, label=name, color=colours[name], marker="." if len(pts) < 30 else None)
    _draw(ax, {}, xlabel, ylabel, integer_x=integer_x, legend=False)
  if title:
    fig.suptitle(title)
  handles = [plt.Line2D([], [], color=colours[n], marker=".", label=n) for n in names]
  fig.tight_layout(rect=(0, legend_h / (4.0 + legend_h), 1, 1))
  if handles:
    fig.legend(handles=handles, loc="lower center", fontsize=8, frameon=False)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return os.path.basename(path)
