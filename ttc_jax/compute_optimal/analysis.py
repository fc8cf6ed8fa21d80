"""The compute-optimal analysis of one family of strategies (search, or revisions).

`analyse` bins the questions by each difficulty measure, cross-validates the
per-bin choice of strategy at every budget (`select.cross_validated`) and
compares the resulting curve with the family's baseline (best-of-N weighted
for search, parallel sampling for revisions).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ttc_jax.compute_optimal import difficulty, select


def baseline_curve(table: select.Table, baseline: Mapping[int, str]) -> dict[int, float]:
  """{N: mean accuracy} of the baseline strategy named for each budget."""
  return {
      int(n): float(np.mean(table[s][int(n)]))
      for n, s in sorted(baseline.items())
      if s in table and int(n) in table[s]
  }


def analyse(
    table: select.Table,
    strategies: Sequence[str],
    budgets: Sequence[int],
    baseline: Mapping[int, str],
    measures: Mapping[str, Sequence[float]],
    *,
    num_bins: int = 5,
    num_folds: int = 2,
    seed: int = 0,
) -> dict:
  """Compute-optimal curves for every difficulty measure (e.g. oracle, predicted).

  Returns {measure: dict(curve, by_bin, baseline_by_bin, choices (fitted on all
  questions of a bin, for inference), cv_choices, thresholds, bin_sizes,
  in_sample_best, strategies_by_bin, efficiency_vs_baseline)} plus
  "baseline": {N: acc} and "strategies".
  """
  base_names = dict(baseline)
  base = baseline_curve(table, base_names)
  out: dict = dict(baseline=base, strategies=list(strategies), budgets=[int(b) for b in budgets])
  for name, values in measures.items():
    bins, thresholds = difficulty.quantile_bins(values, num_bins)
    cv = select.cross_validated(table, bins, budgets, strategies, num_folds, seed)
    base_by_bin = {
        int(b): {
            int(n): float(np.mean(np.asarray(table[s][int(n)])[bins == b]))
            for n, s in base_names.items()
            if int(n) in table.get(s, {})
        }
        for b in np.unique(bins)
    }
    out[name] = dict(
        curve=cv["curve"],
        by_bin=cv["by_bin"],
        baseline_by_bin=base_by_bin,
        choices=select.fit_choices(table, bins, budgets, strategies),
        cv_choices=cv["choices"],
        thresholds=thresholds.tolist(),
        bins=bins.tolist(),
        folds=cv["folds"].tolist(),
        bin_sizes={int(b): int(np.sum(bins == b)) for b in np.unique(bins)},
        bin_mean_value={
            int(b): float(np.mean(np.asarray(values)[bins == b])) for b in np.unique(bins)
        },
        in_sample_best=select.oracle_best(table, bins, budgets, strategies),
        strategies_by_bin=select.bin_curves(table, bins, strategies),
        efficiency_vs_baseline=select.efficiency(cv["curve"], base),
    )
  return out
