"""Array kernels of the transformer with hand-written VJPs for XLA:CPU, and batched row writes.

`dense` (a tensordot whose weight gradient is one contraction over the leading
axes), `attention_core` (head-major softmax attention with the textbook
backward) and `write_rows` (per-row window writes into a KV cache as one
batched scatter). `ttc_jax.models.transformer` builds its layers from them (attention_core
through `ttc_jax.models.attention`, as its "reference" implementation);
`docs/benchmarks.md` records what each custom rule was worth.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NEG_INF = -1e30


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense(x: jax.Array, w: jax.Array, n_in: int = 1) -> jax.Array:
  """Contracts the last `n_in` axes of x[..., *in] with the first of w[*in, *out].

  Same value as `jnp.tensordot(x, w, n_in)`; the custom VJP computes the weight
  gradient as one contraction of x with dy over the leading axes. Autodiff's
  own rule makes XLA:CPU transpose the (large) activation gradient, fused with
  its elementwise producer, which made a training step ~1.4x slower.
  """
  return jnp.tensordot(x, w, n_in)


def _dense_fwd(x, w, n_in):
  return jnp.tensordot(x, w, n_in), (x, w)


def _dense_bwd(n_in, res, dy):
  x, w = res
  lead = x.ndim - n_in
  dx = jnp.tensordot(dy, w, axes=(tuple(range(lead, dy.ndim)), tuple(range(n_in, w.ndim))))
  dw = jnp.tensordot(x, dy, axes=(tuple(range(lead)), tuple(range(lead))))
  return dx, dw


dense.defvjp(_dense_fwd, _dense_bwd)


def _attention_probs_out(q, k, v, mask, groups):
  """q [B,Kh,G*T,D] (query heads of one KV head folded into rows), k/v [B,Kh,S,D],
  mask [B,T,S] bool -> (out [B,Kh,G*T,D], probs [B,Kh,G*T,S]); softmax in float32."""
  b, kvh, gt, hd = q.shape
  t, s = gt // groups, k.shape[2]
  logits = jnp.einsum("bkqd,bksd->bkqs", q, k).astype(jnp.float32) * hd**-0.5
  logits = jnp.where(mask[:, None, None], logits.reshape(b, kvh, groups, t, s), NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype).reshape(b, kvh, gt, s)
  return jnp.einsum("bkqs,bksd->bkqd", probs, v), probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attention_core(q, k, v, mask, groups):
  """softmax(q k^T / sqrt(D) | mask) v in the head-major layout of `_attention_probs_out`.

  The custom VJP is the textbook one with rowsum(dP * P) = rowsum(dO * O), so the
  backward pass makes fewer passes over the [.., T, S] tensors than autodiff's.
  """
  return _attention_probs_out(q, k, v, mask, groups)[0]


def _attention_fwd(q, k, v, mask, groups):
  out, probs = _attention_probs_out(q, k, v, mask, groups)
  return out, (q, k, v, mask, probs, out)


def _attention_bwd(groups, res, dout):
  q, k, v, mask, probs, out = res
  f32 = jnp.float32
  # dV and dK as (small^T @ big)^T: contracting the [.., Q, S] operand over Q
  # directly sends XLA:CPU to a slower dot (2.3x on the quick model).
  dv = jnp.einsum("bkqd,bkqs->bkds", dout, probs).swapaxes(-1, -2)
  dprobs = jnp.einsum("bkqd,bksd->bkqs", dout, v).astype(f32)
  rowsum = jnp.sum(dout.astype(f32) * out.astype(f32), axis=-1, keepdims=True)
  dlogits = (probs.astype(f32) * (dprobs - rowsum) * q.shape[-1] ** -0.5).astype(q.dtype)
  dq = jnp.einsum("bkqs,bksd->bkqd", dlogits, k)
  dk = jnp.einsum("bkqd,bkqs->bkds", q, dlogits).swapaxes(-1, -2)
  return dq, dk, dv, None


attention_core.defvjp(_attention_fwd, _attention_bwd)


def write_rows(x: jax.Array, start: jax.Array, update: jax.Array, axis: int) -> jax.Array:
  """x[b, ..., start[b] : start[b] + w, ...] = update[b] along `axis`, for every row b.

  x: [B, ...]; start: int32[B]; update: [B, ...] with x's shape except `w` on `axis`.
  Same values as a vmapped `lax.dynamic_update_slice` (starts clamped so the window
  fits), written as one scatter whose batch axis is a scatter batching dimension:
  under a data-sharded mesh every device writes its own rows, where an explicit
  row-index vector makes GSPMD all-gather the indices (collectives per decode step).
  """
  dnums = jax.lax.ScatterDimensionNumbers(
      update_window_dims=tuple(range(1, update.ndim)),
      inserted_window_dims=(),
      scatter_dims_to_operand_dims=(axis,),
      operand_batching_dims=(0,),
      scatter_indices_batching_dims=(0,),
  )
  return jax.lax.scatter(
      x,
      start.astype(jnp.int32)[:, None],
      update,
      dnums,
      indices_are_sorted=True,
      unique_indices=True,
      mode=jax.lax.GatherScatterMode.CLIP,
  )
