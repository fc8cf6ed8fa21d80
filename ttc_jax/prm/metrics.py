"""Verifier quality against exact step labels: AUROC and first-error accuracy."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
  """Area under the ROC curve of `scores` for binary `labels` (ties count one half).

  Mann-Whitney form: the probability that a random positive outscores a random
  negative. NaN when either class is absent.
  """
  s = np.asarray(scores, np.float64).reshape(-1)
  y = np.asarray(labels, bool).reshape(-1)
  if s.shape != y.shape:
    raise ValueError(f"auroc: {s.size} scores for {y.size} labels")
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(s, kind="mergesort")
  ranks = np.empty(s.size, np.float64)
  sorted_s = s[order]
  # average ranks (1-based) over runs of tied scores
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
  ends = np.r_[starts[1:], s.size]
  for a, b in zip(starts, ends):
    ranks[order[a:b]] = (a + b + 1) / 2.0
  u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def first_below(step_scores: Sequence[float], threshold: float = 0.5) -> int | None:
  """Index of the first step scored below `threshold` (the predicted first error)."""
  for k, v in enumerate(step_scores):
    if v < threshold:
      return k
  return None


def first_false(step_labels: Sequence[bool]) -> int | None:
  """Index of the first step whose exact prefix label is False (the true first error)."""
  for k, v in enumerate(step_labels):
    if not v:
      return k
  return None


def first_error_accuracy(
    step_scores: Sequence[Sequence[float]],
    exact_prefix: Sequence[Sequence[bool]],
    threshold: float = 0.5,
) -> dict[str, float]:
  """How often the PRM locates a solution's first wrong step exactly.

  For each solution, the predicted first error is the first step scored below
  `threshold` (None: no error predicted); the true one is the first step whose
  exact prefix label is False (None: all right). Returns `accuracy` over all
  solutions, and split into solutions `with_error` and `without_error`.
  """
  if len(step_scores) != len(exact_prefix):
    raise ValueError(f"{len(step_scores)} scored solutions for {len(exact_prefix)} labelled")
  hit, has_err = [], []
  for sc, ex in zip(step_scores, exact_prefix):
    if len(sc) != len(ex):
      raise ValueError(f"a solution has {len(sc)} scores for {len(ex)} steps")
    t = first_false(ex)
    hit.append(first_below(sc, threshold) == t)
    has_err.append(t is not None)
  hit_a, err_a = np.asarray(hit, bool), np.asarray(has_err, bool)
  mean = lambda x: float(x.mean()) if x.size else float("nan")
  return dict(
      accuracy=mean(hit_a),
      with_error=mean(hit_a[err_a]),
      without_error=mean(hit_a[~err_a]),
      num_solutions=int(hit_a.size),
      num_with_error=int(err_a.sum()),
  )
