"""Value-model training rows from step-labelled solutions (PRM and ORM).

A solution is scored at its step ends. With steps s_0 .. s_{K-1} (lines, the
last one the Answer line), the scored sequence is

  [BOS] prompt s_0 \\n s_1 \\n ... s_{K-1} [EOS]

and step k's value is read at its delimiter: the `\\n` after s_k, or EOS after
the last step. Training, evaluation and search all use this one convention
(`step_end_positions`), so a value read during search, when the sampler stops
at a delimiter, is the value the model was trained to give there.

A PRM gets a target at every step end (soft or hard Monte Carlo label, or the
task checker's exact label: 1.0 while every step so far is right, else 0.0); an
ORM only at the last one (whether the final answer is right).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np

KINDS = ("prm", "orm")
LABELS = ("soft", "hard", "exact")  # record keys of per-step targets (prm/labels.py)
# config.prm.label_source -> the record key it trains on (config/labels.py checks configs)
LABEL_SOURCES = {"monte_carlo": "soft", "exact": "exact", "monte_carlo_hard": "hard"}
SOURCE_OF_LABEL = {v: k for k, v in LABEL_SOURCES.items()}


def solution_tokens(tokenizer, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
  """Token ids of the scored sequence and the position of each step end."""
  if not steps:
    raise ValueError("a solution needs at least one step")
  ids = [tokenizer.BOS] + list(tokenizer.encode(prompt))
  ends = []
  for k, line in enumerate(steps):
    ids += list(tokenizer.encode(line))
    ids.append(tokenizer.newline_id if k < len(steps) - 1 else tokenizer.EOS)
    ends.append(len(ids) - 1)
  return ids, ends


def value_example(
    tokenizer,
    prompt: str,
    steps: Sequence[str],
    targets: Sequence[float],
    labelled: Sequence[bool] | None = None,
) -> dict[str, np.ndarray]:
  """One unpacked row: inputs[n], value_targets[n], value_mask[n] (+ unused LM keys)."""
  ids, ends = solution_tokens(tokenizer, prompt, steps)
  if len(targets) != len(steps):
    raise ValueError(f"{len(targets)} targets for {len(steps)} steps")
  n = len(ids)
  vt = np.zeros((n,), np.float32)
  vm = np.zeros((n,), np.float32)
  for k, (pos, y) in enumerate(zip(ends, targets)):
    if labelled is None or labelled[k]:
      vt[pos], vm[pos] = float(y), 1.0
  inputs = np.asarray(ids, np.int32)
  return {
      "inputs": inputs,
      "targets": np.zeros_like(inputs),
      "loss_mask": np.zeros((n,), np.float32),
      "value_targets": vt,
      "value_mask": vm,
  }


def rollout_solutions(
    record: dict, outcome: Callable[[dict, str], bool | None]
) -> list[tuple[list[str], int, bool]]:
  """The record's stored rollouts as complete solutions: (steps, k, correct).

  Rollout j from step prefix k is `steps[:k+1]` followed by its own lines;
  `outcome(record, text)` says whether its final answer is right (None:
  unusable, e.g. no Answer line, and the rollout is skipped).
  """
  out = []
  for k, conts in enumerate(record.get("rollouts") or []):
    for c in conts or []:
      lines = list(record["steps"][: k + 1]) + [ln for ln in c.split("\n")]
      while lines and lines[-1] == "":
        lines.pop()
      ok = outcome(record, "\n".join(lines)) if len(lines) > k + 1 else None
      if ok is not None:
        out.append((lines, k, bool(ok)))
  return out


def examples_from_records(
    tokenizer,
    records: Sequence[dict],
    kind: str = "prm",
    label: str = "soft",
    *,
    max_tokens: int | None = None,
    outcome: Callable[[dict, str], bool | None] | None = None,
) -> list[dict[str, np.ndarray]]:
  """Training rows for a PRM (targets at every step) or an ORM (last step only).

  With `outcome` (see `rollout_solutions`), records' stored rollouts become
  extra rows: a PRM gets the shared prefix's Monte Carlo labels on steps
  0..k and the rollout's own outcome on its last step (steps in between are
  unlabelled); an ORM gets the outcome on the last step. Rows longer than
  `max_tokens`, and texts the tokenizer cannot encode, are dropped.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown value model kind {kind!r}; expected one of {KINDS}")
  if label not in LABELS:
    raise ValueError(f"unknown label type {label!r}; expected one of {LABELS}")
  if kind == "prm" and label == "exact":
    missing = sum("exact" not in r for r in records)
    if missing:
      raise ValueError(
          f"{missing} of {len(records)} labelled records have no 'exact' step labels (labelled "
          "without the task's checker): they cannot train a PRM on exact labels"
      )
  out = []

  def add(prompt, steps, targets, labelled):
    try:
      ex = value_example(tokenizer, prompt, steps, targets, labelled)
    except ValueError:  # text the tokenizer cannot encode (e.g. a sampled padding id)
      return
    if max_tokens is None or ex["inputs"].shape[0] <= max_tokens:
      out.append(ex)

  for r in records:
    k = len(r["steps"])
    if kind == "prm":
      add(r["prompt"], r["steps"], [float(y) for y in r[label]], None)
    else:
      add(
          r["prompt"],
          r["steps"],
          [0.0] * (k - 1) + [float(r["answer_correct"])],
          [False] * (k - 1) + [True],
      )
    if outcome is None:
      continue
    for lines, j, ok in rollout_solutions(r, outcome):
      n = len(lines)
      tgt = [0.0] * n
      mask = [False] * n
      if kind == "prm":
        tgt[: j + 1] = [float(y) for y in r[label][: j + 1]]
        mask[: j + 1] = [True] * (j + 1)
      tgt[-1], mask[-1] = float(ok), True
      add(r["prompt"], lines, tgt, mask)
  return out


def is_heldout(question: str, fraction: float) -> bool:
  """Deterministic question-level split (sha256), so no question straddles it."""
  h = int(hashlib.sha256(("prm-heldout:" + question).encode()).hexdigest()[:8], 16)
  return h / 0x100000000 < fraction


def split_records(records: Sequence[dict], fraction: float) -> tuple[list[dict], list[dict]]:
  """(train, heldout) by question; raises when either side would be empty."""
  train = [r for r in records if not is_heldout(r["question"], fraction)]
  held = [r for r in records if is_heldout(r["question"], fraction)]
  if not train or not held:
    raise ValueError(
        f"held-out fraction {fraction} over {len(records)} labelled solutions "
        f"leaves {len(train)} for training and {len(held)} held out; "
        "label more questions or change the fraction"
    )
  return train, held
