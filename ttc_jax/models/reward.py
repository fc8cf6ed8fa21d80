"""Value models (PRM and ORM): the Transformer backbone plus a scalar head.

Snell et al. 2024 score solutions with a process reward model (PRM) that reads
a value in [0,1] at every step delimiter; an outcome reward model (ORM) is the
same network read at the last token. Both are `ValueModel` (docs/design.md §4):

  model(tokens[B,T], positions[B,T], cache=None, attention_mask=None,
        segment_ids=None) -> (values[B,T] float32 in (0,1), cache)

with exactly the backbone's cache contract (see `transformer.py`): no cache ->
causal training mask (packed rows via `segment_ids`); with a cache -> tokens
are written at slots index[b] + t and the index advances by the number of
real tokens. `extend` uses that to score the newest step of many prefixes at
once without re-reading them, and `score` is the cacheless reference.

`create_value_model(cfg, backbone_state=nnx.state(policy))` initialises the
backbone from a policy, as the paper does; `value_loss` is a `Trainer` loss
(masked binary cross-entropy against soft labels).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ttc_jax import parallel
from ttc_jax.models import transformer
from ttc_jax.models.config import ModelConfig, to_dtype
from ttc_jax.models.transformer import Cache, Transformer


class ValueModel(nnx.Module):
  """Transformer backbone + linear head: logit[b,t] = h[b,t] . w + bias.

  Parameters are created backbone first, so `ValueModel(cfg, rngs=nnx.Rngs(s))`
  has the same backbone as `Transformer(cfg, rngs=nnx.Rngs(s))`. The head
  weight starts at N(0, 1/(d+1)) (as in Ziegler et al. 2019): initial logits
  are O(1) and differ between positions, which keeps untrained models useful
  in tests; the bias starts at zero.

  Attributes:
    backbone: the `Transformer` (its vocabulary head is unused).
    head: Param [embed_dim], logical axes ("embed",).
    head_bias: scalar Param, logical axes ().
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pd = to_dtype(cfg.param_dtype)
    self.backbone = Transformer(cfg, rngs=rngs)
    init = nnx.initializers.normal((cfg.embed_dim + 1) ** -0.5)
    self.head = nnx.Param(init(rngs.params(), (cfg.embed_dim,), pd), logical_axes=("embed",))
    self.head_bias = nnx.Param(jnp.zeros((), pd), logical_axes=())

  @property
  def cfg(self) -> ModelConfig:
    return self.backbone.cfg

  def init_cache(self, batch: int, max_len: int | None = None, dtype=None) -> Cache:
    """Empty KV cache for `batch` sequences (see `transformer.init_cache`)."""
    return transformer.init_cache(self.cfg, batch, max_len, dtype)

  def value_logits(
      self, tokens, positions, cache: Cache | None = None, attention_mask=None, segment_ids=None
  ) -> tuple[jax.Array, Cache | None]:
    """Value logits float32[B,T] and the updated cache.

    tokens/positions/attention_mask/segment_ids: [B,T]; the cache semantics
    are those of `Transformer.hidden`.
    """
    chex.assert_rank(tokens, 2)
    h, cache = self.backbone.hidden(tokens, positions, cache, attention_mask, segment_ids)
    w = self.head[...].astype(jnp.float32)
    logits = h.astype(jnp.float32) @ w + self.head_bias[...].astype(jnp.float32)
    chex.assert_shape(logits, tokens.shape)
    return parallel.constrain(logits, ("batch", "length")), cache

  def __call__(
      self, tokens, positions, cache: Cache | None = None, attention_mask=None, segment_ids=None
  ) -> tuple[jax.Array, Cache | None]:
    """Values sigmoid(logits) float32[B,T] in (0,1) and the updated cache."""
    logits, cache = self.value_logits(tokens, positions, cache, attention_mask, segment_ids)
    return jax.nn.sigmoid(logits), cache

  def extend(
      self, cache: Cache, tokens: jax.Array, lengths: jax.Array
  ) -> tuple[jax.Array, jax.Array, Cache]:
    """Appends ragged token runs to the cache and scores each run's last token.

    Args:
      cache: KV cache whose `index[b]` is the number of tokens of sequence b
        already in it (slot s holds position s).
      tokens: int32[B,T], right-padded; row b appends its first `lengths[b]`
        tokens at positions/slots index[b] + t. Requires
        index[b] + T <= max_len (the cache write would otherwise be clamped).
      lengths: int32[B] in [0, T].

    Returns:
      values float32[B] and logits float32[B] at each row's last appended
      token (t = lengths[b] - 1), and the cache with index advanced by
      `lengths`. Rows with lengths[b] == 0 keep their index; their value is
      read at t = 0 of this call (a padding token) and is meaningless, so
      callers must mask it.
    """
    b, t = tokens.shape
    chex.assert_shape(lengths, (b,))
    steps = jnp.arange(t, dtype=jnp.int32)[None]
    positions = cache["index"][:, None] + steps  # [B,T]
    mask = steps < lengths[:, None]
    logits, cache = self.value_logits(tokens, positions, cache, attention_mask=mask)
    last = jnp.maximum(lengths - 1, 0).astype(jnp.int32)
    logits = jnp.take_along_axis(logits, last[:, None], axis=1)[:, 0]  # [B]
    return jax.nn.sigmoid(logits), logits, cache

  def score(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """Cacheless values float32[B,T] of right-padded rows tokens[B,T], lengths[B].

    Positions are arange(T) and attention sees only each row's real tokens;
    values at t >= lengths[b] are set to 0.
    """
    b, t = tokens.shape
    chex.assert_shape(lengths, (b,))
    steps = jnp.arange(t, dtype=jnp.int32)[None]
    mask = steps < lengths[:, None]
    values, _ = self(tokens, jnp.broadcast_to(steps, (b, t)), attention_mask=mask)
    return jnp.where(mask, values, 0.0)


def _flat_values(state: Any) -> dict[tuple, Any]:
  """path -> array (or ShapeDtypeStruct) for an nnx State or a nested dict."""
  if not isinstance(state, nnx.State):
    state = nnx.State(state)
  return {
      path: (v.get_value() if isinstance(v, nnx.Variable) else v)
      for path, v in nnx.to_flat_state(state)
  }


def _check_backbone_state(given: Any, expected: Any) -> list[tuple[tuple, Any]]:
  """Validates `given` against the abstract backbone state; returns (path, value)s.

  Raises ValueError listing missing/unexpected parameters and shape
  mismatches. Values are cast to the expected dtype.
  """
  got, want = _flat_values(given), _flat_values(expected)
  name = lambda path: "/".join(map(str, path))
  top_first = lambda paths: sorted(paths, key=lambda p: (len(p), name(p)))

  def listing(items: list[str]) -> str:
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return ", ".join(items[:5]) + more

  problems = []
  if missing := want.keys() - got.keys():
    problems.append(
        f"missing {len(missing)} parameter(s): " + listing([name(p) for p in top_first(missing)])
    )
  if extra := got.keys() - want.keys():
    problems.append(
        f"unexpected {len(extra)} parameter(s): " + listing([name(p) for p in top_first(extra)])
    )
  shapes = [
      f"{name(p)} has shape {tuple(jnp.shape(got[p]))}, expected {tuple(want[p].shape)}"
      for p in top_first(want.keys() & got.keys())
      if tuple(jnp.shape(got[p])) != tuple(want[p].shape)
  ]
  if shapes:
    problems.append(f"{len(shapes)} shape mismatch(es): " + listing(shapes))
  if problems:
    raise ValueError(
        "backbone_state does not match the value model's backbone "
        "(is it a Transformer with the same ModelConfig?): " + "; ".join(problems)
    )
  return [(p, jnp.asarray(got[p], want[p].dtype)) for p in sorted(want, key=str)]


def create_value_model(
    cfg: ModelConfig, seed: int = 0, mesh=None, backbone_state: Any = None
) -> ValueModel:
  """Builds a ValueModel, sharded by logical axes when `mesh` is given.

  Like `transformer.create_model`, all parameters are created inside one jit
  (with sharded outputs on a mesh). `backbone_state` (e.g. `nnx.state(policy)`
  of a `Transformer` with the same cfg) replaces the backbone parameters, so
  a PRM starts from the policy (values are copied, cast to cfg.param_dtype);
  the head is still initialised from `seed`. Raises ValueError naming the
  mismatch when its structure or shapes differ.
  """
  abstract = nnx.eval_shape(lambda: ValueModel(cfg, rngs=nnx.Rngs(seed)))
  graphdef, abs_state = nnx.split(abstract)
  shardings = None if mesh is None else parallel.state_shardings(abs_state, mesh)
  paths, values = (), None
  if backbone_state is not None:
    pairs = _check_backbone_state(backbone_state, abs_state["backbone"])
    paths, values = tuple(p for p, _ in pairs), [v for _, v in pairs]
    if mesh is not None:
      flat_sh = dict(nnx.to_flat_state(shardings["backbone"]))
      values = jax.device_put(values, [flat_sh[p].get_value() for p in paths])

  def make(key, values):
    model = ValueModel(cfg, rngs=nnx.Rngs(key))
    if values is not None:
      nnx.update(model.backbone, nnx.from_flat_state(list(zip(paths, values))))
    return nnx.state(model)

  # The seed enters as a traced key, so all seeds share one compilation (the
  # random initialisers take seconds to compile on CPU).
  jit_kw = {} if mesh is None else dict(out_shardings=shardings)
  with parallel.use_mesh(mesh):
    state = jax.jit(make, **jit_kw)(jax.random.key(seed), values)
  return nnx.merge(graphdef, state)


def value_loss(model: ValueModel, batch) -> tuple[jax.Array, dict]:
  """Masked binary cross-entropy of value logits against soft labels.

  Batch (all [B,T]): `inputs`, `positions`, `segment_ids` int32 (packed rows,
  0 = padding); `value_targets` float32 in [0,1]; `value_mask` float32, 1
  where a label applies (e.g. step delimiters). Unlabelled positions do not
  touch the loss whatever their targets are.

  Returns (loss, aux) with aux `value_accuracy` (logit >= 0 agrees with
  target >= 0.5), `value_mae` (|sigmoid(logit) - target|), both masked means,
  and `loss_tokens` (number of labelled positions).
  """
  inputs = batch["inputs"]
  chex.assert_equal_shape(
      [
          inputs,
          batch["positions"],
          batch["segment_ids"],
          batch["value_targets"],
          batch["value_mask"],
      ]
  )
  logits, _ = model.value_logits(inputs, batch["positions"], segment_ids=batch["segment_ids"])
  mask = batch["value_mask"].astype(jnp.float32)
  on = mask > 0
  targets = jnp.where(on, batch["value_targets"].astype(jnp.float32), 0.5)
  denom = jnp.maximum(mask.sum(), 1.0)
  bce = optax.sigmoid_binary_cross_entropy(logits, targets)
  loss = jnp.where(on, bce * mask, 0.0).sum() / denom
  correct = (logits >= 0) == (targets >= 0.5)
  acc = jnp.where(on, correct * mask, 0.0).sum() / denom
  mae = jnp.where(on, jnp.abs(jax.nn.sigmoid(logits) - targets) * mask, 0.0).sum() / denom
  return loss, {"value_accuracy": acc, "value_mae": mae, "loss_tokens": mask.sum()}
