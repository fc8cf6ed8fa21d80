"""Supervised fine-tuning of the revision model on wrong-then-right trajectories.

Each trajectory is one example: the revision prompt (question and previous
wrong attempts, `format.revision_prompt`) and the correct attempt as target;
the loss is on the target tokens and EOS only (`packing.tokenize_example`).
The model starts from the policy checkpoint (a `max_len` long enough for
the context; RoPE has no position table to resize). Held-out questions
(a hash split, `prm.data.is_heldout`) give the eval loss and early stopping.

Replay (an extension, `revision.sft.replay_fraction`): the policy's own rows,
a plain prompt and a reference solution of training questions the trajectories
do not use, mixed into the training examples (not the held-out ones), so
fine-tuning on long revision prompts does not cost the model the arithmetic of
its first attempt (docs/results.md). With `revision.sft.replay_foreign_fraction`
(`foreign_context`) some replay rows also get attempts written for other
questions in context: the question must then be read back across attempts that
do not belong to it, and the target is still the reference solution.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from ttc_jax.data import packing
from ttc_jax.prm import data as prm_data
from ttc_jax.revision import format as fmt
from ttc_jax.train import loop
from ttc_jax.train.loop import FitSettings
from ttc_jax.train.optim import OptimSettings
from ttc_jax.train.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class SFTSettings:
  """The revision SFT section (config `revision.sft`, less the pipeline's replay fields).

  fit: the loop (steps, eval_every, log_every, patience, skip_nonfinite); optim: AdamW and
  its schedule; batch_size x seq_len: the packed rows [B, T] of a step (a trajectory or
  replay row longer than seq_len is dropped); heldout_fraction: the share of questions (a
  hash split, `prm.data.is_heldout`) held out for the eval loss and early stopping.
  """

  fit: FitSettings
  optim: OptimSettings
  batch_size: int
  seq_len: int
  heldout_fraction: float


def foreign_context(
    rows: Sequence[dict],
    trajectories: Sequence[dict],
    fraction: float,
    *,
    max_context: int,
    rng: np.random.Generator,
    question_position: str = "first",
    fits: Callable[[dict], bool] | None = None,
) -> list[dict]:
  """Replay rows, about `fraction` of them with a context of attempts at other questions.

  rows: dicts with `question`, `level`, `prompt`, `target` (plain policy rows).
  trajectories: the pool; their `attempts` (contexts) are the candidate attempts,
  by `level`. A chosen row gets k ~ U{1..max_context} distinct attempts of the
  row's level whose question differs from the row's (fewer when the pool is
  smaller; oldest ones dropped until `fits(row)`), a revision prompt
  (`format.revision_prompt`) and `foreign=k`; its target is unchanged. Rows
  not chosen, or with no candidate, are returned as they are.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"foreign-context fraction must lie in [0, 1], got {fraction}")
  pool: dict[Any, list[tuple[str, str]]] = collections.defaultdict(list)
  seen = set()
  for t in trajectories:
    for a in t["attempts"]:
      key = (t.get("level"), t["question"], a)
      if key not in seen:
        seen.add(key)
        pool[t.get("level")].append((t["question"], a))
  out = []
  for row in rows:
    cands = pool.get(row.get("level"), [])
    if not fraction or rng.random() >= fraction or not cands:
      out.append(row)
      continue
    k = int(rng.integers(1, max_context + 1))
    picks = [cands[int(i)] for i in rng.permutation(len(cands))[: 4 * k]]
    ctx = [a for q, a in picks if q != row["question"]][:k]
    new = None
    while ctx:
      new = dict(
          row, prompt=fmt.revision_prompt(row["question"], ctx, question_position), foreign=len(ctx)
      )
      if fits is None or fits(new):
        break
      ctx, new = ctx[1:], None
    out.append(new or row)
  return out


def _fitting(tokenizer, rows: Sequence[dict], seq_len: int) -> list[tuple[dict, dict]]:
  """(row, LM example) for each row (`prompt`, `target`) whose example fits `seq_len`, in order."""
  pairs = ((t, packing.tokenize_example(tokenizer, t["prompt"], t["target"])) for t in rows)
  return [(t, ex) for t, ex in pairs if ex["inputs"].shape[0] <= seq_len]


def examples(tokenizer, trajectories: Sequence[dict], seq_len: int) -> tuple[list[dict], int]:
  """LM examples of the trajectories that fit `seq_len`, and how many were dropped."""
  kept = _fitting(tokenizer, trajectories, seq_len)
  return [ex for _, ex in kept], len(trajectories) - len(kept)


def train_revision_model(
    model,
    tokenizer,
    trajectories: Sequence[dict],
    settings: SFTSettings,
    out_dir: str,
    *,
    seed: int = 0,
    mesh=None,
    meta: dict | None = None,
    progress: bool = True,
    replay: Sequence[dict] = (),
) -> tuple[Any, dict]:
  """Fine-tunes `model` on `trajectories`; returns (trained model, summary).

  replay: extra training examples, dicts with `prompt` and `target` (those
  longer than seq_len are dropped), shuffled in with the trajectories.

  settings: `SFTSettings` (from config `revision.sft` by `ttc_jax.config.sft_settings`).
  Writes out_dir/{checkpoints,best,model,metrics.jsonl}.
  """
  s = settings
  train, held = prm_data.split_records(trajectories, s.heldout_fraction)
  train_ex, dropped = examples(tokenizer, train, s.seq_len)
  held_ex, _ = examples(tokenizer, held, s.seq_len)
  if not train_ex or not held_ex:
    raise ValueError(f"no revision trajectory fits seq_len={s.seq_len}")
  replay_kept = _fitting(tokenizer, replay, s.seq_len)
  replay_ex = [ex for _, ex in replay_kept]
  n_traj = len(train_ex)
  train_ex = train_ex + replay_ex
  data = packing.iterate_batches(train_ex, s.batch_size, s.seq_len, seed=seed)
  held_batches = packing.eval_batches(held_ex, s.batch_size, s.seq_len)
  trainer = Trainer(
      model, s.optim.make(s.fit.steps), mesh=mesh, skip_nonfinite=s.fit.skip_nonfinite
  )
  tokens = s.batch_size * s.seq_len
  last = loop.fit_best(
      trainer,
      data,
      lambda: held_batches,
      s.fit,
      out_dir,
      flops_per_step=trainer.model.cfg.train_flops_per_token(s.seq_len) * tokens,
      tokens_per_step=tokens,
      meta=meta,
      desc="revision_sft",
      progress=progress,
  )
  summary = dict(
      final_metrics=last,
      best_step=int(last["best_step"]),
      best_eval_loss=float(last["best_eval_loss"]),
      train_trajectories=n_traj,
      heldout_trajectories=len(held_ex),
      replay_examples=len(replay_ex),
      dropped_too_long=dropped,
  )
  foreign = sum(1 for r, _ in replay_kept if r.get("foreign"))
  if foreign:  # only where the run has foreign-context replay rows
    summary["replay_foreign_examples"] = foreign
  return trainer.model, summary
