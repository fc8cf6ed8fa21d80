"""Swappable advantage estimators and policy losses for RL fine-tuning (tunix algo_core style).

A variant is one small function registered by name, not a fork of the learner:

  @register_advantage("my_adv")
  def my_adv(rewards):            # float32[B, G] -> float32[B, G]
    ...

  @register_loss("my_loss")
  def my_loss(logp, old_logp, ref_logp, advantages, mask, *, clip_eps, kl_coef):
    ...                           # -> (scalar loss, metrics dict)

The learner picks them with `get_advantage(name)` / `get_loss(name)`.

Conventions. Rewards come as `[B, G]`: B prompts, G samples each. Losses see
`[N, T]` per-token log-probs of the sampled tokens under the current policy
(`logp`, differentiated), the behaviour policy that sampled them (`old_logp`)
and the frozen reference policy (`ref_logp`); `mask[N, T]` marks generated
tokens and `advantages[N]` is one value per sequence. Token terms are
aggregated per sequence (masked token mean) and then averaged over the
sequences with at least one generated token, so long and short attempts weigh
the same (GRPO's aggregation). `old_logp`, `ref_logp` and `advantages` are
constants of the loss (stop-gradient). `clip_eps` and `kl_coef` may be traced
scalars: sweeping them never recompiles.

Everything is pure jnp and jit-able.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

AdvantageFn = Callable[..., jax.Array]
LossFn = Callable[..., tuple[jax.Array, dict]]

ADVANTAGES: dict[str, AdvantageFn] = {}
LOSSES: dict[str, LossFn] = {}


def _register(table: dict, kind: str, name: str):
  if not isinstance(name, str) or not name:
    raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")

  def deco(fn):
    if name in table and table[name] is not fn:
      raise ValueError(
          f"{kind} {name!r} is already registered ({table[name].__name__}); "
          f"pick another name or delete the entry first"
      )
    table[name] = fn
    return fn

  return deco


def _get(table: dict, kind: str, name: str):
  try:
    return table[name]
  except (KeyError, TypeError):
    raise KeyError(f"unknown {kind} {name!r}; known: {sorted(table)}") from None


def register_advantage(name: str):
  """Decorator registering an advantage estimator `fn(rewards[B, G], **kw) -> [B, G]`."""
  return _register(ADVANTAGES, "advantage estimator", name)


def get_advantage(name: str) -> AdvantageFn:
  """The estimator registered as `name`; KeyError naming the known ones otherwise."""
  return _get(ADVANTAGES, "advantage estimator", name)


def register_loss(name: str):
  """Decorator registering a policy loss (signature in the module docstring)."""
  return _register(LOSSES, "policy loss", name)


def get_loss(name: str) -> LossFn:
  """The loss registered as `name`; KeyError naming the known ones otherwise."""
  return _get(LOSSES, "policy loss", name)


# ----------------------------------------------------------------------------- advantages
def _group_stats(rewards: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(rewards as float32[B, G], group mean [B, 1], all-equal flag bool[B, 1])."""
  chex.assert_rank(rewards, 2)
  r = rewards.astype(jnp.float32)
  mean = r.mean(axis=1, keepdims=True)
  flat = r.max(axis=1, keepdims=True) == r.min(axis=1, keepdims=True)
  return r, mean, flat


@register_advantage("group_normalized")
def group_normalized(rewards: jax.Array, *, eps: float = 1e-4) -> jax.Array:
  """GRPO: `(r - mean_g) / (std_g + eps)`, std with ddof=1 (as TRL / tunix).

  rewards: [B, G]. Returns float32[B, G]; exactly zero for a group whose
  rewards are all equal (no signal), and for G == 1.
  """
  r, mean, flat = _group_stats(rewards)
  g = r.shape[1]
  if g < 2:
    return jnp.zeros_like(r)
  std = jnp.sqrt(((r - mean) ** 2).sum(axis=1, keepdims=True) / (g - 1))
  adv = jnp.where(flat, 0.0, (r - mean) / (std + eps))
  chex.assert_shape(adv, rewards.shape)
  return adv


@register_advantage("group_mean")
def group_mean(rewards: jax.Array) -> jax.Array:
  """Dr.GRPO: `r - mean_g` (no std division). [B, G] -> float32[B, G], zero for flat groups."""
  r, mean, flat = _group_stats(rewards)
  adv = jnp.where(flat, 0.0, r - mean)
  chex.assert_shape(adv, rewards.shape)
  return adv


@register_advantage("rloo")
def rloo(rewards: jax.Array) -> jax.Array:
  """REINFORCE leave-one-out: `r_i - mean_{j != i} r_j` (= G/(G-1) (r_i - mean_g)).

  [B, G] -> float32[B, G]; zero for flat groups and for G == 1.
  """
  r, _, flat = _group_stats(rewards)
  g = r.shape[1]
  if g < 2:
    return jnp.zeros_like(r)
  baseline = (r.sum(axis=1, keepdims=True) - r) / (g - 1)
  adv = jnp.where(flat, 0.0, r - baseline)
  chex.assert_shape(adv, rewards.shape)
  return adv


# ----------------------------------------------------------------------------- losses
def kl_k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
  """Per-token k3 estimate of KL(policy || reference) on tokens sampled from the policy.

  `exp(ref - logp) - (ref - logp) - 1`, elementwise on any shape: non-negative,
  exactly zero where `logp == ref_logp` (Schulman's low-variance estimator, as
  in GRPO). The log-ratio is clipped to [-20, 20] so a far-off reference cannot
  overflow to inf.
  """
  chex.assert_equal_shape([logp, ref_logp])
  d = jnp.clip(ref_logp.astype(jnp.float32) - logp.astype(jnp.float32), -20.0, 20.0)
  return jnp.exp(d) - d - 1.0


def _check(logp, old_logp, ref_logp, advantages, mask):
  chex.assert_rank(logp, 2)
  chex.assert_equal_shape([logp, old_logp, ref_logp, mask])
  chex.assert_shape(advantages, logp.shape[:1])


def _seq_then_batch_mean(tok: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked token mean per sequence, then mean over sequences with >= 1 token. [N, T] -> []."""
  ntok = mask.sum(axis=1)
  per_seq = (tok * mask).sum(axis=1) / jnp.maximum(ntok, 1.0)
  has = (ntok > 0).astype(jnp.float32)
  return (per_seq * has).sum() / jnp.maximum(has.sum(), 1.0)


def _token_mean(tok: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over all masked tokens of the batch. [N, T] -> []."""
  return (tok * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _finish(pg_tok, logp, old_logp, ref_logp, mask, kl_coef, clipped):
  """Adds the KL term, aggregates, and builds the shared metrics."""
  kl_tok = kl_k3(logp, ref_logp)
  pg_loss = _seq_then_batch_mean(pg_tok, mask)
  kl_seq = _seq_then_batch_mean(kl_tok, mask)
  loss = pg_loss + kl_coef * kl_seq
  ratio = jnp.exp(logp - old_logp)
  metrics = {
      "loss": loss,
      "pg_loss": pg_loss,
      "kl": _token_mean(kl_tok, mask),
      "clip_fraction": _token_mean(clipped.astype(jnp.float32), mask),
      "ratio_mean": _token_mean(ratio, mask),
      # -mean log p of the sampled tokens: the sampled-token estimate of the
      # policy's entropy (exact in expectation when sampling from it).
      "entropy_proxy": _token_mean(-logp, mask),
      "num_tokens": mask.sum(),
  }
  metrics = jax.tree.map(jax.lax.stop_gradient, metrics)
  chex.assert_shape(loss, ())
  return loss, metrics


def _prepare(logp, old_logp, ref_logp, advantages, mask):
  _check(logp, old_logp, ref_logp, advantages, mask)
  sg = jax.lax.stop_gradient
  f32 = jnp.float32
  return (
      logp.astype(f32),
      sg(old_logp.astype(f32)),
      sg(ref_logp.astype(f32)),
      sg(advantages.astype(f32))[:, None],
      mask.astype(f32),
  )


@register_loss("clipped_pg")
def clipped_pg(
    logp: jax.Array,
    old_logp: jax.Array,
    ref_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_eps,
    kl_coef,
) -> tuple[jax.Array, dict]:
  """PPO/GRPO clipped surrogate plus a k3 KL penalty to the reference.

  logp/old_logp/ref_logp/mask: [N, T]; advantages: [N]. Per token
  `-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)` with
  `ratio = exp(logp - old_logp)`, plus `kl_coef * kl_k3(logp, ref_logp)`;
  both aggregated per sequence, then over sequences. clip_fraction counts the
  masked tokens where the clipped branch is the one taken (its gradient is
  zero): `A > 0, ratio > 1 + eps` or `A < 0, ratio < 1 - eps`.
  """
  logp, old_logp, ref_logp, adv, mask = _prepare(logp, old_logp, ref_logp, advantages, mask)
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * adv
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
  pg_tok = -jnp.minimum(unclipped, clipped)
  hit = ((adv > 0) & (ratio > 1.0 + clip_eps)) | ((adv < 0) & (ratio < 1.0 - clip_eps))
  return _finish(pg_tok, logp, old_logp, ref_logp, mask, kl_coef, hit)


@register_loss("pg")
def pg(
    logp: jax.Array,
    old_logp: jax.Array,
    ref_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_eps,
    kl_coef,
) -> tuple[jax.Array, dict]:
  """Plain REINFORCE `-A * logp` plus the same k3 KL penalty (clip_eps unused).

  Shapes as `clipped_pg`; valid on-policy (old_logp only feeds ratio_mean).
  clip_fraction is 0.
  """
  del clip_eps
  logp, old_logp, ref_logp, adv, mask = _prepare(logp, old_logp, ref_logp, advantages, mask)
  pg_tok = -adv * logp
  return _finish(pg_tok, logp, old_logp, ref_logp, mask, kl_coef, jnp.zeros_like(logp, bool))
