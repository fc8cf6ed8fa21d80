"""RL rollouts: sampling, grading, advantages and the training batch, in one jitted call.

`_rollout` samples G new attempts per context with the *current* weights, rewards each on
the device, normalises advantages within each group (`algo`), assembles the sequences and
computes the frozen reference's log-probs. `RolloutSource` feeds `train.loop.fit` with such
batches: a deterministic function of (seed, step, current weights) with
`get_state`/`set_state`, contexts in length buckets so a run compiles a few shapes. The
sampler reads the learner's parameters directly (`trainer.model` merges the live state): no
copy of the weights exists.

Batch rows (N = B * G, T = prompt width + max_new_tokens - 1): inputs,
targets, positions int32[N, T]; mask float32[N, T] on generated tokens;
old_logp, ref_logp float32[N, T]; advantages, rewards float32[N].
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc_jax import sampling
from ttc_jax.revision import algo
from ttc_jax.revision.rl_settings import RLSettings
from ttc_jax.train.trainer import Trainer

RewardFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def token_logp(model, inputs: jax.Array, targets: jax.Array, positions: jax.Array) -> jax.Array:
  """log p(targets[n, t] | inputs[n, :t+1]) under `model`: float32[N, T]."""
  logits, _ = model(inputs, positions)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


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


# The jitted rollout, for callers holding models as (graphdef, state) (ttc_jax.aot lowers it).
rollout_split = _rollout


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
