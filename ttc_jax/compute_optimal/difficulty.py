"""Question difficulty as the paper defines it (§3.2): bins of pass@1, or of a verifier.

Oracle difficulty is a question's pass@1 estimated from S samples of the
policy (paper: S = 2048; here `eval.num_samples`). Predicted difficulty is the
same binning applied to the mean final-answer PRM score over those samples, so
it needs no ground truth. Either way a higher value means an easier question.

Bins are equal-count quantiles over the analysed questions: questions are
ranked from the highest value (easiest) to the lowest and cut into `n_bins`
consecutive groups, so bin 0 is the easiest and bin n_bins - 1 the hardest
(the paper's levels 1..5). Ties are broken by question order, so every bin has
the same size (+-1) even when many questions share pass@1 = 1. For a new
question, `assign` uses the thresholds between neighbouring bins (the mean of
the last value of one bin and the first value of the next).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def quantile_bins(values: Sequence[float], n_bins: int = 5) -> tuple[np.ndarray, np.ndarray]:
  """(bins[Q] in 0..n_bins-1 with 0 the easiest, thresholds[n_bins-1] descending)."""
  v = np.asarray(values, dtype=np.float64)
  if v.ndim != 1 or v.size == 0:
    raise ValueError(f"need a non-empty list of difficulty values, got shape {v.shape}")
  if not np.all(np.isfinite(v)):
    raise ValueError("difficulty values must be finite")
  if n_bins < 1 or n_bins > v.size:
    raise ValueError(f"cannot cut {v.size} questions into {n_bins} bins")
  order = np.argsort(-v, kind="stable")  # easiest first, ties by question order
  bins = np.empty(v.size, dtype=np.int32)
  cuts = np.linspace(0, v.size, n_bins + 1).round().astype(int)
  thresholds = []
  for b in range(n_bins):
    bins[order[cuts[b] : cuts[b + 1]]] = b
    if b > 0:
      thresholds.append(0.5 * (v[order[cuts[b] - 1]] + v[order[cuts[b]]]))
  return bins, np.asarray(thresholds, dtype=np.float64)


def assign(values: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
  """Bins of new questions from `quantile_bins`' thresholds (0 = easiest).

  A value equal to a threshold goes to the easier bin.
  """
  v = np.asarray(values, dtype=np.float64)
  t = np.asarray(thresholds, dtype=np.float64)
  return np.sum(v[:, None] < t[None, :], axis=1).astype(np.int32)


def oracle_pass_at_1(sample_correct: Sequence[Sequence[bool]]) -> np.ndarray:
  """pass@1 per question [Q]: the fraction of its samples that are right."""
  if any(len(c) == 0 for c in sample_correct):
    raise ValueError("a question has no samples: cannot estimate its pass@1")
  return np.asarray([float(np.mean(c)) for c in sample_correct])


def predicted_score(final_scores: Sequence[Sequence[float]]) -> np.ndarray:
  """Mean final-answer verifier score per question [Q] (no ground truth used)."""
  if any(len(s) == 0 for s in final_scores):
    raise ValueError("a question has no scored samples: cannot predict its difficulty")
  return np.asarray([float(np.mean(s)) for s in final_scores])


def estimation_cost(
    num_questions: int,
    samples_per_question: int,
    sample_tokens: float,
    prompt_tokens: float,
    policy_params: int,
    prm_params: int,
) -> dict:
  """What estimating difficulty costs (the paper leaves it out; ttc_jax reports it).

  sample_tokens / prompt_tokens: totals over all questions' samples. Forward
  FLOPs are 2 x parameters per token: the policy generates the sample tokens,
  the PRM reads prompt and sample tokens once (predicted difficulty only).
  """
  return dict(
      questions=int(num_questions),
      generations=int(num_questions * samples_per_question),
      generations_per_question=int(samples_per_question),
      sample_tokens=float(sample_tokens),
      policy_flops=float(2.0 * policy_params * sample_tokens),
      prm_flops=float(2.0 * prm_params * (sample_tokens + prompt_tokens)),
  )
