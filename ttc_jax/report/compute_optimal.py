"""The compute-optimal part of report.json and its plots (schema in docs/results.md).

report["compute_optimal"]:
  search.{oracle,predicted}.<N>           compute-optimal accuracy (2-fold CV within 5 bins)
  search.best_of_n_weighted.<N>           its baseline; search.in_sample_best.{oracle,...}
  revision.{oracle,predicted,parallel}.<N>, revision_rl.(same)
  efficiency_vs_best_of_n.{search,revision,revision_rl}.{oracle,predicted}.<N>
      = {baseline, matched_budget, ratio}, plus max_ratio
  choices / cv_choices.<family>.<measure>.<bin>.<N>   chosen strategy (bins "0" easiest)
  by_bin / baseline_by_bin.<family>.<measure>.<bin>.<N>
  difficulty: cost of estimating it, mean pass@1 / PRM score by bin, bin sizes
report["flops_matched"].<R>.<bin>: {allowed_budget, budget, small, large, gain, winner}
  (PRM search; flops_matched_revision: revisions), report["flops"], report["large_model"].
"""

from __future__ import annotations

from ttc_jax.compute_optimal.tables import revision_split
from ttc_jax.report.plots import budget_curves, save

FAMILIES = (("search", "best_of_n_weighted"), ("revision", "parallel"), ("revision_rl", "parallel"))
MEASURES = ("oracle", "predicted")


def section(co: dict) -> dict:
  """report["compute_optimal"], ["flops_matched"], ["flops_matched_revision"], ["flops"],
  ["large_model"] from the compute-optimal stages' outputs."""
  a = co["analysis"]
  out: dict = {
      "questions": a["questions"],
      "efficiency_vs_best_of_n": {},
      "choices": {},
      "cv_choices": {},
      "by_bin": {},
      "baseline_by_bin": {},
      "bin_sizes": {},
      "thresholds": {},
  }
  fams = [(f, b) for f, b in FAMILIES if f in a]
  for fam, base in fams:
    f = a[fam]
    out[fam], out["efficiency_vs_best_of_n"][fam] = family_figures(f, base)
    out[fam]["in_sample_best"] = {m: f[m]["in_sample_best"] for m in MEASURES}
    for key in ("choices", "cv_choices", "by_bin", "baseline_by_bin"):
      out[key][fam] = {m: f[m][key] for m in MEASURES}
  out["bin_sizes"] = {m: a["search"][m]["bin_sizes"] for m in MEASURES}
  out["thresholds"] = {m: a["search"][m]["thresholds"] for m in MEASURES}
  out["strategies_by_bin"] = {fam: a[fam]["oracle"]["strategies_by_bin"] for fam, _ in fams}
  out["difficulty"] = a["difficulty"]
  if "flops" not in a:  # no larger model in this run
    return dict(compute_optimal=out)
  lg, le = co.get("large") or {}, co.get("large_eval") or {}
  large = dict(
      num_params=a["flops"]["large_params"],
      train_tokens=lg.get("train_tokens"),
      final_train_metrics=lg.get("final_metrics"),
      pass_at_1=le.get("pass_at_1"),
      pass_at_1_by_level=le.get("pass_at_1_by_level"),
  )
  extra = {k: a[k] for k in ("flops_matched", "flops_matched_revision", "flops") if k in a}
  return dict(compute_optimal=out, large_model=large, **extra)


def family_figures(f: dict, base: str) -> tuple[dict, dict]:
  """({oracle, predicted, <base>}: {N: accuracy}, {oracle, predicted}: efficiency vs the
  baseline incl. max_ratio) of one family's analysis (`compute_optimal.analysis.analyse`; the
  verifier ablation's analyses have the same curve and efficiency fields)."""
  curves = {m: f[m]["curve"] for m in MEASURES}
  curves[base] = f["baseline"]
  return curves, {m: f[m]["efficiency_vs_baseline"] for m in MEASURES}


def _by_bin_axes(fig_title: str, nbins: int):
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, nbins, figsize=(3.0 * nbins, 3.2), sharey=True)
  axes = [axes] if nbins == 1 else list(axes)
  fig.suptitle(fig_title, fontsize=10)
  return fig, axes


def plot(rep: dict, workdir: str) -> list[str]:
  """compute_optimal.png (paper Fig. 1/7), search_by_difficulty.png (Fig. 4),
  revision_by_difficulty.png (Fig. 6 right/8), flops_matched.png (Fig. 9)."""
  import matplotlib.pyplot as plt

  co = rep["compute_optimal"]
  paths = []
  panels = [
      (fam_base, title)
      for fam_base, title in (
          (FAMILIES[0], "PRM search"),
          (FAMILIES[1], "revisions (SFT revision model)"),
      )
      if fam_base[0] in co
  ]
  fig, ax = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
  for a, ((fam, base), title) in zip(ax[0], panels):
    series = {
        f"{base} (baseline)": co[fam][base],
        "compute-optimal, oracle difficulty": co[fam]["oracle"],
        "compute-optimal, predicted difficulty": co[fam]["predicted"],
    }
    if fam == "revision":
      seq = rep["curves"].get("revision_sequential")
      if seq:
        series["sequential (1xN)"] = seq
    budget_curves(
        a, series, lambda k: "o--" if "baseline" in k else ("s:" if "sequential" in k else "^-")
    )
    a.set_xlabel("generation budget")
    a.set_ylabel(f"accuracy ({co['questions']} held-out questions, 2-fold CV)")
    eff = co["efficiency_vs_best_of_n"][fam]["oracle"]["max_ratio"]
    a.set_title(f"{title}: up to {eff:.1f}x fewer generations" if eff else title, fontsize=9)
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
    _clip_accuracy(a)
  paths.append(save(fig, workdir, "compute_optimal.png"))

  for fam, name, pick in (
      ("search", "search_by_difficulty.png", None),
      ("revision", "revision_by_difficulty.png", _revision_ratio),
  ):
    if fam not in co["strategies_by_bin"]:
      continue
    per = co["strategies_by_bin"][fam]
    bins = sorted(next(iter(per.values())), key=int)
    fig, axes = _by_bin_axes(f"{fam} strategies by oracle difficulty bin (0 = easiest)", len(bins))
    series_of = pick(per) if pick else per
    for b, a in zip(bins, axes):
      budget_curves(
          a,
          {s: c[b] for s, c in series_of.items() if b in c},
          lambda k: "o--" if k in ("best_of_n_weighted", "parallel") else "s-",
      )
      a.set_title(f"bin {b}", fontsize=9)
      a.set_xlabel("generation budget")
      a.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)  # shared by the bins: accuracies span 0..1
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=6)
    paths.append(save(fig, workdir, name))

  fm = {
      t: rep[k]
      for t, k in (("PRM search", "flops_matched"), ("revisions", "flops_matched_revision"))
      if k in rep
  }
  if not fm:
    return paths
  fig, ax = plt.subplots(1, len(fm), figsize=(5.5 * len(fm), 3.8), sharey=True, squeeze=False)
  for a, (title, table) in zip(ax[0], fm.items()):
    rs = list(table)
    bins = sorted(next(iter(table.values())), key=int)
    w = 0.8 / max(len(rs), 1)
    for i, r in enumerate(rs):
      gains = [table[r][b]["gain"] if table[r][b]["gain"] is not None else 0.0 for b in bins]
      a.bar(
          [int(b) + (i - (len(rs) - 1) / 2) * w for b in bins],
          gains,
          w,
          label=f"R={r} (budget {table[r][bins[0]]['budget']})",
      )
    a.axhline(0, color="k", lw=0.8)
    a.set_xticks([int(b) for b in bins])
    a.set_xlabel("oracle difficulty bin (0 = easiest)")
    a.set_title(
        f"{title}: compute-optimal small model minus " f"{rep['flops']['M']:.1f}x larger greedy",
        fontsize=9,
    )
    a.legend(fontsize=7)
  gains = [
      x["gain"]
      for t in fm.values()
      for row in t.values()
      for x in row.values()
      if x["gain"] is not None
  ] or [0.0]
  ax[0][0].set_ylim(min(min(gains) - 0.05, -0.1), max(max(gains) + 0.05, 0.1))  # shared
  ax[0][0].set_ylabel("accuracy difference")
  paths.append(save(fig, workdir, "flops_matched.png"))
  return paths


def _clip_accuracy(ax) -> None:
  lo, hi = ax.get_ylim()
  ax.set_ylim(max(lo, 0.0), min(hi, 1.02))


def _revision_ratio(per: dict) -> dict:
  """{parallel, sequential, best split}: {bin: {N: acc}} from the per-split curves."""
  out: dict = {"parallel": {}, "sequential": {}, "best split": {}}
  for name, by_bin in per.items():
    c, l = revision_split(name)
    for b, curve in by_bin.items():
      for n, acc in curve.items():
        if l == 1:
          out["parallel"].setdefault(b, {})[n] = acc
        if c == 1:
          out["sequential"].setdefault(b, {})[n] = acc
        best = out["best split"].setdefault(b, {})
        best[n] = max(best.get(n, 0.0), acc)
  return out


def markdown(rep: dict) -> list[str]:
  co = rep["compute_optimal"]
  lines = ["", "## Compute-optimal scaling", ""]
  for fam, base in FAMILIES:
    if fam not in co:
      continue
    for m in MEASURES:
      e = co["efficiency_vs_best_of_n"][fam][m]["max_ratio"]
      lines.append(
          f"{fam} ({m} bins): "
          + ", ".join(
              f"N={n}: {v:.3f} vs {co[fam][base].get(n, float('nan')):.3f}"
              for n, v in co[fam][m].items()
          )
          + (f"; up to {e:.1f}x fewer generations" if e else "")
      )
  if "flops_matched" not in rep:
    return lines
  lines += [
      "",
      f"FLOPs-matched (small vs {rep['flops']['M']:.2f}x larger model, oracle bins):",
      "",
      "| R | bin | budget | small | large | winner |",
      "|---|---|---|---|---|---|",
  ]
  for r, row in rep["flops_matched"].items():
    for b, x in row.items():
      small = "-" if x["small"] is None else f"{x['small']:.3f}"
      lines.append(f"| {r} | {b} | {x['budget']} | {small} | {x['large']:.3f} | {x['winner']} |")
  return lines
