"""Revision training trajectories: wrong attempts in context, then a right one (paper §6.1).

Per training question the policy samples many attempts in parallel. For each
correct attempt, k ~ Uniform{0..max_context} wrong attempts are put before it
(k capped by how many distinct wrong attempts exist): the last one is the
wrong attempt closest to the correct one by character edit distance, the
others are drawn at random from the remaining wrong ones. The correct attempt
is the target. Wrong means "final answer not equivalent to the reference";
so the target's answer never appears in context, and neither does its text.

Keep trajectories (an extension, off unless `keep_fraction` > 0): the paper's
trajectories only ever show wrong attempts in context, so a revision model
learns that the answer in context is wrong, and at test time it revises a
right previous attempt into a wrong one (on this task: a 1-operation question
answered 99.7% right at the first attempt fell to 61% at the second). With
probability `keep_fraction` a trajectory's last attempt in context is instead a
right one (the target itself when no other right text exists), after
k - 1 ~ Uniform{0..max_context - 1} random wrong ones (capped by how many
exist), and the target is right:
the model learns to keep an answer it can check, and to revise one it cannot.
Every trajectory records its `kind`: "revise" (the paper's) or "keep".
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ttc_jax.revision import format as fmt


def edit_distance(a: str, b: str) -> int:
  """Levenshtein distance (unit insert/delete/substitute) between two strings.

  Bit-parallel (Myers 1999, Hyyrö's global variant): O(len(b)) big-integer
  operations, so ranking hundreds of candidates per question stays cheap.
  """
  if not a:
    return len(b)
  if not b:
    return len(a)
  m = len(a)
  full = (1 << m) - 1
  top = 1 << (m - 1)
  peq: dict[str, int] = {}
  for i, ch in enumerate(a):
    peq[ch] = peq.get(ch, 0) | (1 << i)
  pv, mv, score = full, 0, m
  for ch in b:
    eq = peq.get(ch, 0)
    xv = eq | mv
    xh = ((((eq & pv) + pv) & full) ^ pv) | eq
    ph = mv | (~(xh | pv) & full)
    mh = pv & xh
    if ph & top:
      score += 1
    elif mh & top:
      score -= 1
    ph = ((ph << 1) | 1) & full
    mh = (mh << 1) & full
    pv = mh | (~(xv | ph) & full)
    mv = ph & xv
  return score


def closest(target: str, candidates: Sequence[str]) -> int:
  """Index of the candidate nearest to `target` by edit distance (first on ties)."""
  if not candidates:
    raise ValueError("closest() needs at least one candidate")
  return int(np.argmin([edit_distance(target, c) for c in candidates]))


def build_trajectories(
    question: str,
    attempts: Sequence[str],
    correct: Sequence[bool],
    rng: np.random.Generator,
    *,
    max_context: int = fmt.DEFAULT_CONTEXT,
    max_per_question: int | None = None,
    keep_fraction: float = 0.0,
    question_position: str = "first",
    **extra,
) -> list[dict]:
  """Trajectories for one question from its sampled `attempts` and their correctness.

  Attempts are cleaned (`format.clean_attempt`); wrong ones are de-duplicated.
  Every correct sample is the target of one trajectory (identical correct
  texts get independently drawn contexts), and at most `max_per_question`
  (random ones) are kept. Returns dicts with `question`, `attempts` (oldest
  first: for kind "revise" all wrong, the closest one last; for kind "keep"
  wrong ones then a right one), `target`, `k` (attempts in context), `kind`,
  `prompt` (the revision prompt, `format.revision_prompt` with
  `question_position`) and any `extra` fields. With keep_fraction 0
  (the paper's data) the draws, and so the output, do not depend on it.
  """
  if not 0.0 <= keep_fraction <= 1.0:
    raise ValueError(f"keep_fraction must lie in [0, 1], got {keep_fraction}")
  if len(attempts) != len(correct):
    raise ValueError(f"{len(attempts)} attempts but {len(correct)} correctness flags")
  right, wrong = [], []
  for text, ok in zip(attempts, correct):
    text = fmt.clean_attempt(text)
    if not text:
      continue
    if ok:
      right.append(text)
    elif text not in wrong:
      wrong.append(text)
  wrong = [w for w in wrong if w not in right]
  order = rng.permutation(len(right))
  if max_per_question is not None:
    order = order[:max_per_question]
  out = []
  for i in order:
    target = right[int(i)]
    if keep_fraction and max_context and rng.random() < keep_fraction:
      others = [r for j, r in enumerate(right) if j != int(i)] or [target]
      n_wrong = min(int(rng.integers(0, max_context)), len(wrong))
      picks = rng.choice(len(wrong), size=n_wrong, replace=False) if n_wrong else []
      context = [wrong[int(j)] for j in picks] + [others[int(rng.integers(len(others)))]]
      out.append(
          dict(
              extra,
              question=question,
              attempts=context,
              target=target,
              k=len(context),
              kind="keep",
              prompt=fmt.revision_prompt(question, context, question_position),
          )
      )
      continue
    k = min(int(rng.integers(0, max_context + 1)), len(wrong))
    context: list[str] = []
    if k:
      near = closest(target, wrong)
      rest = [j for j in range(len(wrong)) if j != near]
      picks = rng.choice(len(rest), size=k - 1, replace=False) if k > 1 else []
      context = [wrong[rest[int(j)]] for j in picks] + [wrong[near]]
    out.append(
        dict(
            extra,
            question=question,
            attempts=context,
            target=target,
            k=k,
            kind="revise",
            prompt=fmt.revision_prompt(question, context, question_position),
        )
    )
  return out


def build_dataset(
    records: Sequence[dict],
    rng: np.random.Generator,
    *,
    max_context: int = fmt.DEFAULT_CONTEXT,
    max_per_question: int | None = None,
    keep_fraction: float = 0.0,
    question_position: str = "first",
    keep: Callable[[dict], bool] | None = None,
) -> list[dict]:
  """Trajectories for many questions.

  records: dicts with `question`, `samples` (texts) and `sample_correct`
  (bools), plus optional `level` and `answer` copied into each trajectory.
  keep(trajectory) can drop some (e.g. ones too long for the model).
  """
  out = []
  for r in records:
    extra = {k: r[k] for k in ("level", "answer") if k in r}
    for t in build_trajectories(
        r["question"],
        r["samples"],
        r["sample_correct"],
        rng,
        max_context=max_context,
        max_per_question=max_per_question,
        keep_fraction=keep_fraction,
        question_position=question_position,
        **extra,
    ):
      if keep is None or keep(t):
        out.append(t)
  return out


def summarize(trajectories: Sequence[dict]) -> dict:
  """Counts: trajectories, questions, how many have k = 0..max attempts in context,
  and how many of each kind ("revise", "keep")."""
  ks = [t["k"] for t in trajectories]
  hist = {str(k): int(sum(1 for x in ks if x == k)) for k in sorted(set(ks))}
  kinds = [t.get("kind", "revise") for t in trajectories]
  return dict(
      trajectories=len(trajectories),
      questions=len({t["question"] for t in trajectories}),
      k_histogram=hist,
      mean_k=float(np.mean(ks)) if ks else 0.0,
      kinds={k: kinds.count(k) for k in sorted(set(kinds))},
  )
