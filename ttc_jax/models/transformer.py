"""Flax NNX decoder-only transformer (Llama/Qwen2 style) with a plain KV cache.

Contract (docs/design.md §4):
  model(tokens[B,T], positions[B,T], cache=None, attention_mask=None,
        segment_ids=None) -> (logits[B,T,V] float32, cache)

Without a cache (training): causal attention, restricted to equal non-zero
`segment_ids` when given (packed rows), and to `attention_mask[B,T]` keys.

With a cache (sampling/search): `cache` is a plain pytree
  {"index": int32[B], "layers": ({"k": [B,Kh,D,S], "v": [B,Kh,S,D]}, ...)}
(keys stored slot-minor so one-token decode reduces over contiguous slots;
see `Attention`)
`tokens` are written at slots index[b] + t; slot s is visible to query t of
sequence b iff s <= index[b] + t. Inputs are right-padded; the returned
index advances by the number of real tokens (attention_mask.sum(-1), or T).
Slots past a sequence's index hold stale values that are never attended to
before being overwritten, so beams can be reordered by gathering every leaf
on its leading axis.

A shared-prefix cache (`prefix_cache`: the prompt once per question, each row's
own tokens in a suffix) is called the same way, with the same `index` meaning;
rows are then gathered with `prefix_cache.map_rows`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ttc_jax import parallel
from ttc_jax.models import attention, prefix_cache
from ttc_jax.models.config import ModelConfig, to_dtype
from ttc_jax.models.ops import dense, write_rows

Cache = dict[str, Any]


def _param(rngs: nnx.Rngs, init, shape, axes, dtype) -> nnx.Param:
  return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=axes)


class RMSNorm(nnx.Module):
  """RMS normalisation with a learned scale, computed in float32."""

  def __init__(self, dim: int, eps: float, param_dtype, *, rngs: nnx.Rngs):
    del rngs
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope_frequencies(d: int, theta: float, scaling: tuple = ()) -> jax.Array:
  """Inverse frequencies float32[D/2] of RoPE over head_dim `d`.

  `scaling` is `ModelConfig.rope_scaling` (normalised pairs): "linear" divides
  every frequency by `factor`; "llama3" divides the low frequencies by
  `factor`, keeps the high ones and interpolates in between (Hugging Face's
  `_compute_llama3_parameters`, same float32 arithmetic).
  """
  freq = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)  # [D/2]
  if not scaling:
    return freq
  s = dict(scaling)
  factor = s["factor"]
  if s["rope_type"] == "linear":
    return freq / factor
  if s["rope_type"] != "llama3":
    raise ValueError(f"unsupported RoPE scaling type {s['rope_type']!r}")
  old_len, lo, hi = (
      s["original_max_position_embeddings"],
      s["low_freq_factor"],
      s["high_freq_factor"],
  )
  wavelen = 2 * jnp.pi / freq
  scaled = jnp.where(wavelen > old_len / lo, freq / factor, freq)
  smooth = (old_len / wavelen - lo) / (hi - lo)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelen < old_len / hi) & ~(wavelen > old_len / lo)
  return jnp.where(medium, smoothed, scaled)


def rope_tables(
    positions: jax.Array, d: int, theta: float, scaling: tuple = ()
) -> tuple[jax.Array, jax.Array]:
  """(cos, sin) float32[B,T,1,D/2] of RoPE at positions[B,T] over head_dim `d`.

  Computed once per forward and shared by every layer's q and k (the sines and
  cosines are the costly part of RoPE on CPU).
  """
  freq = rope_frequencies(d, theta, scaling)  # [D/2]
  ang = positions[..., None].astype(jnp.float32) * freq  # [B,T,D/2]
  return jnp.cos(ang)[:, :, None, :], jnp.sin(ang)[:, :, None, :]


def apply_rope(x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotary embedding (rotate-half convention) of x[B,T,H,D] with `rope_tables`.

  Rotates the pairs (x[..., i], x[..., i + D/2]), as Hugging Face Llama/Qwen2
  do, so their q/k projections load without a permutation.
  """
  cos, sin = tables
  d = x.shape[-1]
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., : d // 2], xf[..., d // 2 :]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class Attention(nnx.Module):
  """Grouped-query attention with RoPE and an optional per-sequence KV cache."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pd = to_dtype(cfg.param_dtype)
    init = nnx.initializers.normal(cfg.embed_dim**-0.5)
    d, h, kv, hd = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.q = _param(rngs, init, (d, h, hd), ("embed", "heads", "head_dim"), pd)
    self.k = _param(rngs, init, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
    self.v = _param(rngs, init, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
    out_init = nnx.initializers.normal((h * hd) ** -0.5 / (2 * cfg.num_layers) ** 0.5)
    self.o = _param(rngs, out_init, (h, hd, d), ("heads", "head_dim", "embed"), pd)
    if cfg.qkv_bias:
      z = nnx.initializers.zeros
      self.q_bias = _param(rngs, z, (h, hd), ("heads", "head_dim"), pd)
      self.k_bias = _param(rngs, z, (kv, hd), ("kv_heads", "head_dim"), pd)
      self.v_bias = _param(rngs, z, (kv, hd), ("kv_heads", "head_dim"), pd)
    self.cfg = cfg

  def __call__(self, x, rot, mask, layer_cache, write_index, prefix=None):
    """x: [B,T,d]; rot: `rope_tables` of the positions; mask: `attention.AttentionMask`
    ([B,T,S] visibility); layer_cache {"k": [B,Kh,D,S], "v": [B,Kh,S,D]} or None; prefix:
    a shared prompt block (k, v, visible) read before the cache (`prefix_cache.read`).

    `cfg.attention` picks the implementation (`ttc_jax.models.attention`); decoding reads
    the cache in place in every one of them."""
    cfg, dt = self.cfg, to_dtype(self.cfg.dtype)
    q = dense(x, self.q[...].astype(dt))
    k = dense(x, self.k[...].astype(dt))
    v = dense(x, self.v[...].astype(dt))
    if cfg.qkv_bias:
      q, k, v = (
          q + self.q_bias[...].astype(dt),
          k + self.k_bias[...].astype(dt),
          v + self.v_bias[...].astype(dt),
      )
    q = parallel.constrain(apply_rope(q, rot), ("batch", "length", "act_heads", None))
    k = apply_rope(k, rot)
    if layer_cache is not None:
      k_all = write_rows(
          layer_cache["k"],
          write_index,
          k.transpose(0, 2, 3, 1).astype(layer_cache["k"].dtype),
          axis=3,
      )
      v_all = write_rows(
          layer_cache["v"],
          write_index,
          v.transpose(0, 2, 1, 3).astype(layer_cache["v"].dtype),
          axis=2,
      )
      layer_cache = {"k": k_all, "v": v_all}
      k, v = k_all.astype(dt), v_all.astype(dt)  # [B,Kh,D,S], [B,Kh,S,D]
    if prefix is not None:
      prefix = (prefix[0].astype(dt), prefix[1].astype(dt), prefix[2])
    out = attention.attend(
        q, k, v, mask, impl=cfg.attention, cached=layer_cache is not None, prefix=prefix
    )
    out = dense(out, self.o[...].astype(dt), 2)
    return out, layer_cache


class MLP(nnx.Module):
  """SwiGLU feed-forward block."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pd = to_dtype(cfg.param_dtype)
    init = nnx.initializers.normal(cfg.embed_dim**-0.5)
    self.gate = _param(rngs, init, (cfg.embed_dim, cfg.mlp_dim), ("embed", "mlp"), pd)
    self.up = _param(rngs, init, (cfg.embed_dim, cfg.mlp_dim), ("embed", "mlp"), pd)
    down_init = nnx.initializers.normal(cfg.mlp_dim**-0.5 / (2 * cfg.num_layers) ** 0.5)
    self.down = _param(rngs, down_init, (cfg.mlp_dim, cfg.embed_dim), ("mlp", "embed"), pd)
    self.dtype = to_dtype(cfg.dtype)

  def __call__(self, x):
    dt = self.dtype
    g = dense(x, self.gate[...].astype(dt))
    u = dense(x, self.up[...].astype(dt))
    hdn = parallel.constrain(jax.nn.silu(g) * u, ("batch", "length", "act_mlp"))
    return dense(hdn, self.down[...].astype(dt))


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pd = to_dtype(cfg.param_dtype)
    self.attn_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, pd, rngs=rngs)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, pd, rngs=rngs)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, rot, mask, layer_cache, write_index, prefix=None):
    a, layer_cache = self.attn(self.attn_norm(x), rot, mask, layer_cache, write_index, prefix)
    x = x + a
    x = x + self.mlp(self.mlp_norm(x))
    return parallel.constrain(x, ("batch", "length", "act_embed")), layer_cache


def _training_mask(tokens, attention_mask, segment_ids) -> attention.AttentionMask:
  """[B,T,T] causal mask, optionally restricted to same segment / real keys (with the
  segment ids and attention mask it came from, for the kernels that take them)."""
  t = tokens.shape[1]
  mask = jnp.tril(jnp.ones((t, t), bool))[None]
  if segment_ids is not None:
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    mask = mask & same & (segment_ids[:, None, :] > 0)
  if attention_mask is not None:
    mask = mask & attention_mask[:, None, :].astype(bool)
  return attention.AttentionMask(mask, segment_ids, attention_mask)


class Transformer(nnx.Module):
  """Decoder-only transformer; see the module docstring for the call contract."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    pd = to_dtype(cfg.param_dtype)
    self.cfg = cfg
    self.embed = _param(
        rngs,
        nnx.initializers.normal(cfg.embed_dim**-0.5),
        (cfg.vocab_size, cfg.embed_dim),
        ("vocab", "embed"),
        pd,
    )
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, pd, rngs=rngs)
    if not cfg.tie_embeddings:
      self.lm_head = _param(
          rngs,
          nnx.initializers.normal(cfg.embed_dim**-0.5),
          (cfg.embed_dim, cfg.vocab_size),
          ("embed", "vocab"),
          pd,
      )

  def init_cache(self, batch: int, max_len: int | None = None, dtype=None) -> Cache:
    """Empty cache for `batch` sequences of up to `max_len` tokens."""
    return init_cache(self.cfg, batch, max_len, dtype)

  def hidden(
      self, tokens, positions, cache: Cache | None = None, attention_mask=None, segment_ids=None
  ) -> tuple[jax.Array, Cache | None]:
    """Final-norm hidden states [B,T,d] (for value heads) and the updated cache."""
    cfg = self.cfg
    x = jnp.take(self.embed[...], tokens, axis=0).astype(to_dtype(cfg.dtype))
    x = parallel.constrain(x, ("batch", "length", "act_embed"))
    prefixes = (None,) * len(self.blocks)
    if cache is None:
      mask, index, write_index = _training_mask(tokens, attention_mask, segment_ids), None, None
    elif prefix_cache.is_shared(cache):
      index = cache["index"]
      write_index, visible, prefixes = prefix_cache.read(cache, tokens.shape[1])
      mask = attention.AttentionMask(visible)
    else:
      index = cache["index"]
      s = cache["layers"][0]["k"].shape[-1]
      q_pos = index[:, None] + jnp.arange(tokens.shape[1])[None]  # [B,T]
      mask = attention.AttentionMask(jnp.arange(s)[None, None, :] <= q_pos[:, :, None])
      write_index = index
    rot = rope_tables(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    new_layers = []
    for i, block in enumerate(self.blocks):
      lc = None if cache is None else cache["layers"][i]
      x, lc = block(x, rot, mask, lc, write_index, prefixes[i])
      new_layers.append(lc)
    x = self.final_norm(x)
    if cache is not None:
      n_new = (
          tokens.shape[1] if attention_mask is None else attention_mask.astype(jnp.int32).sum(-1)
      )
      cache = dict(cache, index=index + n_new, layers=tuple(new_layers))
    return x, cache

  def logits(self, h: jax.Array) -> jax.Array:
    """Vocabulary logits [B,T,V] in float32 from hidden states [B,T,d]."""
    dt = to_dtype(self.cfg.dtype)
    w = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    out = (h @ w.astype(dt)).astype(jnp.float32)
    return parallel.constrain(out, ("batch", "length", "act_vocab"))

  def __call__(
      self, tokens, positions, cache: Cache | None = None, attention_mask=None, segment_ids=None
  ) -> tuple[jax.Array, Cache | None]:
    h, cache = self.hidden(tokens, positions, cache, attention_mask, segment_ids)
    return self.logits(h), cache


def init_cache(cfg: ModelConfig, batch: int, max_len: int | None = None, dtype=None) -> Cache:
  """Zero KV cache pytree with `index` at 0 for every sequence."""
  max_len = cfg.max_len if max_len is None else max_len
  dtype = to_dtype(cfg.dtype) if dtype is None else to_dtype(dtype)
  kv = (batch, cfg.num_kv_heads, cfg.head_dim, max_len), (
      batch,
      cfg.num_kv_heads,
      max_len,
      cfg.head_dim,
  )
  layers = tuple(
      {"k": jnp.zeros(kv[0], dtype), "v": jnp.zeros(kv[1], dtype)} for _ in range(cfg.num_layers)
  )
  return {"index": jnp.zeros((batch,), jnp.int32), "layers": layers}


def cache_shardings(cache: Cache, mesh) -> Any:
  """Cache sharding: sequences over the batch axes, KV heads over `tensor`."""
  from jax.sharding import NamedSharding

  k_axes = ("cache_batch", "kv_heads", None, "cache_length")
  v_axes = ("cache_batch", "kv_heads", "cache_length", None)

  def one(path, x):
    name = getattr(path[-1], "key", None)
    axes = ("cache_batch",) if x.ndim == 1 else (k_axes if name == "k" else v_axes)
    return NamedSharding(mesh, parallel.logical_to_spec(axes, x.shape, mesh))

  return jax.tree_util.tree_map_with_path(one, cache)


def create_model(cfg: ModelConfig, seed: int = 0, mesh=None) -> Transformer:
  """Builds a Transformer, sharded by logical axes when `mesh` is given.

  Parameters are created inside one jit (with sharded outputs on a mesh), so
  initialisation compiles once rather than per parameter, and a model larger
  than one device's memory is never materialised whole.
  """
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(seed)))
  graphdef, abs_state = nnx.split(abstract)
  make = lambda: nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed)))
  if mesh is None:
    state = jax.jit(make)()
  else:
    state = jax.jit(make, out_shardings=parallel.state_shardings(abs_state, mesh))()
  return nnx.merge(graphdef, state)
