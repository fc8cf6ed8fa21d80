"""Selecting one answer from revision chains (paper §6.2).

A question's chains are `answers[c][t]` (chain c, attempt t) with optional
verifier `scores[c][t]`:

  majority       flat majority vote over all attempts of all chains
  orm            hierarchical best-of-N weighted: within each chain the answer
                 with the largest summed ORM score wins, carrying that sum as
                 its weight; across chains the answer with the largest total
                 of those weights wins. With one attempt per chain this is
                 best-of-N weighted.
"""

from __future__ import annotations

from typing import Sequence

from ttc_jax.selection import aggregate
from ttc_jax.selection.aggregate import Equiv

SELECTIONS = ("orm", "majority")


def hierarchical(
    answers: Sequence[Sequence[str | None]], scores: Sequence[Sequence[float]], equivalent: Equiv
) -> str | None:
  """ORM selection over chains: best-of-N weighted within, then across chains."""
  picks, weights = [], []
  for a, s in zip(answers, scores):
    ans, w = aggregate.vote(a, s, equivalent)
    picks.append(ans)
    weights.append(w)
  return aggregate.weighted_vote(picks, weights, equivalent)


def select(how: str, answers, scores, equivalent: Equiv) -> str | None:
  """Applies one of SELECTIONS to a question's chains (scores unused by majority)."""
  if how == "majority":
    return aggregate.majority_vote([a for chain in answers for a in chain], equivalent)
  if how == "orm":
    if scores is None:
      raise ValueError("ORM selection needs scores")
    return hierarchical(answers, scores, equivalent)
  raise ValueError(f"unknown revision selection {how!r}; expected one of {SELECTIONS}")
