"""Measuring revision chains: accuracy by budget split, pass@1 by step, answer flips.

A question's chains are `answers[c][t]` (chain c, step t; chains may have
different lengths, see `chains.chain_lengths`), with `correct[c][t]` from
the exact grader and optional verifier `scores[c][t]`. A budget N split as C
chains x L steps uses the first L attempts of the first C chains, and one answer
is chosen from them by majority or hierarchical ORM selection
(`ttc_jax.selection.chains`, paper §6.2).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ttc_jax.revision import chains as chains_lib
from ttc_jax.selection.aggregate import Equiv
from ttc_jax.selection.chains import SELECTIONS, select


def split_correct(
    records: Sequence[dict], c: int, l: int, how: str, equivalent: Equiv
) -> np.ndarray:
  """Correctness [Q] of `how` on the first l attempts of the first c chains of each question.

  records: dicts with `answers` [C][T], `target`, and `scores` [C][T] for "orm".
  """
  out = []
  for r in records:
    ans = [ch[:l] for ch in r["answers"][:c]]
    if len(ans) < c or any(len(ch) < l for ch in ans):
      raise ValueError(f"question {r.get('question')!r} has too few attempts for {c} x {l}")
    sc = None if how == "majority" else [ch[:l] for ch in r["scores"][:c]]
    out.append(bool(equivalent(select(how, ans, sc, equivalent), r["target"])))
  return np.asarray(out, dtype=np.float64)


def paired_gain(
    base: Sequence[dict], other: Sequence[dict], c: int, l: int, how: str, equivalent: Equiv
) -> dict:
  """`other` minus `base` in accuracy of the c x l split, paired by question.

  Both record lists must cover the same questions in the same order. Returns
  gain (mean of the per-question differences), standard_error (their sample
  standard deviation / sqrt(Q); NaN for one question) and questions (Q).
  """
  if [r.get("question") for r in base] != [r.get("question") for r in other]:
    raise ValueError("paired_gain needs both record lists over the same questions, in order")
  d = split_correct(other, c, l, how, equivalent) - split_correct(base, c, l, how, equivalent)
  se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
  return dict(
      gain=float(np.mean(d)) if d.size else float("nan"), standard_error=se, questions=int(d.size)
  )


def split_accuracy(records: Sequence[dict], c: int, l: int, how: str, equivalent: Equiv) -> float:
  """Mean over questions of `split_correct`."""
  acc = split_correct(records, c, l, how, equivalent)
  return float(np.mean(acc)) if acc.size else float("nan")


def budget_curves(
    records: Sequence[dict],
    budgets: Sequence[int],
    equivalent: Equiv,
    selections: Sequence[str] = SELECTIONS,
) -> dict:
  """Accuracy by budget for every split, plus sequential / parallel / best ratio.

  Returns {"splits": {sel: {N: {"CxL": acc}}}, "sequential": {sel: {N: acc}},
  "parallel": {...}, "best_ratio": {sel: {N: acc}}, "best_split": {sel: {N: "CxL"}}}.
  The best ratio is chosen on these same questions (an oracle choice: the
  cross-validated per-difficulty choice is the compute-optimal analysis).
  """
  out = {
      k: {s: {} for s in selections}
      for k in ("splits", "sequential", "parallel", "best_ratio", "best_split")
  }
  for sel in selections:
    for n in budgets:
      accs = {
          f"{c}x{l}": split_accuracy(records, c, l, sel, equivalent)
          for c, l in chains_lib.splits(int(n))
      }
      out["splits"][sel][int(n)] = accs
      out["parallel"][sel][int(n)] = accs[f"{n}x1"]
      out["sequential"][sel][int(n)] = accs[f"1x{n}"]
      best = max(accs, key=lambda k: (accs[k], -list(accs).index(k)))
      out["best_ratio"][sel][int(n)] = accs[best]
      out["best_split"][sel][int(n)] = best
  return out


def pass_at_step(records: Sequence[dict], max_steps: int) -> list[float | None]:
  """Mean correctness of attempt t (1-based t = 1..max_steps) over all chains reaching it."""
  out = []
  for t in range(max_steps):
    vals = [ch[t] for r in records for ch in r["correct"] if len(ch) > t]
    out.append(float(np.mean(vals)) if vals else None)
  return out


def flips(records: Sequence[dict]) -> dict:
  """Transitions between consecutive attempts of a chain.

  right_to_wrong: of attempts that were right, the fraction whose next attempt
  is wrong (paper: about 38% of correct answers get revised into wrong ones);
  wrong_to_right: of wrong attempts, the fraction whose next attempt is right.
  """
  rw = rr = wr = ww = 0
  for r in records:
    for ch in r["correct"]:
      for a, b in zip(ch[:-1], ch[1:]):
        if a:
          rw, rr = rw + (not b), rr + bool(b)
        else:
          wr, ww = wr + bool(b), ww + (not b)
  return dict(
      right_to_wrong=rw / max(rw + rr, 1),
      wrong_to_right=wr / max(wr + ww, 1),
      right_transitions=rw + rr,
      wrong_transitions=wr + ww,
  )


def summarize(
    records: Sequence[dict],
    budgets: Sequence[int],
    equivalent: Equiv,
    levels: Sequence[str],
    max_steps: int,
    with_scores: bool = True,
) -> dict:
  """Everything the report shows for one revision policy, overall and per level."""
  sels = SELECTIONS if with_scores else ("majority",)

  def one(recs):
    return dict(
        num_questions=len(recs),
        pass_at_step=pass_at_step(recs, max_steps),
        flips=flips(recs),
        curves=budget_curves(recs, budgets, equivalent, sels),
    )

  by_level = {
      lv: one([r for r in records if r.get("level") == lv])
      for lv in levels
      if any(r.get("level") == lv for r in records)
  }
  return dict(overall=one(records), by_level=by_level)
