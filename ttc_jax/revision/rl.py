"""RL fine-tuning of the revision policy: group-relative policy gradient with a KL term.

One step: draw B contexts (a question and previous attempts, from a pool),
sample G new attempts for each with the *current* weights, reward each on the
device (the exact grader for the embedded task, optionally plus a weight times
the ORM's score), normalise advantages within each group (`algo`), and take
an optax step on a clipped policy-gradient loss plus a KL term to the frozen
SFT reference. Sampling, grading, advantages, sequence assembly and reference
log-probs are one jitted call (`_rollout`); the update is the usual
`Trainer` step. The sampler reads the learner's parameters directly
(`trainer.model` merges the live state): no copy of the weights exists.

Steps run through `train.loop.fit`, so RL gets the same checkpoints, metrics
log, NaN guard and exact resume as supervised training: the batch source is
a deterministic function of (seed, step, current weights) with
`get_state`/`set_state`, and contexts come in length buckets so a run
compiles a few shapes.

Batch rows (N = B * G, T = prompt width + max_new_tokens - 1): inputs,
targets, positions int32[N, T]; mask float32[N, T] on generated tokens;
old_logp, ref_logp float32[N, T]; advantages, rewards float32[N].
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc_jax import sampling
from ttc_jax.revision import algo
from ttc_jax.train import loop, optim
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer

RewardFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]

# Which questions' SFT-chain attempts become RL contexts (config revision.rl.contexts).
RL_CONTEXTS = ("all", "mixed", "mixed_after_wrong")


@dataclasses.dataclass(frozen=True)
class RLSettings:
  """The RL learner's knobs (config `revision.rl`, less the pipeline's context fields
  `contexts`, `heldout_fraction` and `eval_contexts`).

  A step: prompts_per_step contexts (B) x group_size attempts (G), each at most
  max_new_tokens tokens, sampled at temperature / top_k (0: off) / top_p (1: off).
  advantage and loss: names registered in `algo` (ADVANTAGES, LOSSES); clip_eps: the
  ratio clip; kl_coef: the weight of the KL term to the reference. Optimiser: AdamW
  without weight decay, betas (0.9, 0.95), lr after warmup_steps of linear warm-up, cosine
  decay to lr over `steps`, global-norm clip clip_norm. updates_per_batch: optimiser steps
  on each rollout batch (PPO-style epochs; steps counts updates). log_every, eval_every,
  checkpoint_every: in steps (eval_every 0: no eval). skip_nonfinite: skip a step with a
  non-finite loss or gradient norm instead of raising.
  """

  steps: int
  prompts_per_step: int
  group_size: int
  temperature: float
  max_new_tokens: int
  lr: float
  warmup_steps: int
  clip_norm: float
  clip_eps: float
  kl_coef: float
  advantage: str
  loss: str
  log_every: int
  eval_every: int
  checkpoint_every: int
  updates_per_batch: int = 1
  top_k: int = 0
  top_p: float = 1.0
  skip_nonfinite: bool = False


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


def token_logp(model, inputs: jax.Array, targets: jax.Array, positions: jax.Array) -> jax.Array:
  """log p(targets[n, t] | inputs[n, :t+1]) under `model`: float32[N, T]."""
  logits, _ = model(inputs, positions)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


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
      loss_tokens=jnp.float32(batch["mask"].shape[0]),
  )
  return value, metrics


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "ref_graphdef",
        "group",
        "max_new",
        "eos_id",
        "reward_fn",
        "advantage",
    ),
)
def _rollout(
    graphdef,
    state,
    ref_graphdef,
    ref_state,
    prompts,
    plen,
    targets,
    tlen,
    rng,
    params,
    *,
    group,
    max_new,
    eos_id,
    reward_fn,
    advantage,
):
  """Samples `group` attempts per prompt and builds the training batch (see module doc)."""
  b, p = prompts.shape
  out = sampling.generate_split(
      graphdef,
      state,
      prompts,
      plen,
      rng,
      params,
      num_samples=group,
      max_new_tokens=max_new,
      eos_id=eos_id,
      stop_ids=(),
  )
  n = b * group
  gen = out.tokens.reshape(n, max_new)
  glen = out.lengths.reshape(n)
  correct = reward_fn(gen, glen, jnp.repeat(targets, group, 0), jnp.repeat(tlen, group, 0))
  rewards = correct.astype(jnp.float32)
  adv = algo.get_advantage(advantage)(rewards.reshape(b, group)).reshape(n)
  start = jnp.repeat(plen, group)  # first generated index
  width = p + max_new
  cols = jnp.arange(width)[None]
  seq = jnp.zeros((n, width), jnp.int32).at[:, :p].set(jnp.repeat(prompts, group, 0))
  rows = jnp.arange(n)[:, None]
  dest = jnp.where(
      jnp.arange(max_new)[None] < glen[:, None], start[:, None] + jnp.arange(max_new)[None], width
  )
  seq = jnp.where(cols < start[:, None], seq, 0).at[rows, dest].set(gen, mode="drop")
  old = (
      jnp.zeros((n, width), jnp.float32)
      .at[rows, dest]
      .set(out.logprobs.reshape(n, max_new), mode="drop")
  )
  inputs, tgt = seq[:, :-1], seq[:, 1:]
  gen_mask = (cols >= start[:, None]) & (cols < (start + glen)[:, None])
  mask = gen_mask[:, 1:].astype(jnp.float32)
  positions = jnp.broadcast_to(jnp.arange(width - 1, dtype=jnp.int32), (n, width - 1))
  ref = nnx.merge(ref_graphdef, ref_state)
  ref_logp = jax.lax.stop_gradient(token_logp(ref, inputs, tgt, positions))
  chex.assert_shape(mask, (n, width - 1))
  return dict(
      inputs=inputs,
      targets=tgt,
      positions=positions,
      mask=mask,
      old_logp=old[:, 1:],
      ref_logp=ref_logp,
      advantages=adv,
      rewards=rewards,
      correct=correct.astype(jnp.float32),
      gen_tokens=glen,
  )


def length_buckets(
    lengths: Sequence[int], width: int = 32, cap: int | None = None
) -> dict[int, list[int]]:
  """Context indices grouped by prompt length rounded up to `width` tokens (at most
  `cap`; a length above `cap` is a ValueError)."""
  out: dict[int, list[int]] = {}
  for i, n in enumerate(lengths):
    if cap is not None and n > cap:
      raise ValueError(f"context {i} has {n} tokens; at most {cap} fit with the attempt")
    b = -(-int(n) // width) * width
    out.setdefault(b if cap is None else min(b, cap), []).append(i)
  return dict(sorted(out.items()))


class RolloutSource:
  """Iterator of RL batches sampled with the trainer's current weights.

  contexts: dicts with `prompt` (a revision prompt) and `answer` (the
  reference answer). Step s draws its bucket and contexts from
  rng(seed, s), so a resumed run (`set_state`) draws what it would have.
  """

  def __init__(
      self,
      trainer: Trainer,
      ref_model,
      tokenizer,
      contexts: Sequence[dict],
      settings: RLSettings,
      reward_fn: RewardFn,
      encode_targets: Callable,
      *,
      seed: int = 0,
      bucket_width: int = 32,
  ):
    if not contexts:
      raise ValueError("RL needs at least one context")
    s = settings
    self.trainer, self.tokenizer, self.s, self.seed = trainer, tokenizer, s, seed
    self.ref_graphdef, self.ref_state = nnx.split(ref_model)
    self.reward_fn = reward_fn
    self.contexts = list(contexts)
    self.enc = [tokenizer.encode(c["prompt"], add_bos=True) for c in self.contexts]
    self.targets, self.tlen = encode_targets(tokenizer, [c["answer"] for c in self.contexts])
    self.buckets = length_buckets(
        [len(e) for e in self.enc], bucket_width, cap=trainer.model.cfg.max_len - s.max_new_tokens
    )
    self.params = sampling.SamplingParams.make(
        s.temperature, s.top_k, s.top_p, vocab_limit=tokenizer.vocab_size
    )
    self.step = 0

  def get_state(self) -> dict:
    return dict(step=self.step)

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])

  def __iter__(self):
    return self

  def batch_for(self, idx: Sequence[int], width: int, rng: jax.Array) -> dict:
    toks = np.zeros((len(idx), width), np.int32)
    lens = np.zeros((len(idx),), np.int32)
    for r, i in enumerate(idx):
      toks[r, : len(self.enc[i])] = self.enc[i]
      lens[r] = len(self.enc[i])
    graphdef, state = nnx.split(self.trainer.model)
    return _rollout(
        graphdef,
        state,
        self.ref_graphdef,
        self.ref_state,
        jnp.asarray(toks),
        jnp.asarray(lens),
        jnp.asarray(self.targets[idx]),
        jnp.asarray(self.tlen[idx]),
        rng,
        self.params,
        group=self.s.group_size,
        max_new=self.s.max_new_tokens,
        eos_id=self.tokenizer.EOS,
        reward_fn=self.reward_fn,
        advantage=self.s.advantage,
    )

  def __next__(self) -> dict:
    self.step += 1
    rng = np.random.default_rng((self.seed, self.step))
    keys = list(self.buckets)
    sizes = np.array([len(self.buckets[k]) for k in keys], np.float64)
    width = keys[int(rng.choice(len(keys), p=sizes / sizes.sum()))]
    pool = self.buckets[width]
    b = self.s.prompts_per_step
    idx = rng.choice(len(pool), size=b, replace=len(pool) < b)
    return self.batch_for(
        [pool[int(i)] for i in idx], width, jax.random.key(self.seed * 1000003 + self.step)
    )


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
  loss_fn = functools.partial(rl_loss, loss=s.loss, clip_eps=s.clip_eps, kl_coef=s.kl_coef)
  tx = optim.make_optimizer(s.lr, s.steps, s.warmup_steps, 0.0, s.clip_norm, 0.9, 0.95, 1.0)
  trainer = Trainer(model, tx, loss_fn=loss_fn, mesh=mesh, skip_nonfinite=s.skip_nonfinite)
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
