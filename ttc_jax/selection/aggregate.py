"""Answer aggregation across samples: majority vote and budget curves.

Answers are grouped by the task's equivalence (`equivalent(a, b)`), not by
string identity, so `-0`/`0` or `12`/`+12` count as one answer.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Equiv = Callable[[str | None, str | None], bool]


def group_answers(answers: Sequence[str | None], equivalent: Equiv) -> list[list[int]]:
  """Indices of `answers` grouped by equivalence, in order of first appearance.

  None (unparsable) answers form no group.
  """
  groups: list[list[int]] = []
  reps: list[str] = []
  for i, a in enumerate(answers):
    if a is None:
      continue
    for g, r in zip(groups, reps):
      if equivalent(a, r):
        g.append(i)
        break
    else:
      groups.append([i])
      reps.append(a)
  return groups


def vote(
    answers: Sequence[str | None], weights: Sequence[float], equivalent: Equiv
) -> tuple[str | None, float]:
  """(answer, total weight) of the equivalence group with the largest total weight.

  Ties go to the group that appeared first. (None, 0.0) when no answer parses.
  """
  groups = group_answers(answers, equivalent)
  if not groups:
    return None, 0.0
  totals = [float(sum(weights[i] for i in g)) for g in groups]
  best = int(np.argmax(totals))
  return answers[groups[best][0]], totals[best]


def weighted_vote(
    answers: Sequence[str | None], weights: Sequence[float], equivalent: Equiv
) -> str | None:
  """The answer whose equivalence group has the largest total weight (see `vote`)."""
  return vote(answers, weights, equivalent)[0]


def majority_vote(answers: Sequence[str | None], equivalent: Equiv) -> str | None:
  """The most frequent answer (up to equivalence); ties to the first seen."""
  return weighted_vote(answers, [1.0] * len(answers), equivalent)


def per_question_accuracy(
    answers: Sequence[Sequence[str | None]],
    targets: Sequence[str],
    n: int,
    equivalent: Equiv,
    select: Callable[[Sequence[str | None], Sequence[float]], str | None],
    scores: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
  """Accuracy [Q] of a selection rule at budget n, each question over disjoint groups.

  answers[q][s]: sample s's extracted answer for question q (S samples each);
  scores[q][s]: its verifier score (None: all ones). The S samples are cut
  into S // n disjoint groups; `select(group_answers, group_scores)` picks one
  answer per group; a question's accuracy is the fraction of its groups right.
  """
  accs = []
  for q, (ans, tgt) in enumerate(zip(answers, targets)):
    k = len(ans) // n
    if k == 0:
      raise ValueError(f"budget {n} exceeds the {len(ans)} samples available")
    sc = [1.0] * len(ans) if scores is None else scores[q]
    if len(sc) != len(ans):
      raise ValueError(f"question {q}: {len(sc)} scores for {len(ans)} answers")
    accs.append(
        np.mean(
            [
                equivalent(select(ans[j * n : (j + 1) * n], sc[j * n : (j + 1) * n]), tgt)
                for j in range(k)
            ]
        )
    )
  return np.asarray(accs, dtype=np.float64)


def selection_curve(
    answers: Sequence[Sequence[str | None]],
    targets: Sequence[str],
    budgets: Sequence[int],
    equivalent: Equiv,
    select: Callable[[Sequence[str | None], Sequence[float]], str | None],
    scores: Sequence[Sequence[float]] | None = None,
) -> dict[int, float]:
  """Accuracy of a selection rule by budget: `per_question_accuracy` averaged over questions."""
  out = {}
  for n in budgets:
    accs = per_question_accuracy(answers, targets, int(n), equivalent, select, scores)
    out[int(n)] = float(np.mean(accs)) if accs.size else float("nan")
  return out


def majority_curve(
    answers: Sequence[Sequence[str | None]],
    targets: Sequence[str],
    budgets: Sequence[int],
    equivalent: Equiv,
) -> dict[int, float]:
  """Majority-vote accuracy by budget over disjoint groups (see `selection_curve`)."""
  return selection_curve(
      answers, targets, budgets, equivalent, lambda a, _: majority_vote(a, equivalent)
  )
