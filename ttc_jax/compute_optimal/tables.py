"""Per-question accuracy tables (`select.Table`) from the pipeline's artifacts.

All tables are aligned to one ordered list of questions (the strings the
stages record under `question`). Search strategies:

  best_of_n_weighted   PRM best-of-N weighted over the eval_policy samples
                       (budget N: the question's accuracy over its S // N
                       disjoint groups of N samples), the baseline
  beam_m4, beam_sqrt, lookahead_k1, lookahead_k3, dvts
                       one search run per question and budget (1/0)

Revision strategies are the splits of each budget N into C parallel chains of
L sequential attempts, named "CxL" (C*L = N), selected with the revision ORM
(hierarchical best-of-N weighted) or majority; "Nx1" (parallel sampling with
the revision model) is the baseline.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ttc_jax.revision import chains as chains_lib
from ttc_jax.revision import evaluate as revision_eval
from ttc_jax.selection import aggregate, best_of_n

BASELINE = "best_of_n_weighted"


def by_question(records: Sequence[dict], questions: Sequence[str], what: str) -> list[dict]:
  by_q = {r["question"]: r for r in records}
  missing = [q for q in questions if q not in by_q]
  if missing:
    raise ValueError(
        f"{what}: {len(missing)} analysed questions have no record " f"(first: {missing[0]!r})"
    )
  return [by_q[q] for q in questions]


def common_questions(*question_lists: Sequence[str]) -> list[str]:
  """Questions present in every list, in the first list's order."""
  first, rest = question_lists[0], [set(x) for x in question_lists[1:]]
  return [q for q in dict.fromkeys(first) if all(q in s for s in rest)]


def final_scores(
    score_records: Sequence[dict],
    questions: Sequence[str],
    key: str = "prm",
    aggregation: str = "last",
) -> list[list[float]]:
  """Per question, one aggregated verifier score per sample (from verifiers/scores.jsonl)."""
  rows = by_question(score_records, questions, "verifier scores")
  return [best_of_n.solution_scores(r[key], aggregation) for r in rows]


def best_of_n_table(
    samples: Sequence[dict],
    scores: Sequence[Sequence[float]],
    questions: Sequence[str],
    budgets: Sequence[int],
    equivalent: Callable,
) -> dict[int, np.ndarray]:
  """{N: [Q]} best-of-N weighted accuracy per question from eval_policy samples."""
  rows = by_question(samples, questions, "eval_policy samples")
  answers = [r["sample_answers"] for r in rows]
  targets = [str(r["answer"]) for r in rows]
  select = lambda a, s: best_of_n.best_of_n_weighted(a, s, equivalent)
  return {
      int(n): aggregate.per_question_accuracy(answers, targets, int(n), equivalent, select, scores)
      for n in budgets
      if int(n) <= min(len(a) for a in answers)
  }


def search_table(results: Sequence[dict], questions: Sequence[str]) -> dict[str, dict]:
  """{method: {budget: [Q]}} from search/results.jsonl (1.0 right, 0.0 wrong)."""
  pos = {q: i for i, q in enumerate(questions)}
  out: dict[str, dict[int, np.ndarray]] = {}
  seen: dict[tuple, int] = {}
  for r in results:
    i = pos.get(r["question"])
    if i is None:
      continue
    key = (r["method"], int(r["budget"]))
    arr = out.setdefault(r["method"], {}).setdefault(
        int(r["budget"]), np.full(len(questions), np.nan)
    )
    arr[i] = 1.0 if r["correct"] else 0.0
    seen[key] = seen.get(key, 0) + 1
  for (m, n), count in seen.items():
    if count < len(questions):
      raise ValueError(
          f"search results for {m} at budget {n} cover {count} of "
          f"{len(questions)} analysed questions"
      )
  return out


def revision_split(strategy: str) -> tuple[int, int] | None:
  """(C, L) of a revision strategy name "CxL" (`revision_table`), else None."""
  c, sep, l = strategy.partition("x")
  return (int(c), int(l)) if sep and c.isdigit() and l.isdigit() else None


def revision_table(
    chain_records: Sequence[dict],
    questions: Sequence[str],
    budgets: Sequence[int],
    equivalent: Callable,
    selection: str = "orm",
) -> tuple[dict[str, dict], list[str]]:
  """({"CxL": {N: [Q]}}, strategy order with the parallel splits first)."""
  rows = by_question(chain_records, questions, "revision chains")
  table: dict[str, dict[int, np.ndarray]] = {}
  order_par, order_rest = [], []
  for n in budgets:
    for c, l in chains_lib.splits(int(n)):
      name = f"{c}x{l}"
      table[name] = {int(n): revision_eval.split_correct(rows, c, l, selection, equivalent)}
      (order_par if l == 1 else order_rest).append(name)
  return table, order_par + order_rest


def per_question(records: Sequence[dict], questions: Sequence[str], key: str) -> np.ndarray:
  """[Q] of a boolean field (e.g. greedy_correct) of per-question records."""
  return np.asarray([float(bool(r[key])) for r in by_question(records, questions, key)])
