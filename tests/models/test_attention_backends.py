"""Attention implementations (ttc_jax.models.attention) against `reference`: outputs and
gradients on GQA, padding and packed rows, through a cache, under a mesh, and a TPU AOT
compile of splash. Splash runs in the Pallas interpreter here; cudnn only on a GPU."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax import parallel
from ttc_jax.models import attention
from ttc_jax.models.config import ATTENTION_IMPLEMENTATIONS, ModelConfig
from ttc_jax.models.hf_config import config_from_hf, config_to_hf
from ttc_jax.models.transformer import _training_mask, create_model, init_cache

B, T, H, D = 2, 20, 4, 8  # T not a multiple of splash's 128-wide blocks: padded
ON_GPU = jax.default_backend() == "gpu"


def _masking(kind, b=B, t=T):
  """(segment_ids, attention_mask) of `kind`; rows that are real on their own."""
  if kind == "causal":
    return None, None
  if kind == "padding":  # one row right-padded, one left-padded
    am = np.ones((b, t), np.int32)
    am[0, t - 5 :] = 0
    am[1, :3] = 0
    return None, jnp.asarray(am)
  seg = np.zeros((b, t), np.int32)  # packed: segments of several lengths, then padding
  seg[0, :7], seg[0, 7:16] = 1, 2
  seg[1, :12], seg[1, 12:] = 1, 3
  return jnp.asarray(seg), None


def _real(seg, am, b=B, t=T):
  real = jnp.ones((b, t), bool)
  if seg is not None:
    real &= seg > 0
  if am is not None:
    real &= am > 0
  return real


def _qkv(kvh, b=B, t=T, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return (
      jax.random.normal(ks[0], (b, t, H, D)),
      jax.random.normal(ks[1], (b, t, kvh, D)),
      jax.random.normal(ks[2], (b, t, kvh, D)),
  )


def _value_and_grads(impl, q, k, v, mask, real, **kw):
  def f(q, k, v):
    o = attention.attend(q, k, v, mask, impl=impl, **kw)
    # only real rows count (padding rows are unspecified, see the module docstring)
    return jnp.sum(jnp.where(real[:, :, None, None], jnp.sin(o) * o, 0.0)), o

  (_, out), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  return jnp.where(real[:, :, None, None], out, 0.0), grads


def _close(a, b, tol=2e-5):
  """Equal within `tol` of each array's largest magnitude (float32 sums of many terms)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    y = np.asarray(y)
    np.testing.assert_allclose(np.asarray(x), y, atol=tol * max(1.0, np.abs(y).max()), rtol=tol)


@pytest.mark.parametrize("kind", ["causal", "padding", "segments"])
@pytest.mark.parametrize("kvh", [2, 1])
@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_cacheless_outputs_and_gradients_equal_reference(impl, kvh, kind):
  seg, am = _masking(kind)
  mask = _training_mask(jnp.zeros((B, T), jnp.int32), am, seg)
  q, k, v = _qkv(kvh)
  real = _real(seg, am)
  want = jax.jit(lambda *a: _value_and_grads("reference", *a, mask, real))(q, k, v)
  _close(jax.jit(lambda *a: _value_and_grads(impl, *a, mask, real))(q, k, v), want)


@pytest.mark.skipif(not ON_GPU, reason="cuDNN attention needs a GPU (this backend has none)")
@pytest.mark.parametrize("kind", ["causal", "padding", "segments"])
def test_cudnn_equals_reference_on_gpu(kind):
  seg, am = _masking(kind, t=32)
  mask = _training_mask(jnp.zeros((B, 32), jnp.int32), am, seg)
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(2, t=32))
  real = _real(seg, am, t=32)
  f32 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float32), tree)
  want = f32(_value_and_grads("reference", q, k, v, mask, real))
  _close(f32(jax.jit(lambda *a: _value_and_grads("cudnn", *a, mask, real))(q, k, v)), want, 5e-2)


def test_names_resolve_and_invalid_ones_are_rejected():
  assert ATTENTION_IMPLEMENTATIONS == ("auto", "reference", "xla", "cudnn", "splash")
  assert ModelConfig().attention == "auto"
  if jax.default_backend() == "cpu":
    assert attention.resolve_attention("auto") == "reference"
    with pytest.raises(ValueError, match="needs a GPU"):
      attention.resolve_attention("cudnn")
  for name in ("reference", "xla", "splash"):
    assert attention.resolve_attention(name) == name

  def mesh_of(plat):
    return types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform=plat)]))

  assert attention.resolve_attention("auto", mesh_of("tpu")) == "splash"
  assert attention.resolve_attention("auto", mesh_of("cpu")) == "reference"
  assert attention.resolve_attention("auto", mesh_of("gpu"), jnp.bfloat16) == "cudnn"
  assert attention.resolve_attention("auto", mesh_of("gpu"), jnp.float32) == "xla"
  assert attention.resolve_attention("cudnn", mesh_of("gpu"), jnp.float16) == "cudnn"
  with pytest.raises(ValueError, match="bfloat16/float16"):
    attention.resolve_attention("cudnn", mesh_of("gpu"), jnp.float32)
  with pytest.raises(ValueError, match="'auto', 'reference', 'xla', 'cudnn', 'splash'"):
    ModelConfig(attention="flash")
  with pytest.raises(ValueError, match="not one of"):
    attention.resolve_attention("flash")


def test_attention_is_not_exported_to_hf():
  cfg = tiny_config(attention="splash")
  hf = config_to_hf(cfg, "llama")
  assert "attention" not in hf and "splash" not in str(hf)
  assert config_from_hf(hf).attention == "auto"


def _cache_inputs(kvh, t, s=20, seed=1):
  """q [B,t,H,D], a filled cache k [B,Kh,D,s], v [B,Kh,s,D], and rows at index 3 and 10."""
  ks = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(ks[0], (B, t, H, D))
  k = jax.random.normal(ks[1], (B, kvh, D, s))
  v = jax.random.normal(ks[2], (B, kvh, s, D))
  index = jnp.array([3, 10])
  q_pos = index[:, None] + jnp.arange(t)[None]
  return q, k, v, attention.AttentionMask(jnp.arange(s)[None, None] <= q_pos[:, :, None])


@pytest.mark.parametrize("chunk", [8, 64])  # 20 slots: two chunks and a tail; one block
@pytest.mark.parametrize("t", [1, 5])  # decode, prefill
@pytest.mark.parametrize("kvh", [2, 1])
def test_cached_chunked_equals_reference(kvh, t, chunk):
  q, k, v, mask = _cache_inputs(kvh, t)
  real = jnp.ones((B, t), bool)
  want = jax.jit(lambda *a: _value_and_grads("reference", *a, mask, real, cached=True))(q, k, v)
  got = jax.jit(lambda *a: _value_and_grads("xla", *a, mask, real, cached=True, kv_chunk=chunk))(
      q, k, v
  )
  _close(got, want)


def _model_loss_and_grads(cfg, tokens, seg, am):
  pos = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  real = _real(seg, am, *tokens.shape)

  @nnx.jit
  def run(model, tokens, seg, am):
    def loss(model):
      logits, _ = model(tokens, pos, attention_mask=am, segment_ids=seg)
      return jnp.sum(jnp.where(real[..., None], jax.nn.log_softmax(logits), 0.0)), logits

    (_, logits), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    return jnp.where(real[..., None], logits, 0.0), nnx.state(grads)

  return run(create_model(cfg, 3), tokens, seg, am)


@pytest.mark.parametrize("kind", ["padding", "segments"])
@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_model_logits_and_param_grads_equal_reference(impl, kind):
  seg, am = _masking(kind)
  tokens = jax.random.randint(jax.random.key(5), (B, T), 3, 32)
  cfg = tiny_config(num_kv_heads=1, num_layers=1)
  want = _model_loss_and_grads(cfg, tokens, seg, am)
  got = _model_loss_and_grads(cfg.replace(attention=impl), tokens, seg, am)
  _close(got, want, 5e-5)


def _generate(cfg, prompts, am, steps):
  model = create_model(cfg, 4)
  cache = init_cache(cfg, prompts.shape[0], 20)
  pos = jnp.maximum(jnp.cumsum(am, -1) - 1, 0)
  prefill = nnx.jit(lambda m, t, p, c, a: m(t, p, c, attention_mask=a))
  decode = nnx.jit(lambda m, t, p, c: m(t, p, c))
  logits, cache = prefill(model, prompts, pos, cache, am)
  outs = [jnp.where(am[..., None] > 0, logits, 0.0)]
  nxt = jnp.argmax(logits[jnp.arange(prompts.shape[0]), am.sum(-1) - 1], -1)
  for _ in range(steps):
    lg, cache = decode(model, nxt[:, None], cache["index"][:, None], cache)
    outs.append(lg)
    nxt = jnp.argmax(lg[:, 0], -1)
  return outs


@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_prefill_and_decode_through_a_cache_equal_reference(impl, monkeypatch):
  monkeypatch.setattr(attention, "KV_CHUNK", 8)  # 20 cache slots: the chunked online softmax
  prompts = jax.random.randint(jax.random.key(6), (B, 6), 3, 32)
  am = jnp.array([[1] * 6, [1] * 4 + [0] * 2], jnp.int32)  # ragged, right-padded
  want = _generate(tiny_config(), prompts, am, 5)
  _close(_generate(tiny_config(attention=impl), prompts, am, 5), want, 5e-5)


@pytest.mark.parametrize("kvh", [2, 1])  # heads split over `tensor`; replicated
def test_splash_under_a_mesh_equals_reference(kvh):
  b = 4
  seg, _ = _masking("segments", b=b)
  seg = jnp.concatenate([seg, seg[::-1]])[:b]
  mask = _training_mask(jnp.zeros((b, T), jnp.int32), None, seg)
  q, k, v = _qkv(kvh, b=b)
  real = _real(seg, None, b=b)
  want = jax.jit(lambda *a: _value_and_grads("reference", *a, mask, real))(q, k, v)
  mesh = parallel.make_mesh((2, 2, 2), jax.devices()[:8])
  with parallel.use_mesh(mesh):
    got = jax.jit(lambda *a: _value_and_grads("splash", *a, mask, real))(q, k, v)
  _close(got, want)


def test_splash_train_step_compiles_for_tpu_ahead_of_time():
  pytest.importorskip("libtpu", reason="TPU AOT compilation needs libtpu (pip install jax[tpu])")
  from bench_utils import run_benchmark

  args = "--impls reference,splash --topology v5e:2x2 --mesh 1,2,2 --batch 4 --seq 64"
  args += " --heads 4 --kv-heads 2 --head-dim 8 --embed 32 --mlp 64 --layers 1 --vocab 32"
  res = run_benchmark("attention_aot.py", args.split(), ["impls", "device_kind"], timeout=300)
  assert res["device_kind"].startswith("TPU")
  splash, ref = res["impls"]["splash"], res["impls"]["reference"]
  assert splash["tpu_custom_calls"] >= 2, splash  # the kernel's forward and backward
  assert ref["tpu_custom_calls"] == 0 and ref["temp_bytes"] > 0
