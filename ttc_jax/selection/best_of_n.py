"""Verifier-based selection among N sampled solutions (Snell et al. 2024, §5.1).

Two levels of aggregation:
  * across the steps of one solution (`aggregate_steps`): its PRM score is the
    last step's score (the paper's choice), the minimum, or the product;
  * across the N solutions of one question: majority vote, best-of-N (the
    single highest-scoring solution) or best-of-N weighted (the answer whose
    solutions' scores sum highest, grouping answers by the task's equivalence).

`curve` evaluates one method at budgets 1, 2, 4, ... over disjoint groups of
one pool of samples, so all methods see exactly the same generations;
`selection_curves` does so for majority and each verifier's best-of-N.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ttc_jax.selection import aggregate
from ttc_jax.selection.aggregate import Equiv

STEP_AGGREGATIONS = ("last", "min", "prod")
METHODS = ("majority", "best_of_n", "best_of_n_weighted")


def aggregate_steps(step_scores: Sequence[float], how: str = "last") -> float:
  """One solution's score from its per-step scores[num_steps] in [0, 1]."""
  s = np.asarray(step_scores, np.float64).reshape(-1)
  if s.size == 0:
    raise ValueError("aggregate_steps got a solution with no scored steps")
  if how == "last":
    return float(s[-1])
  if how == "min":
    return float(s.min())
  if how == "prod":
    return float(np.prod(s))
  raise ValueError(f"unknown step aggregation {how!r}; expected one of {STEP_AGGREGATIONS}")


def solution_scores(step_scores: Sequence[Sequence[float]], how: str = "last") -> list[float]:
  """`aggregate_steps` of each solution; a solution with no scored steps (no lines, or
  text the tokenizer could not encode) scores 0."""
  return [aggregate_steps(s, how) if len(s) else 0.0 for s in step_scores]


def best_of_n(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
  """The answer of the highest-scoring solution with a parsable answer (ties: first)."""
  best, best_score = None, -np.inf
  for a, s in zip(answers, scores):
    if a is not None and s > best_score:
      best, best_score = a, s
  return best


def best_of_n_weighted(
    answers: Sequence[str | None], scores: Sequence[float], equivalent: Equiv
) -> str | None:
  """The answer whose equivalence group has the largest summed score."""
  return aggregate.weighted_vote(answers, scores, equivalent)


def select(
    method: str, answers: Sequence[str | None], scores: Sequence[float] | None, equivalent: Equiv
) -> str | None:
  """Applies one of METHODS to a group of solutions (scores unused by majority)."""
  if method == "majority":
    return aggregate.majority_vote(answers, equivalent)
  if scores is None:
    raise ValueError(f"method {method!r} needs verifier scores")
  if method == "best_of_n":
    return best_of_n(answers, scores)
  if method == "best_of_n_weighted":
    return best_of_n_weighted(answers, scores, equivalent)
  raise ValueError(f"unknown selection method {method!r}; expected one of {METHODS}")


def curve(
    method: str,
    answers: Sequence[Sequence[str | None]],
    targets: Sequence[str],
    budgets: Sequence[int],
    equivalent: Equiv,
    scores: Sequence[Sequence[float]] | None = None,
) -> dict[int, float]:
  """Accuracy of `method` at each budget N (disjoint groups of the S samples)."""
  if method not in METHODS:
    raise ValueError(f"unknown selection method {method!r}; expected one of {METHODS}")
  return aggregate.selection_curve(
      answers, targets, budgets, equivalent, lambda a, s: select(method, a, s, equivalent), scores
  )


def selection_curves(
    records: Sequence[dict],
    scores: dict[str, list[list[float]]],
    budgets: Sequence[int],
    equivalent: Equiv,
    aggregation: str = "last",
) -> dict[str, dict[int, float]]:
  """Accuracy curves for majority and each verifier's best-of-N (weighted and not).

  records: per question, `sample_answers[S]` and `answer`; scores[name]:
  per-step values for the flat list of all samples, question-major.
  Keys: majority, <name>_best_of_n, <name>_best_of_n_weighted.
  """
  answers = [r["sample_answers"] for r in records]
  targets = [r["answer"] for r in records]
  out = {"majority": curve("majority", answers, targets, budgets, equivalent)}
  for name, flat in scores.items():
    agg, pos = [], 0
    for a in answers:
      agg.append(solution_scores(flat[pos : pos + len(a)], aggregation))
      pos += len(a)
    for method in ("best_of_n", "best_of_n_weighted"):
      out[f"{name}_{method}"] = curve(method, answers, targets, budgets, equivalent, agg)
  return out
