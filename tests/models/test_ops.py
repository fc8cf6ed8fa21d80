"""The hand-written VJPs of `models.ops` against autodiff of the plain formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.models import ops


def _rand(key, shape):
  return jax.random.normal(jax.random.key(key), shape, jnp.float32)


@pytest.mark.parametrize(
    "n_in,x_shape,w_shape",
    [(1, (3, 5, 8), (8, 6)), (2, (3, 5, 4, 2), (4, 2, 7)), (1, (6, 8), (8, 2, 3))],
)
def test_dense_value_and_gradients_equal_autodiff_tensordot(n_in, x_shape, w_shape):
  x, w = _rand(0, x_shape), _rand(1, w_shape)
  out_shape = x_shape[: len(x_shape) - n_in] + w_shape[n_in:]
  dy = _rand(2, out_shape)

  def loss(f):
    return lambda a, b: jnp.sum(f(a, b) * dy)

  ours = jax.grad(loss(lambda a, b: ops.dense(a, b, n_in)), argnums=(0, 1))(x, w)
  ref = jax.grad(loss(lambda a, b: jnp.tensordot(a, b, n_in)), argnums=(0, 1))(x, w)
  np.testing.assert_allclose(ops.dense(x, w, n_in), jnp.tensordot(x, w, n_in), rtol=1e-6)
  for g, r in zip(ours, ref):
    assert g.shape == r.shape
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups", [1, 2])
def test_attention_core_value_and_gradients_equal_autodiff(groups):
  """Causal mask with a padded key per row; GQA folds `groups` query heads into rows."""
  b, kvh, t, s, d = 2, 2, 5, 5, 4
  q = _rand(0, (b, kvh, groups * t, d))
  k, v = _rand(1, (b, kvh, s, d)), _rand(2, (b, kvh, s, d))
  causal = jnp.tril(jnp.ones((t, s), bool))
  keys = jnp.array([[True] * s, [True] * (s - 1) + [False]])
  mask = causal[None] & keys[:, None, :]  # [B,T,S]
  dout = _rand(3, q.shape)

  def plain(q, k, v):
    return ops._attention_probs_out(q, k, v, mask, groups)[0]

  def core(q, k, v):
    return ops.attention_core(q, k, v, mask, groups)

  np.testing.assert_allclose(core(q, k, v), plain(q, k, v), rtol=1e-6, atol=1e-7)
  ours = jax.grad(lambda *a: jnp.sum(core(*a) * dout), argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(lambda *a: jnp.sum(plain(*a) * dout), argnums=(0, 1, 2))(q, k, v)
  for g, r in zip(ours, ref):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
  # a masked key gets no gradient
  np.testing.assert_array_equal(ours[1][1, :, s - 1], 0.0)
  np.testing.assert_array_equal(ours[2][1, :, s - 1], 0.0)
