"""The verifier-ablation part of report.json and plots/verifier_ablation.png (schema in
docs/results.md).

report["verifier_ablation"].<source> (every label source, the main PRM's included):
  step_auroc, first_error_accuracy        on the eval_policy samples (exact step labels)
  curves.<method>.<G>                     search kernels guided by this PRM, and its
                                          prm_best_of_n_weighted / majority on the same questions
  compute_optimal.search.{oracle,predicted,best_of_n_weighted}.<N>   the search family's
                                          compute-optimal curve with this PRM (2-fold CV in bins)
  efficiency_max_ratio                    max generations saved vs best-of-N weighted (oracle bins)
  efficiency_max_ratio_by_measure.{oracle,predicted}
  search_gain_by_bin.<bin>                best search method in the bin minus best-of-N weighted,
                                          at `search_gain_budget` (oracle bins, "0" easiest)
report["verifier_ablation_main"]: the main PRM's source.
"""

from __future__ import annotations

from ttc_jax.report.compute_optimal import MEASURES, family_figures
from ttc_jax.report.curves import curve
from ttc_jax.report.plots import save

BASELINE = "best_of_n_weighted"  # compute_optimal.tables.BASELINE


def search_gain(strategies_by_bin: dict) -> tuple[int | None, dict]:
  """(G, {bin: gain}): per oracle bin, the best search method's accuracy minus best-of-N
  weighted at the largest budget G both have."""
  base = strategies_by_bin.get(BASELINE, {})
  methods = {k: v for k, v in strategies_by_bin.items() if k != BASELINE}
  common = set()
  for by_bin in base.values():
    common |= {int(n) for n in by_bin}
  ours = set()
  for per in methods.values():
    for by_bin in per.values():
      ours |= {int(n) for n in by_bin}
  budgets = sorted(common & ours)
  if not budgets:
    return None, {}
  g = str(budgets[-1])
  out = {}
  for b, by_n in base.items():
    accs = [per[b][g] for per in methods.values() if b in per and g in per[b]]
    if accs and g in by_n:
      out[str(b)] = float(max(accs) - by_n[g])
  return int(g), out


def section(ab: dict) -> dict:
  """report["verifier_ablation"] (and ["verifier_ablation_main"]) from the stage outputs."""
  out = {}
  for src, s in ab["sources"].items():
    row: dict = dict(
        step_auroc=s["eval"]["step_auroc"],
        first_error_accuracy=s["eval"]["first_error_accuracy"],
        first_error_accuracy_fixed=s["eval"].get("first_error_accuracy_fixed"),
        threshold=s["eval"].get("threshold"),
    )
    if "search" in s:
      curves = {k: curve(v) for k, v in s["search"]["curves"].items()}
      curves.update({k: curve(v) for k, v in s["search"]["baselines"].items()})
      row["curves"] = curves
    if "train" in s:
      row["train"] = s["train"]
    a = s.get("analysis")
    if a is not None:
      figures, eff = family_figures(a, BASELINE)
      row["compute_optimal"] = dict(search={k: curve(v) for k, v in figures.items()})
      row["compute_optimal"]["questions"] = a["questions"]
      row["efficiency_max_ratio_by_measure"] = {m: eff[m]["max_ratio"] for m in MEASURES}
      row["efficiency_max_ratio"] = eff["oracle"]["max_ratio"]
      row["search_gain_budget"], row["search_gain_by_bin"] = search_gain(
          a["oracle"]["strategies_by_bin"]
      )
    out[src] = row
  return dict(verifier_ablation=out, verifier_ablation_main=ab["main"])


def plot(rep: dict, workdir: str) -> str:
  """plots/verifier_ablation.png: search gain over best-of-N weighted (per oracle difficulty
  bin) against each verifier's step AUROC."""
  import matplotlib.pyplot as plt

  ab = rep["verifier_ablation"]
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  bins = sorted({b for r in ab.values() for b in r.get("search_gain_by_bin", {})}, key=int)
  budget = next(
      (r.get("search_gain_budget") for r in ab.values() if "search_gain_budget" in r), None
  )
  for b in bins:
    pts = sorted(
        (r["step_auroc"], r["search_gain_by_bin"][b], src)
        for src, r in ab.items()
        if r.get("step_auroc") is not None and b in r.get("search_gain_by_bin", {})
    )
    if pts:
      ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"oracle bin {b}")
  for src, r in ab.items():
    if r.get("step_auroc") is not None:
      ax.annotate(src, (r["step_auroc"], 0.0), fontsize=7, rotation=30, alpha=0.7)
  ax.axhline(0, color="k", lw=0.8)
  ax.grid(alpha=0.3)
  ax.set_xlabel("verifier step AUROC (exact step labels, eval_policy samples)")
  ax.set_ylabel(f"best search minus best-of-N weighted @ G={budget}")
  ax.set_title("verifier ablation: search gain vs verifier quality (bin 0 = easiest)", fontsize=9)
  if bins:
    ax.legend(fontsize=7)
  return save(fig, workdir, "verifier_ablation.png")


def markdown(rep: dict) -> list[str]:
  ab = rep["verifier_ablation"]
  lines = [
      "",
      f"## Verifier ablation (main PRM: {rep.get('verifier_ablation_main')})",
      "",
      "| label source | step AUROC | first-error acc. | compute-optimal (oracle) @ max N "
      "| max efficiency vs best-of-N |",
      "|---|---|---|---|---|",
  ]

  def f(x):
    return "-" if x is None else f"{x:.3f}"

  for src, r in ab.items():
    co = r.get("compute_optimal", {}).get("search", {}).get("oracle", {})
    top = co[max(co, key=int)] if co else None
    eff = r.get("efficiency_max_ratio")
    lines.append(
        f"| {src} | {f(r['step_auroc'])} | {f(r['first_error_accuracy'])} | {f(top)} | "
        + ("-" if eff is None else f"{eff:.1f}x")
        + " |"
    )
  return lines
