"""Transformer: shapes, cached decode equals recompute, packing masks, variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.ops import write_rows
from ttc_jax.models.transformer import create_model, init_cache


def _tokens(b, t, seed=0, vocab=32):
  return jax.random.randint(jax.random.key(seed), (b, t), 3, vocab)


def _pos(b, t):
  return jnp.broadcast_to(jnp.arange(t), (b, t))


def test_forward_shapes_and_param_count(tiny_cfg):
  model = create_model(tiny_cfg, 0)
  logits, cache = model(_tokens(3, 7), _pos(3, 7))
  assert logits.shape == (3, 7, tiny_cfg.vocab_size) and logits.dtype == jnp.float32
  assert cache is None
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == tiny_cfg.num_params
  h, _ = model.hidden(_tokens(3, 7), _pos(3, 7))
  assert h.shape == (3, 7, tiny_cfg.embed_dim)


def test_every_param_has_logical_axes(tiny_cfg):
  model = create_model(tiny_config(qkv_bias=True, tie_embeddings=False), 0)
  for path, v in jax.tree.flatten_with_path(
      nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable)
  )[0]:
    axes = v.get_metadata().get("logical_axes")
    assert axes is not None and len(axes) == v[...].ndim, path


@pytest.mark.parametrize(
    "kw",
    [{}, dict(qkv_bias=True, tie_embeddings=False), dict(num_kv_heads=4), dict(num_kv_heads=1)],
)
def test_cached_decode_equals_recompute(kw):
  cfg = tiny_config(**kw)
  model = create_model(cfg, 1)
  toks = _tokens(2, 12, seed=3)
  full, _ = model(toks, _pos(2, 12))
  cache = init_cache(cfg, 2, 16)
  lg, cache = model(toks[:, :5], _pos(2, 12)[:, :5], cache)
  outs = [lg]
  for t in range(5, 12):
    lg, cache = model(toks[:, t : t + 1], _pos(2, 12)[:, t : t + 1], cache)
    outs.append(lg)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=1e-5)
  assert cache["index"].tolist() == [12, 12]


def test_cache_ragged_prompts_with_attention_mask(tiny_cfg):
  """Right-padded prompts of different lengths: each row matches its own recompute."""
  model = create_model(tiny_cfg, 2)
  toks = _tokens(2, 8, seed=5)
  lengths = jnp.array([5, 8])
  cache = init_cache(tiny_cfg, 2, 16)
  mask = jnp.arange(8)[None] < lengths[:, None]
  _, cache = model(toks, _pos(2, 8), cache, attention_mask=mask)
  assert cache["index"].tolist() == [5, 8]
  nxt = jnp.array([[7], [9]])
  lg, _ = model(nxt, lengths[:, None], cache)
  for b in range(2):
    seq = jnp.concatenate([toks[b, : lengths[b]], nxt[b]])[None]
    ref, _ = model(seq, _pos(1, seq.shape[1]))
    np.testing.assert_allclose(lg[b, 0], ref[0, -1], atol=1e-5)


def test_packed_segments_equal_separate_sequences(tiny_cfg):
  model = create_model(tiny_cfg, 4)
  a, b = _tokens(1, 5, seed=1), _tokens(1, 6, seed=2)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 3), jnp.int32)], 1)
  seg = jnp.array([[1] * 5 + [2] * 6 + [0] * 3])
  pos = jnp.array([list(range(5)) + list(range(6)) + [0] * 3])
  out, _ = model(packed, pos, segment_ids=seg)
  ra, _ = model(a, _pos(1, 5))
  rb, _ = model(b, _pos(1, 6))
  np.testing.assert_allclose(out[0, :5], ra[0], atol=1e-5)
  np.testing.assert_allclose(out[0, 5:11], rb[0], atol=1e-5)


def test_bfloat16_compute_runs_and_is_close(tiny_cfg):
  m32 = create_model(tiny_cfg, 0)
  m16 = create_model(tiny_cfg.replace(dtype="bfloat16"), 0)
  x = _tokens(2, 6)
  l32, _ = m32(x, _pos(2, 6))
  l16, _ = m16(x, _pos(2, 6))
  assert l16.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(l32 - l16))) < 0.1


def test_bad_model_config_errors():
  with pytest.raises(ValueError, match="num_kv_heads"):
    ModelConfig(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="unknown ModelConfig field"):
    ModelConfig.from_dict({"embed_dims": 3})
  with pytest.raises(ValueError, match="unknown dtype"):
    ModelConfig(dtype="float8")


@pytest.mark.parametrize("width", [1, 3])
def test_write_rows_equals_vmapped_dynamic_update_slice(width):
  """Per-row window writes (the cache update and the sampler's token writes), with
  starts clamped so the window fits, exactly as lax.dynamic_update_slice does."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(5, 2, 3, 8)), jnp.float32)  # [B,Kh,D,S]
  upd = jnp.asarray(rng.normal(size=(5, 2, 3, width)), jnp.float32)
  start = jnp.array([0, 2, 7, 5, 9], jnp.int32)  # 7, 9: clamped
  want = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (0, 0, i)))(x, upd, start)
  np.testing.assert_array_equal(write_rows(x, start, upd, axis=3), want)
  xt = x.swapaxes(2, 3)  # [B,Kh,S,D]
  want_t = jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice(c, u, (0, i, 0)))(
      xt, upd.swapaxes(2, 3), start
  )
  np.testing.assert_array_equal(write_rows(xt, start, upd.swapaxes(2, 3), axis=2), want_t)


@pytest.mark.parametrize("impl,chunk", [("reference", None), ("xla", None), ("xla", 3)])
def test_shared_prefix_cache_equals_a_plain_cache(impl, chunk, monkeypatch):
  """A prompt held once per question (`prefix_cache`) and read by n rows: the same logits as
  n plain copies, for ragged prompts (one empty), ragged appends, one-token decode, and rows
  gathered across questions (compaction); `chunk` runs the accelerator path's online
  softmax over several suffix chunks after the prefix block."""
  from ttc_jax.models import attention, prefix_cache

  if chunk:
    monkeypatch.setattr(attention, "KV_CHUNK", chunk)
  cfg = tiny_config(attention=impl)
  model = create_model(cfg, 2)
  q, n, p, c = 3, 2, 6, 8
  toks, lens = _tokens(q, p, seed=4), jnp.asarray([6, 3, 0], jnp.int32)
  mask = _pos(q, p) < lens[:, None]
  _, plain = model(toks, _pos(q, p), init_cache(cfg, q, p + c), attention_mask=mask)
  _, pre = model(toks, _pos(q, p), init_cache(cfg, q, p), attention_mask=mask)
  plain = jax.tree.map(lambda x: jnp.repeat(x, n, 0), plain)
  shared = prefix_cache.share(pre, lens, n, c)
  assert shared["layers"][0]["k"].shape == (q * n, cfg.num_kv_heads, cfg.head_dim, c)
  new, ext = _tokens(q * n, 3, seed=5), jnp.asarray([3, 1, 2, 0, 3, 2], jnp.int32)
  real = jnp.arange(3)[None] < ext[:, None]
  pos = plain["index"][:, None] + jnp.arange(3)[None]
  a, plain = model(new, pos, plain, attention_mask=real)
  b, shared = model(new, pos, shared, attention_mask=real)
  np.testing.assert_allclose(
      np.asarray(b)[np.asarray(real)], np.asarray(a)[np.asarray(real)], atol=1e-5
  )
  np.testing.assert_array_equal(shared["index"], plain["index"])
  rows = jnp.asarray([5, 0, 3, 2])
  gathered = prefix_cache.map_rows(lambda x: x[rows], shared)
  gathered = prefix_cache.with_question(gathered, rows // n)
  for cache, idx in ((shared, None), (gathered, rows)):
    ref = plain if idx is None else jax.tree.map(lambda x: x[idx], plain)
    tok = new[:, :1] if idx is None else new[idx, :1]
    at = ref["index"][:, None]
    a1, _ = model(tok, at, ref)
    b1, out = model(tok, at, cache)
    np.testing.assert_allclose(b1, a1, atol=1e-5)
    assert out["prefix"] is cache["prefix"] or jax.tree.all(
        jax.tree.map(lambda x, y: bool((x == y).all()), out["prefix"], cache["prefix"])
    )
