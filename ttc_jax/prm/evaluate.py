"""Scoring sampled solutions with PRM/ORM and measuring them on held-out questions.

Verifier quality is measured against the embedded task's exact step labels
(the paper could not): step AUROC and first-error accuracy. Selection quality
(accuracy-vs-budget curves of majority, PRM/ORM best-of-N and best-of-N weighted
over one shared pool of samples per question) is `selection.best_of_n.selection_curves`.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc_jax import parallel
from ttc_jax.prm import data as prm_data
from ttc_jax.prm import metrics


def text_steps(text: str, delimiter: str = "\n") -> list[str]:
  """A sampled solution's steps: `text` split at `delimiter` (a line by default; e.g.
  "\\n\\n" for MATH-style paragraphs); a trailing delimiter is ignored."""
  lines = text.split(delimiter) if isinstance(text, str) else []
  if lines and lines[-1] == "":
    lines.pop()
  return lines


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _score(graphdef, state, tokens, lengths):
  return nnx.merge(graphdef, state).score(tokens, lengths)


def score_solutions(
    model,
    tokenizer,
    prompts: Sequence[str],
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    mesh=None,
) -> list[list[float]]:
  """Per-step values of each (prompt, solution text): list[num_steps] per solution.

  Sequences are grouped by length (rounded up to 32 tokens) and scored in
  fixed-size batches with one full forward each. Steps are split at the
  tokenizer's `step_delimiter` ("\\n" when it has none); a solution with no steps
  (or text the tokenizer cannot encode) gets no scores; a sequence longer than the model's max_len keeps the
  step ends that fit.
  """
  if len(prompts) != len(texts):
    raise ValueError(f"{len(prompts)} prompts for {len(texts)} solutions")
  max_len = model.cfg.max_len
  seqs: list[tuple[list[int], list[int]]] = []
  delimiter = getattr(tokenizer, "step_delimiter", "\n")  # the token `newline_id` encodes
  for p, t in zip(prompts, texts):
    steps = text_steps(t, delimiter)
    if not steps:
      seqs.append(([], []))
      continue
    try:
      ids, ends = prm_data.solution_tokens(tokenizer, p, steps)
    except ValueError:  # text the tokenizer cannot encode: left unscored
      seqs.append(([], []))
      continue
    seqs.append((ids[:max_len], [e for e in ends if e < max_len]))
  out: list[list[float]] = [[] for _ in seqs]
  groups: dict[int, list[int]] = {}
  for i, (ids, ends) in enumerate(seqs):
    if ends:
      groups.setdefault(min(int(math.ceil(len(ids) / 32) * 32), max_len), []).append(i)
  graphdef, state = nnx.split(model)
  step = batch_size
  if mesh is not None:
    step = int(
        math.ceil(step / (mesh.shape["data"] * mesh.shape["fsdp"]))
        * mesh.shape["data"]
        * mesh.shape["fsdp"]
    )
  for length, idx in sorted(groups.items()):
    for s in range(0, len(idx), step):
      part = idx[s : s + step]
      toks = np.zeros((step, length), np.int32)
      lens = np.ones((step,), np.int32)
      for r, i in enumerate(part):
        ids = seqs[i][0]
        toks[r, : len(ids)], lens[r] = ids, len(ids)
      if mesh is not None:
        toks = jax.device_put(toks, parallel.data_sharding(mesh, 2))
        lens = jax.device_put(lens, parallel.data_sharding(mesh, 1))
      with parallel.use_mesh(mesh):
        vals = np.asarray(
            jax.device_get(_score(graphdef, state, jnp.asarray(toks), jnp.asarray(lens)))
        )
      for r, i in enumerate(part):
        out[i] = [float(vals[r, e]) for e in seqs[i][1]]
  return out


def exact_step_labels(question: str, text: str, check_solution) -> list[bool] | None:
  """Exact "every step so far is correct" per line, or None when lines and checker disagree.

  Reduction lines take the checker's prefix labels; the final Answer line's
  label is whether the whole solution is right. Solutions whose lines are not
  "reductions then one Answer line" are left out (None).
  """
  lines = text_steps(text)
  chk = check_solution(question, text)
  if not lines or len(chk.steps) != len(lines) - 1 or chk.num_lines != len(lines):
    return None
  return [bool(x) for x in chk.prefix_correct] + [bool(chk.all_correct)]


def verifier_quality(
    step_scores: Sequence[Sequence[float]],
    exact: Sequence[list[bool] | None],
    threshold: float = 0.5,
) -> dict:
  """Step AUROC and first-error accuracy over the solutions that have exact labels."""
  sc = [s for s, e in zip(step_scores, exact) if e is not None and len(s) == len(e)]
  ex = [e for s, e in zip(step_scores, exact) if e is not None and len(s) == len(e)]
  flat_s = [v for s in sc for v in s]
  flat_e = [v for e in ex for v in e]
  fe = metrics.first_error_accuracy(sc, ex, threshold) if sc else {}
  return dict(
      step_auroc=metrics.auroc(flat_s, flat_e),
      first_error_accuracy=fe.get("accuracy", float("nan")),
      first_error=fe,
      num_solutions=len(sc),
      num_steps=len(flat_s),
      positive_fraction=float(np.mean(flat_e)) if flat_e else float("nan"),
      threshold=threshold,
  )


def calibrate_threshold(
    step_scores: Sequence[Sequence[float]],
    exact: Sequence[list[bool]],
    grid: Sequence[float] = tuple(np.round(np.arange(0.02, 0.99, 0.02), 2)),
) -> float:
  """The score threshold that best locates first errors on labelled (non-test) solutions.

  A PRM trained on Monte Carlo values predicts the chance of reaching the right
  answer, which stays low on hard questions even when every step is right, so
  0.5 is not a natural cut. The threshold is chosen on held-out *training*
  questions (never on the evaluation questions); ties go to the smaller one.
  """
  best, best_acc = 0.5, -1.0
  for t in grid:
    acc = metrics.first_error_accuracy(step_scores, exact, float(t))["accuracy"]
    if acc > best_acc + 1e-12:
      best, best_acc = float(t), acc
  return best
