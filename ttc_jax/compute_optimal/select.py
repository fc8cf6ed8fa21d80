"""Compute-optimal strategy selection per difficulty bin and budget (paper §3.2, §5.3, §6.3).

A *table* holds per-question accuracies: `table[strategy][budget]` is an array
[Q] (1/0 for one run per question, or a fraction when a question's accuracy is
averaged over several disjoint groups of samples). Strategies missing a
budget simply do not compete there.

For budget N and bin b the compute-optimal strategy is the one with the best
mean accuracy over the bin's questions. As in the paper, it is chosen by
2-fold cross-validation inside each bin: the bin's questions are split into
two folds; the strategy chosen on one fold is scored on the other, so no
question both chooses and evaluates a strategy. The curve's accuracy at N is
the mean over all questions of the held-out score of the strategy chosen
without them. Ties go to the earlier strategy in `strategies` (list the
baseline first, so a strategy must beat it to be chosen).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Table = Mapping[str, Mapping[int, np.ndarray]]


def check_table(table: Table, num_questions: int) -> None:
  for s, by_budget in table.items():
    for n, acc in by_budget.items():
      if np.shape(acc) != (num_questions,):
        raise ValueError(
            f"strategy {s!r} at budget {n}: accuracies of shape {np.shape(acc)}, "
            f"expected ({num_questions},)"
        )


def fold_assignment(bins: Sequence[int], num_folds: int = 2, seed: int = 0) -> np.ndarray:
  """Fold [Q] of every question: within each bin a seeded shuffle dealt round-robin."""
  bins = np.asarray(bins)
  folds = np.zeros(bins.shape, dtype=np.int32)
  rng = np.random.default_rng(seed)
  for b in np.unique(bins):
    idx = np.flatnonzero(bins == b)
    idx = idx[rng.permutation(idx.size)]
    folds[idx] = np.arange(idx.size) % num_folds
  return folds


def candidates(table: Table, budget: int, strategies: Sequence[str]) -> list[str]:
  return [s for s in strategies if budget in table.get(s, {})]


def choose(table: Table, idx: np.ndarray, budget: int, strategies: Sequence[str]) -> str | None:
  """The strategy with the best mean accuracy on questions `idx` at `budget` (first on ties)."""
  cands = candidates(table, budget, strategies)
  if not cands or idx.size == 0:
    return None
  means = [float(np.mean(np.asarray(table[s][budget])[idx])) for s in cands]
  return cands[int(np.argmax(means))]


def fit_choices(
    table: Table, bins: Sequence[int], budgets: Sequence[int], strategies: Sequence[str]
) -> dict[int, dict[int, str | None]]:
  """{bin: {budget: strategy}} chosen on all questions of each bin (for inference)."""
  bins = np.asarray(bins)
  return {
      int(b): {int(n): choose(table, np.flatnonzero(bins == b), n, strategies) for n in budgets}
      for b in np.unique(bins)
  }


def cross_validated(
    table: Table,
    bins: Sequence[int],
    budgets: Sequence[int],
    strategies: Sequence[str],
    num_folds: int = 2,
    seed: int = 0,
) -> dict:
  """The compute-optimal curve by cross-validation within bins.

  Returns dict(curve={N: acc}, by_bin={bin: {N: acc}}, choices={fold: {bin: {N: strategy}}},
  per_question={N: [Q] accuracies}, folds=[Q]); choices[f] were fitted on the other folds
  and evaluated on fold f.
  """
  bins = np.asarray(bins)
  q = bins.size
  check_table(table, q)
  folds = fold_assignment(bins, num_folds, seed)
  curve, by_bin, per_q = {}, {}, {}
  choices: dict[int, dict[int, dict[int, str | None]]] = {}
  for n in budgets:
    n = int(n)
    if not candidates(table, n, strategies):
      continue
    got = np.full(q, np.nan)
    for f in range(num_folds):
      for b in np.unique(bins):
        fit = np.flatnonzero((bins == b) & (folds != f))
        held = np.flatnonzero((bins == b) & (folds == f))
        if held.size == 0:
          continue
        s = choose(table, fit, n, strategies)
        if s is None:  # a bin too small to fit on: fall back to the first candidate
          s = candidates(table, n, strategies)[0]
        choices.setdefault(f, {}).setdefault(int(b), {})[n] = s
        got[held] = np.asarray(table[s][n])[held]
    curve[n] = float(np.mean(got))
    per_q[n] = got
    for b in np.unique(bins):
      by_bin.setdefault(int(b), {})[n] = float(np.mean(got[bins == b]))
  return dict(curve=curve, by_bin=by_bin, choices=choices, per_question=per_q, folds=folds)


def oracle_best(
    table: Table, bins: Sequence[int], budgets: Sequence[int], strategies: Sequence[str]
) -> dict[int, float]:
  """The same choice made and scored on the same questions (an optimistic upper bound)."""
  bins = np.asarray(bins)
  out = {}
  for n in budgets:
    if not candidates(table, int(n), strategies):
      continue
    accs = []
    for b in np.unique(bins):
      idx = np.flatnonzero(bins == b)
      s = choose(table, idx, int(n), strategies)
      accs.append(np.asarray(table[s][int(n)])[idx])
    out[int(n)] = float(np.mean(np.concatenate(accs)))
  return out


def bin_curves(table: Table, bins: Sequence[int], strategies: Sequence[str]) -> dict:
  """{strategy: {bin: {N: mean accuracy}}} for plots of strategies by difficulty."""
  bins = np.asarray(bins)
  return {
      s: {
          int(b): {
              int(n): float(np.mean(np.asarray(a)[bins == b])) for n, a in sorted(table[s].items())
          }
          for b in np.unique(bins)
      }
      for s in strategies
      if s in table
  }


def _first_reaching(curve: Mapping[int, float], acc: float) -> int | None:
  hit = [n for n, a in sorted(curve.items()) if a >= acc - 1e-12]
  return int(hit[0]) if hit else None


def efficiency(optimal: Mapping[int, float], baseline: Mapping[int, float]) -> dict:
  """Budgets at which `optimal` reaches each accuracy the baseline reaches.

  For each baseline budget N with accuracy a: baseline_budget is the smallest
  budget at which the baseline itself reaches a (N, unless its curve is flat),
  matched_budget the smallest at which `optimal` does, and ratio their quotient
  (paper: up to 4x). Measuring against baseline_budget rather than N keeps a
  flat baseline from passing for a gain. Returns {N: dict(baseline,
  baseline_budget, matched_budget, ratio)} (None where `optimal` never
  reaches a) plus "max_ratio".
  """
  out: dict = {}
  ratios = []
  for n, acc in sorted(baseline.items()):
    nb = _first_reaching(baseline, acc)
    m = _first_reaching(optimal, acc)
    r = (nb / m) if m else None
    out[int(n)] = dict(baseline=float(acc), baseline_budget=nb, matched_budget=m, ratio=r)
    if r is not None:
      ratios.append(r)
  out["max_ratio"] = max(ratios) if ratios else None
  return out
