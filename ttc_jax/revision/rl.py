"""RL fine-tuning of the revision policy: group-relative policy gradient with a KL term.

One step: draw B contexts (a question and previous attempts, from a pool),
sample G new attempts for each with the *current* weights, reward each on the
device (the exact grader for the embedded task, optionally plus a weight times
the ORM's score), normalise advantages within each group (`algo`), and take
an optax step on a clipped policy-gradient loss plus a KL term to the frozen
SFT reference. Sampling, grading, advantages, sequence assembly and reference
log-probs are one jitted call (`rl_rollout._rollout`); the update is the usual
`Trainer` step. Settings: `rl_settings.RLSettings`.

Steps run through `train.loop.fit`, so RL gets the same checkpoints, metrics
log, NaN guard and exact resume as supervised training: the batch source
(`rl_rollout.RolloutSource`) is a deterministic function of (seed, step,
current weights) with `get_state`/`set_state`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ttc_jax.revision import algo
from ttc_jax.revision.rl_rollout import RewardFn, RolloutSource, token_logp
from ttc_jax.revision.rl_settings import RL_CONTEXTS, RLSettings
from ttc_jax.train import loop, optim
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer


def _check_contexts_mode(mode: str) -> None:
  if mode not in RL_CONTEXTS:
    raise ValueError(f"RL contexts mode must be one of {RL_CONTEXTS}, got {mode!r}")


def select_chain_records(recs: Sequence[dict], mode: str) -> list[dict]:
  """The chain records (dicts with `correct`: bool[chains][steps]) RL draws contexts from.

  "all": every one. "mixed" and "mixed_after_wrong": only questions whose
  chains held both right and wrong attempts. Elsewhere the G samples of a
  group are almost always all right or all wrong, so their group-normalised
  advantages are zero and the step spends its rollouts on the KL term alone.
  """
  _check_contexts_mode(mode)
  if mode == "all":
    return list(recs)
  out = [r for r in recs if len({bool(c) for ch in r["correct"] for c in ch}) == 2]
  if recs and not out:
    raise ValueError(
        f"RL contexts {mode!r}: none of the {len(recs)} questions' chains had both "
        "right and wrong attempts; use contexts='all' or more chains"
    )
  return out


def select_context_rows(rows: Sequence[dict], mode: str) -> list[dict]:
  """The attempt rows (dicts with `previous_correct`: the previous attempt's correctness,
  None for a chain's first attempt) whose prompts become RL contexts.

  "mixed_after_wrong": only rows whose previous attempt was wrong, so every group
  asks the policy to revise a wrong answer; other modes keep every row.
  """
  _check_contexts_mode(mode)
  if mode != "mixed_after_wrong":
    return list(rows)
  return [r for r in rows if r["previous_correct"] is False]


def rl_loss(model, batch, *, loss: str, clip_eps: float, kl_coef: float):
  """Trainer loss: the registered policy loss on one rollout batch."""
  logp = token_logp(model, batch["inputs"], batch["targets"], batch["positions"])
  value, metrics = algo.get_loss(loss)(
      logp,
      batch["old_logp"],
      batch["ref_logp"],
      batch["advantages"],
      batch["mask"],
      clip_eps=clip_eps,
      kl_coef=kl_coef,
  )
  gen = batch["mask"].sum(-1)
  metrics = dict(
      metrics,
      reward=batch["rewards"].mean(),
      correct=batch["correct"].mean(),
      gen_tokens=gen.mean(),
      # the loss's denominator (sequences with a generated token): microbatch weights
      loss_tokens=(gen > 0).sum().astype(jnp.float32),
  )
  return value, metrics


def update_rule(s: RLSettings) -> tuple[Callable, Any]:
  """(Trainer loss, optimiser) of the RL update under settings `s` (`train_rl`; ttc_jax.aot
  compiles the same step)."""
  loss_fn = functools.partial(rl_loss, loss=s.loss, clip_eps=s.clip_eps, kl_coef=s.kl_coef)
  tx = optim.make_optimizer(s.lr, s.steps, s.warmup_steps, 0.0, s.clip_norm, 0.9, 0.95, 1.0)
  return loss_fn, tx


def train_rl(
    model,
    ref_model,
    tokenizer,
    contexts: Sequence[dict],
    heldout: Sequence[dict],
    settings: RLSettings,
    out_dir: str,
    *,
    reward_fn: RewardFn,
    encode_targets: Callable,
    seed: int = 0,
    mesh=None,
    meta: dict | None = None,
    progress: bool = True,
) -> dict:
  """Trains `model` (in place) by RL from `ref_model` (its frozen SFT copy).

  settings: `RLSettings` (from config `revision.rl` by `ttc_jax.config.rl_settings`).
  Periodic evaluation samples the held-out contexts with a fixed key
  (`eval_reward`, `eval_correct`, `eval_kl`). Writes out_dir/{checkpoints,
  model, metrics.jsonl}; returns the last metrics.
  """
  s = settings
  loss_fn, tx = update_rule(s)
  trainer = Trainer(
      model,
      tx,
      loss_fn=loss_fn,
      mesh=mesh,
      skip_nonfinite=s.skip_nonfinite,
      microbatches=s.microbatches,
  )
  source = RolloutSource(
      trainer, ref_model, tokenizer, contexts, s, reward_fn, encode_targets, seed=seed
  )
  data = _repeat_updates(source, s.updates_per_batch)
  held_src = (
      RolloutSource(
          trainer, ref_model, tokenizer, heldout, s, reward_fn, encode_targets, seed=seed + 1
      )
      if heldout
      else None
  )

  def eval_batches():
    out = []
    for width, pool in held_src.buckets.items():
      for lo in range(0, len(pool), s.prompts_per_step):
        idx = pool[lo : lo + s.prompts_per_step]
        idx = idx + [idx[-1]] * (s.prompts_per_step - len(idx))
        out.append(held_src.batch_for(idx, width, jax.random.key(seed + width + lo)))
    return out

  ck = Checkpointer(os.path.join(out_dir, "checkpoints"), max_to_keep=2)
  last = loop.fit(
      trainer,
      data,
      steps=s.steps,
      checkpointer=ck,
      checkpoint_every=s.checkpoint_every,
      eval_batches=eval_batches if held_src else None,
      eval_every=s.eval_every,
      log_every=s.log_every,
      metrics_path=os.path.join(out_dir, "metrics.jsonl"),
      meta=meta,
      desc="rl",
      progress=progress,
  )
  ck.close()
  model_ck = Checkpointer(os.path.join(out_dir, "model"), max_to_keep=1, async_save=False)
  model_ck.save(s.steps, nnx.state(trainer.model), dict(meta or {}), force=True)
  model_ck.close()
  nnx.update(model, nnx.state(trainer.model))
  return last


class _repeat_updates:
  """Yields each rollout batch `k` times (k > 1: PPO-style epochs on one batch).

  Exact resume needs checkpoints on batch boundaries (a batch redrawn after a
  resume is sampled with the weights of that moment).
  """

  def __init__(self, source: RolloutSource, k: int):
    self.source, self.k, self.i, self.batch = source, max(1, k), 0, None

  def get_state(self) -> dict:
    return dict(self.source.get_state(), repeat=self.i)

  def set_state(self, state: dict) -> None:
    self.source.set_state(state)
    self.i, self.batch = int(state.get("repeat", 0)), None
    if self.i % self.k:
      self.source.step -= 1  # redraw the batch in progress

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.batch is None or self.i % self.k == 0:
      self.batch = next(self.source)
    self.i += 1
    return self.batch
