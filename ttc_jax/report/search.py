"""The search part of report.json (report["search"], the search kernels' budget curves) and
plots/search.png."""

from __future__ import annotations

from ttc_jax.report.curves import curve, curve_sets
from ttc_jax.report.plots import budget_curves, save


def section(search: dict) -> tuple[dict, dict, dict]:
  """(report["search"], extra curves, extra curves_by_level) from the eval_search stage."""
  curves, by_level = curve_sets(search["curves"], search["curves_by_level"])
  out = dict(
      questions=search["questions"],
      stats=search["stats"],
      baselines={k: curve(v) for k, v in search["baselines"].items()},
  )
  return out, curves, by_level


def plot(rep: dict, workdir: str) -> str:
  """plots/search.png: accuracy vs generation budget, search kernels and best-of-N baselines."""
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  series = {f"{k} (same questions)": v for k, v in rep["search"]["baselines"].items()}
  series.update({m: rep["curves"][m] for m in rep["search"]["stats"]})
  budget_curves(ax, series, lambda k: "o--" if "same" in k else "s-")
  ax.grid(alpha=0.3)
  ax.set_xlabel("generation budget")
  ax.set_ylabel(f"accuracy ({rep['search']['questions']} held-out questions)")
  ax.set_title("search vs best-of-N")
  ax.legend(fontsize=7)
  return save(fig, workdir, "search.png")
