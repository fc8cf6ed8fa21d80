"""Plot helpers shared by the report sections. matplotlib is imported inside the functions that
draw or save, so importing the report does not load it."""

from __future__ import annotations

import os


def budget_curves(ax, series: dict, style) -> None:
  """Plots {label: {"N": accuracy}} against N on a log2 axis; style(label) -> fmt."""
  for k, curve in series.items():
    ns = sorted(curve, key=int)
    ax.plot([int(n) for n in ns], [curve[n] for n in ns], style(k), label=k)
  ax.set_xscale("log", base=2)


def save(fig, workdir: str, name: str) -> str:
  """Writes plots/<name> atomically (temporary file, then rename); returns its relative path."""
  import matplotlib.pyplot as plt

  fig.tight_layout()
  p = os.path.join(workdir, "plots", name)
  fig.savefig(p + ".tmp.png", dpi=110)
  os.replace(p + ".tmp.png", p)
  plt.close(fig)
  return os.path.relpath(p, workdir)
