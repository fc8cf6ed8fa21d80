"""Attention implementations behind one entry point, `attend` (ModelConfig.attention).

  reference  the CPU path: cacheless attention through `ops.attention_core` (einsums over
             [B,Kh,G*T,S] with a hand-written VJP tuned for XLA:CPU); through a cache,
             one-token decode as broadcast multiply-reduces in the cache's layouts and
             prefill as einsums (what `Attention` computed before the choice existed).
  xla        `jax.nn.dot_product_attention(implementation="xla")` without a cache: GQA
             without repeating K/V, the [B,T,S] visibility as a boolean mask, logits
             accumulated and softmaxed in float32 (`preferred_element_type=float32` for
             bf16 inputs), probabilities cast back to the compute dtype before P.V.
  cudnn      `jax.nn.dot_product_attention(implementation="cudnn")` (GPU, bf16/fp16 only):
             `is_causal` alone for plain causal rows; packed or padded rows add the
             visibility as `mask=` (cuDNN turns it into an additive bias).
  splash     Pallas splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`):
             a static causal mask, packing and padding as segment ids, GQA as multi-head
             splash with Kh key/value heads (no repetition), inside `jax.shard_map` over the
             batch axes and `tensor` when a mesh is active; the interpreter off TPU.

Through a cache (sampling, search) every implementation but `reference` runs
`_cached_chunked`: einsums in the cache's stored layouts, k [B,Kh,D,S] and v [B,Kh,S,D]
(q.K and P.V are both plain [rows, D] x [D, S] / [rows, S] x [S, D] matmuls there, so
the cache is read in place, never transposed), with an online softmax over fixed chunks
of `KV_CHUNK` slots when S is longer, so a layer holds one [B,H,T,chunk] score block at a
time rather than [B,H,T,S] logits, probabilities and their copies.

Rows: a query whose own token is real (attention_mask 1 and segment id > 0) gets the same
output from every implementation. The others (padding) are unspecified: `reference` and
`xla` average the values of all keys in fully masked rows, `splash` lets padding attend to
padding so that no row is empty; nothing real ever reads them (they are masked as keys).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ttc_jax import parallel
from ttc_jax.models.config import ATTENTION_IMPLEMENTATIONS
from ttc_jax.models.ops import NEG_INF, attention_core

KV_CHUNK = 1024  # cache slots per online-softmax chunk (accelerator paths)
SPLASH_BLOCKS = (512, 256, 128)  # splash block sizes tried, largest dividing the padded length
_HALF = (jnp.bfloat16, jnp.float16)
_log = logging.getLogger(__name__)


class AttentionMask(NamedTuple):
  """What a layer may attend to: `visible` [B,T,S] bool (query t sees slot s), and for
  cacheless calls the `segment_ids` [B,T] / `attention_mask` [B,T] it was built from."""

  visible: jax.Array
  segment_ids: jax.Array | None = None
  attention_mask: jax.Array | None = None


def platform(mesh=None) -> str:
  """ "cpu", "gpu" or "tpu": of `mesh`'s devices when given (an AOT topology mesh's abstract
  TPU devices say "tpu" from a CPU process), else of jax's default backend."""
  if mesh is not None:
    return str(mesh.devices.flat[0].platform)
  return jax.default_backend()


def resolve_attention(name: str, mesh=None, dtype=None) -> str:
  """The implementation `name` means on `mesh`'s platform (default backend without one).

  "auto": "reference" on CPU, "splash" on TPU, "cudnn" on GPU for bf16/fp16 compute (cuDNN
  has no float32 kernel; "xla" for float32 or unknown `dtype`). Explicit names are returned
  as given, after a check: "cudnn" anywhere but a GPU, or with a float32 `dtype`, raises
  ValueError (no silent fallback; jax's own errors come later and name no cure); "splash"
  off TPU runs the Pallas interpreter (slow; meant for tests). Raises ValueError for
  unknown names.
  """
  if name not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention={name!r} is not one of {list(ATTENTION_IMPLEMENTATIONS)}")
  plat = platform(mesh)
  half = dtype is not None and jnp.dtype(dtype) in [jnp.dtype(d) for d in _HALF]
  if name == "auto":
    if plat == "tpu":
      return "splash"
    if plat == "gpu":
      return "cudnn" if half else "xla"
    return "reference"
  if name == "cudnn" and plat != "gpu":
    raise ValueError(
        f"attention='cudnn' needs a GPU, but the platform is {plat!r}; "
        "use 'auto', 'xla' or 'reference'"
    )
  if name == "cudnn" and dtype is not None and not half:
    raise ValueError(
        f"attention='cudnn' needs a bfloat16/float16 compute dtype, got {jnp.dtype(dtype)}; "
        "use 'auto' (xla for float32) or 'xla'"
    )
  return name


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: AttentionMask,
    *,
    impl: str = "reference",
    cached: bool = False,
    kv_chunk: int | None = None,
    prefix: tuple | None = None,
) -> jax.Array:
  """softmax(q k^T / sqrt(D) | mask) v per query head -> [B,T,H,D] in q's dtype.

  q: [B,T,H,D]. Without a cache (`cached=False`): k, v [B,T,Kh,D], the same tokens (causal
  self-attention within `mask`). With one: k [B,Kh,D,S], v [B,Kh,S,D], the cache after the
  new tokens were written, and `mask.visible` [B,T,S]. H is a multiple of Kh (GQA). `impl`
  is resolved by `resolve_attention` on the current mesh's platform; `kv_chunk` (default
  `KV_CHUNK`) is the online-softmax chunk of the cached accelerator path. Differentiable.

  `prefix` (with a cache; `prefix_cache`): (pk [G,Kh,D,P], pv [G,Kh,P,D], visible [G,P]),
  keys/values shared by the R/G consecutive rows of each group (a question's prompt), read
  before the rows' own k/v (their suffix) in one softmax over both blocks.
  """
  impl = resolve_attention(impl, parallel.current_mesh(), q.dtype)
  if cached and prefix is not None:
    if impl == "reference":
      return _reference_prefixed(q, k, v, mask.visible, *prefix)
    return _cached_chunked(q, k, v, mask.visible, kv_chunk or KV_CHUNK, prefix)
  if cached:
    if impl == "reference":
      return _reference_cached(q, k, v, mask.visible)
    return _cached_chunked(q, k, v, mask.visible, kv_chunk or KV_CHUNK)
  if impl == "reference":
    return _reference(q, k, v, mask.visible)
  if impl in ("xla", "cudnn"):
    return _dot_product(q, k, v, mask, impl)
  return _splash(q, k, v, mask, interpret=platform(parallel.current_mesh()) != "tpu")


# --- reference (XLA:CPU) ----------------------------------------------------------------


def _reference(q, k, v, visible):
  """Head-major layout (the query heads of one KV head folded into the rows) and the
  hand-written VJP of `attention_core`; ~1.1x per train step on the quick model."""
  b, t, h, hd = q.shape
  kvh = k.shape[2]
  g = h // kvh
  qh = q.reshape(b, t, kvh, g, hd).transpose(0, 2, 3, 1, 4).reshape(b, kvh, g * t, hd)
  out = attention_core(qh, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), visible, g)
  return out.reshape(b, kvh, g, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd)


def _reference_cached(q, k, v, visible):
  b, t, h, hd = q.shape
  kvh = k.shape[1]
  qg = q.reshape(b, t, kvh, h // kvh, hd)
  dt = q.dtype
  if t == 1:
    # One-token decode: broadcast multiply-reduces in the cache's stored layouts,
    # vectorised along contiguous slots (keys) and head dims (values). On XLA:CPU this is
    # ~4.7x faster per layer than the same reduction over a [B,S,Kh,D] cache, and einsums
    # make it transpose the whole cache or run 2*B*Kh tiny matmuls per step.
    logits = jnp.sum(qg[:, 0, :, :, :, None] * k[:, :, None], 3)  # [B,Kh,G,S]
    logits = logits.astype(jnp.float32) * hd**-0.5
    logits = jnp.where(visible[:, 0, None, None, :], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    return jnp.sum(probs[..., None] * v[:, :, None], 3).reshape(b, 1, h, hd)
  logits = jnp.einsum("btkgd,bkds->bkgts", qg, k).astype(jnp.float32) * hd**-0.5
  logits = jnp.where(visible[:, None, None], logits, NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1).astype(dt)
  return jnp.einsum("bkgts,bksd->btkgd", probs, v).reshape(b, t, h, hd)


def _reference_prefixed(q, k, v, visible, pk, pv, pvis):
  """`_reference_cached` over (shared prefix) + (own suffix): the prefix scores of the n rows
  of a group against its [G,...] prefix (rows reshaped to [G, n], no per-row copy), one
  float32 softmax over both blocks, then the two P.V parts summed."""
  b, t, h, hd = q.shape
  kvh, g, nq = k.shape[1], h // k.shape[1], pk.shape[0]
  n = b // nq
  qg = q.reshape(b, t, kvh, g, hd)
  qq = qg.reshape(nq, n, t, kvh, g, hd)
  dt = q.dtype
  if t == 1:
    ls = jnp.sum(qg[:, 0, :, :, :, None] * k[:, :, None], 3)  # [B,Kh,G,C]
    lp = jnp.sum(qq[:, :, 0, :, :, :, None] * pk[:, None, :, None], 4)  # [Q,n,Kh,G,P]
    lp = jnp.where(pvis[:, None, None, None, :], lp.astype(jnp.float32), NEG_INF)
    ls = jnp.where(visible[:, 0, None, None, :], ls.astype(jnp.float32), NEG_INF)
    p = pk.shape[-1]
    logits = jnp.concatenate([lp.reshape(b, kvh, g, p), ls], -1) * hd**-0.5
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    pp, ps = probs[..., :p].reshape(nq, n, kvh, g, p), probs[..., p:]
    out_p = jnp.sum(pp[..., None] * pv[:, None, :, None], 4).reshape(b, kvh, g, hd)
    out_s = jnp.sum(ps[..., None] * v[:, :, None], 3)
    return (out_p + out_s).reshape(b, 1, h, hd)
  lp = jnp.einsum("qntkgd,qkdp->qnkgtp", qq, pk).astype(jnp.float32)
  lp = jnp.where(pvis[:, None, None, None, None, :], lp, NEG_INF)
  ls = jnp.einsum("btkgd,bkds->bkgts", qg, k).astype(jnp.float32)
  ls = jnp.where(visible[:, None, None], ls, NEG_INF)
  p = pk.shape[-1]
  logits = jnp.concatenate([lp.reshape(b, kvh, g, t, p), ls], -1) * hd**-0.5
  probs = jax.nn.softmax(logits, axis=-1).astype(dt)
  pp, ps = probs[..., :p].reshape(nq, n, kvh, g, t, p), probs[..., p:]
  out_p = jnp.einsum("qnkgtp,qkpd->qntkgd", pp, pv).reshape(b, t, kvh, g, hd)
  out_s = jnp.einsum("bkgts,bksd->btkgd", ps, v)
  return (out_p + out_s).reshape(b, t, h, hd)


# --- through a cache, accelerators ------------------------------------------------------


def _scores(qg, k, visible):
  """float32 [B,Kh,G,T,C] scaled logits of qg [B,T,Kh,G,D] against k [B,Kh,D,C]."""
  logits = jnp.einsum("btkgd,bkdc->bkgtc", qg, k, preferred_element_type=jnp.float32)
  return jnp.where(visible[:, None, None], logits * qg.shape[-1] ** -0.5, NEG_INF)


def _prefix_block(qg, pk, pv, pvis):
  """Online-softmax carry (max, sum, acc) [B,Kh,G,T](,D) of the shared prefix block: the
  rows' queries reshaped to [G, n] groups and contracted against the [G,...] prefix."""
  b, t, kvh, g, hd = qg.shape
  nq, p = pk.shape[0], pk.shape[-1]
  qq = qg.reshape(nq, b // nq, t, kvh, g, hd)
  sc = jnp.einsum("qntkgd,qkdp->qnkgtp", qq, pk, preferred_element_type=jnp.float32)
  sc = jnp.where(pvis[:, None, None, None, None, :], sc * hd**-0.5, NEG_INF)
  m = sc.max(-1)
  e = jnp.exp(sc - m[..., None])
  acc = jnp.einsum(
      "qnkgtp,qkpd->qnkgtd", e.astype(qg.dtype), pv, preferred_element_type=jnp.float32
  )
  return m.reshape(b, kvh, g, t), e.sum(-1).reshape(b, kvh, g, t), acc.reshape(b, kvh, g, t, hd)


def _cached_chunked(q, k, v, visible, chunk, prefix=None):
  """Attention over the cache in its layouts; an online softmax over `chunk`-slot pieces
  (a scan, then the remainder) when S > chunk, so one score block is live at a time. A
  shared `prefix` (see `attend`) is the first block of the online softmax."""
  b, t, h, hd = q.shape
  kvh, s = k.shape[1], k.shape[-1]
  qg = q.reshape(b, t, kvh, h // kvh, hd)
  dt = q.dtype

  def pv(p, vc):
    return jnp.einsum("bkgtc,bkcd->bkgtd", p.astype(dt), vc, preferred_element_type=jnp.float32)

  def finish(out):  # [B,Kh,G,T,D] -> [B,T,H,D]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd).astype(dt)

  if s <= chunk and prefix is None:
    return finish(pv(jax.nn.softmax(_scores(qg, k, visible), axis=-1), v))

  def block(carry, kc, vc, mc):
    m, l, acc = carry
    sc = _scores(qg, kc, mc)
    m_new = jnp.maximum(m, sc.max(-1))
    p = jnp.exp(sc - m_new[..., None])
    r = jnp.exp(m - m_new)
    return m_new, l * r + p.sum(-1), acc * r[..., None] + pv(p, vc)

  def step(carry, i):
    sl = lambda x, ax: jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk, axis=ax)
    return block(carry, sl(k, 3), sl(v, 2), sl(visible, 2)), None

  g = h // kvh
  carry = (
      jnp.full((b, kvh, g, t), NEG_INF, jnp.float32),
      jnp.zeros((b, kvh, g, t), jnp.float32),
      jnp.zeros((b, kvh, g, t, hd), jnp.float32),
  )
  if prefix is not None:
    carry = _prefix_block(qg, *prefix)
  n = s // chunk
  if n:
    carry, _ = jax.lax.scan(step, carry, jnp.arange(n))
  if s % chunk:
    tail = slice(n * chunk, s)
    carry = block(carry, k[..., tail], v[:, :, tail], visible[..., tail])
  _, l, acc = carry
  return finish(acc / l[..., None])


# --- jax.nn.dot_product_attention -------------------------------------------------------


def _dot_product(q, k, v, mask, impl):
  """xla: the visibility as a boolean mask (same rows as `reference`, fully masked ones
  included). cudnn: `is_causal` alone when nothing is packed or padded, else plus the mask."""
  plain = mask.segment_ids is None and mask.attention_mask is None
  dense = None if (impl == "cudnn" and plain) else mask.visible[:, None]
  return jax.nn.dot_product_attention(
      q, k, v, mask=dense, is_causal=impl == "cudnn", implementation=impl
  )


# --- splash (TPU Pallas) ----------------------------------------------------------------


def splash_segment_ids(mask: AttentionMask) -> jax.Array | None:
  """int32 [B,T] ids for splash: a real token keeps its segment (1 without packing),
  padding (attention_mask 0 or segment 0) gets -1, so real queries see exactly the keys the
  reference mask shows them and padding sees padding (never an empty row). None when
  nothing is packed or padded (the causal mask alone)."""
  seg, am = mask.segment_ids, mask.attention_mask
  if seg is None and am is None:
    return None
  b, t = (seg if seg is not None else am).shape
  ids = jnp.ones((b, t), jnp.int32) if seg is None else seg.astype(jnp.int32)
  real = jnp.ones((b, t), bool) if seg is None else seg > 0
  if am is not None:
    real = real & am.astype(bool)
  return jnp.where(real, ids, -1)


def _splash_kernel(heads: int, length: int, block: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  sizes = sk.BlockSizes(
      block_q=block,
      block_kv=block,
      block_kv_compute=block,
      block_q_dkv=block,
      block_kv_dkv=block,
      block_kv_dkv_compute=block,
      use_fused_bwd_kernel=True,
  )
  causal = sm.MultiHeadMask([sm.CausalMask((length, length)) for _ in range(heads)])
  kernel = sk.make_splash_mha(
      causal, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
  )
  return kernel, sk.SegmentIds


def _splash_heads(mesh, h: int, kvh: int):
  """The mesh axis that splits splash's heads (`act_heads`' rule), None to replicate them:
  query and K/V heads go together, so it must divide both (as `parallel.logical_to_spec`
  requires of a model's head dimensions anyway)."""
  if mesh is None:
    return None
  axis = dict(parallel.current_rules()).get("act_heads")
  if not isinstance(axis, str) or mesh.shape.get(axis, 1) == 1:
    return None
  if h % mesh.shape[axis] or kvh % mesh.shape[axis]:
    _log.info("splash: %d heads / %d KV heads not split over %s: replicated", h, kvh, axis)
    return None
  return axis


def _splash(q, k, v, mask: AttentionMask, interpret: bool):
  b, t, h, hd = q.shape
  kvh = k.shape[2]
  ids = splash_segment_ids(mask)
  tp = -(-t // 128) * 128
  block = next(c for c in SPLASH_BLOCKS if tp % c == 0)
  qh = (q * jnp.asarray(hd**-0.5, q.dtype)).transpose(0, 2, 1, 3)  # [B,H,T,D]
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B,Kh,T,D]
  if tp != t:
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, tp - t), (0, 0)))
    qh, kh, vh = pad(qh), pad(kh), pad(vh)
    ids = None if ids is None else jnp.pad(ids, ((0, 0), (0, tp - t)), constant_values=-1)
  mesh = parallel.current_mesh()
  head_axis = _splash_heads(mesh, h, kvh)

  def run(qh, kh, vh, *seg):
    kernel, segment_ids = _splash_kernel(qh.shape[1], tp, block, interpret)
    if not seg:
      return jax.vmap(lambda a, b_, c: kernel(a, b_, c))(qh, kh, vh)
    return jax.vmap(lambda a, b_, c, s: kernel(a, b_, c, segment_ids(s, s)))(qh, kh, vh, seg[0])

  args = (qh, kh, vh) + (() if ids is None else (ids,))
  if mesh is None:
    out = run(*args)
  else:
    from jax.sharding import PartitionSpec as P

    batch = parallel.logical_to_spec(("batch",), (b,), mesh)[0]
    spec = P(batch, head_axis, None, None)
    specs = (spec, spec, spec) + (() if ids is None else (P(batch, None),))
    out = jax.shard_map(run, mesh=mesh, in_specs=specs, out_specs=spec, check_vma=False)(*args)
  return out[:, :, :t].transpose(0, 2, 1, 3)
