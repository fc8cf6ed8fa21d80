"""Advantage estimators, policy losses and their registries (ttc_jax.revision.algo)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttc_jax.revision import algo


@functools.cache
def _loss(name):
  """Jitted registered loss (one compile per shape is faster than op-by-op dispatch)."""
  return jax.jit(algo.get_loss(name))


@functools.cache
def _adv(name):
  return jax.jit(algo.get_advantage(name))


REWARDS = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 3.0]])


def test_group_normalized_by_hand():
  adv = _adv("group_normalized")(REWARDS, eps=0.0)
  s = 0.5 * math.sqrt(3)  # deviations +-0.5, std (ddof=1) = sqrt(1/3)
  np.testing.assert_allclose(
      adv, [[s, -s, -s, s], [0, 0, 0, 0], [-0.5, -0.5, -0.5, 1.5]], rtol=1e-6
  )
  default = _adv("group_normalized")(REWARDS)  # eps=1e-4 in the denominator
  np.testing.assert_allclose(default[0, 0], 0.5 / (math.sqrt(1 / 3) + 1e-4), rtol=1e-6)


def test_flat_groups_are_exactly_zero():
  r = jnp.array([[0.1, 0.1, 0.1], [7.0, 7.0, 7.0], [0.0, 0.0, 0.0]])
  for name in ("group_normalized", "group_mean", "rloo"):
    adv = _adv(name)(r)
    assert adv.dtype == jnp.float32 and adv.shape == (3, 3)
    assert np.all(np.asarray(adv) == 0.0), name
  for name in ("group_normalized", "rloo"):  # a single sample per prompt has no baseline
    assert np.all(np.asarray(_adv(name)(jnp.ones((2, 1)))) == 0.0)


def test_group_mean_and_rloo_by_hand():
  np.testing.assert_allclose(
      _adv("group_mean")(REWARDS),
      [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-0.75, -0.75, -0.75, 2.25]],
      rtol=1e-6,
  )
  # rloo: r_i minus the mean of the other three
  np.testing.assert_allclose(
      _adv("rloo")(REWARDS),
      [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0, 0, 0, 0], [-1, -1, -1, 3]],
      rtol=1e-6,
  )


def _k3(d):
  return math.exp(d) - d - 1


def test_kl_k3_zero_iff_equal_and_positive():
  logp = jnp.log(jnp.array([[0.5, 0.25, 0.1], [0.9, 0.01, 0.3]]))
  kl_k3 = jax.jit(algo.kl_k3)
  assert np.all(np.asarray(kl_k3(logp, logp)) == 0.0)
  ref = logp + jnp.array([[0.1, -0.2, 3.0], [-1.0, 0.5, 1e-3]])
  kl = np.asarray(kl_k3(logp, ref))
  assert np.all(kl > 0)
  np.testing.assert_allclose(kl[0, :2], [_k3(0.1), _k3(-0.2)], rtol=1e-5)
  mask = jnp.ones_like(logp)
  for name in ("clipped_pg", "pg"):
    _, m = _loss(name)(logp, logp, logp, jnp.array([1.0, -1.0]), mask, clip_eps=0.2, kl_coef=1.0)
    assert float(m["kl"]) == 0.0
    _, m = _loss(name)(logp, logp, ref, jnp.array([1.0, -1.0]), mask, clip_eps=0.2, kl_coef=1.0)
    assert float(m["kl"]) > 0.0


# Tiny example: seq 0 has A=+1, ratios [1.5, 0.9, (1.1 masked)];
# seq 1 has A=-2, ratios [0.5, 1.3, 1.0].
OLD = jnp.log(jnp.full((2, 3), 0.5))
RATIO = jnp.array([[1.5, 0.9, 1.1], [0.5, 1.3, 1.0]])
LOGP = OLD + jnp.log(RATIO)
ADV = jnp.array([1.0, -2.0])
MASK = jnp.array([[1, 1, 0], [1, 1, 1]], bool)


def test_clipped_pg_by_hand():
  # eps=0.2. seq0: -min(1.5, 1.2) = -1.2 (clipped), -min(.9, .9) = -.9 -> mean -1.05
  # seq1: -min(-1.0, -1.6) = 1.6 (clipped), -min(-2.6, -2.4) = 2.6, 2.0 -> mean 6.2/3
  pg_loss = (-1.05 + 6.2 / 3) / 2
  loss, m = _loss("clipped_pg")(LOGP, OLD, LOGP, ADV, MASK, clip_eps=0.2, kl_coef=0.5)
  np.testing.assert_allclose(loss, pg_loss, rtol=1e-5)
  np.testing.assert_allclose(m["pg_loss"], pg_loss, rtol=1e-5)
  np.testing.assert_allclose(m["clip_fraction"], 2 / 5, rtol=1e-6)
  np.testing.assert_allclose(m["ratio_mean"], (1.5 + 0.9 + 0.5 + 1.3 + 1.0) / 5, rtol=1e-5)
  np.testing.assert_allclose(
      m["entropy_proxy"], -np.asarray(LOGP)[np.asarray(MASK)].mean(), rtol=1e-5
  )
  # with a reference: + kl_coef * mean over sequences of per-sequence token-mean k3
  delta = jnp.array([[0.1, -0.2, 5.0], [0.0, 0.0, 0.0]])
  loss, m = _loss("clipped_pg")(LOGP, OLD, LOGP + delta, ADV, MASK, clip_eps=0.2, kl_coef=0.5)
  seq0 = (_k3(0.1) + _k3(-0.2)) / 2
  np.testing.assert_allclose(loss, pg_loss + 0.5 * seq0 / 2, rtol=1e-5)
  np.testing.assert_allclose(m["kl"], (_k3(0.1) + _k3(-0.2)) / 5, rtol=1e-5)


def test_clip_fraction_counts_only_binding_clips():
  ratio = jnp.array([[1.5, 0.5, 1.1, 0.95]])
  logp = OLD[:1, :1].repeat(4, 1) + jnp.log(ratio)
  mask = jnp.ones((1, 4))
  _, pos = _loss("clipped_pg")(
      logp, OLD[:1, :1].repeat(4, 1), logp, jnp.array([1.0]), mask, clip_eps=0.2, kl_coef=0.0
  )
  _, neg = _loss("clipped_pg")(
      logp, OLD[:1, :1].repeat(4, 1), logp, jnp.array([-1.0]), mask, clip_eps=0.2, kl_coef=0.0
  )
  np.testing.assert_allclose(pos["clip_fraction"], 0.25)  # only ratio 1.5 binds for A > 0
  np.testing.assert_allclose(neg["clip_fraction"], 0.25)  # only ratio 0.5 binds for A < 0


def test_pg_by_hand_and_empty_sequences_ignored():
  mask = MASK.at[1].set(False)  # seq 1 has no generated tokens: it does not dilute the mean
  loss, m = _loss("pg")(LOGP, OLD, LOGP, ADV, mask, clip_eps=0.2, kl_coef=1.0)
  expected = -(float(LOGP[0, 0]) + float(LOGP[0, 1])) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(m["clip_fraction"]) == 0.0
  loss, _ = _loss("pg")(LOGP, OLD, LOGP, ADV, jnp.zeros_like(MASK), clip_eps=0.2, kl_coef=1.0)
  assert float(loss) == 0.0


@pytest.mark.parametrize("name", ["clipped_pg", "pg"])
def test_gradient_raises_logp_of_positive_advantage_tokens(name):
  loss_fn = algo.get_loss(name)
  logp = OLD + jnp.log(jnp.array([[1.05, 0.9, 1.0], [1.1, 0.95, 1.0]]))  # inside the clip range
  ref = logp - 0.3

  def f(lp):
    return loss_fn(lp, OLD, ref, ADV, MASK, clip_eps=0.2, kl_coef=0.0)[0]

  g = np.asarray(jax.jit(jax.grad(f))(logp))
  assert np.all(g[0, :2] < 0) and np.all(g[1] > 0)  # descent raises logp where A > 0
  assert g[0, 2] == 0.0  # masked token gets no gradient
  # the KL term pulls logp towards the reference (here: down, since ref < logp)
  g_kl = np.asarray(
      jax.jit(
          jax.grad(
              lambda lp: loss_fn(lp, OLD, ref, jnp.zeros(2), MASK, clip_eps=0.2, kl_coef=1.0)[0]
          )
      )(logp)
  )
  assert np.all(g_kl[np.asarray(MASK)] > 0)


def test_jit_with_traced_knobs():
  @jax.jit
  def run(clip_eps, kl_coef):
    return algo.clipped_pg(LOGP, OLD, LOGP - 0.1, ADV, MASK, clip_eps=clip_eps, kl_coef=kl_coef)

  for eps, kc in [(0.2, 0.0), (0.1, 0.05)]:
    loss, m = run(jnp.float32(eps), jnp.float32(kc))
    ref_loss, ref_m = _loss("clipped_pg")(
        LOGP, OLD, LOGP - 0.1, ADV, MASK, clip_eps=eps, kl_coef=kc
    )
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(m["clip_fraction"], ref_m["clip_fraction"])
  assert run._cache_size() == 1


def test_registry_lookup_and_errors():
  assert {"group_normalized", "group_mean", "rloo"} <= set(algo.ADVANTAGES)
  assert {"clipped_pg", "pg"} <= set(algo.LOSSES)
  assert algo.get_loss("clipped_pg") is algo.clipped_pg
  with pytest.raises(KeyError, match="group_normalized"):
    algo.get_advantage("no_such_estimator")
  with pytest.raises(KeyError, match="clipped_pg"):
    algo.get_loss("no_such_loss")
  with pytest.raises(ValueError, match="already registered"):
    algo.register_loss("pg")(lambda *a, **k: None)


def test_register_new_variants():
  try:

    @algo.register_advantage("test_max_baseline")
    def max_baseline(rewards):
      return rewards - rewards.max(axis=1, keepdims=True)

    @algo.register_loss("test_pg_no_kl")
    def pg_no_kl(logp, old_logp, ref_logp, advantages, mask, *, clip_eps, kl_coef):
      return algo.pg(logp, old_logp, ref_logp, advantages, mask, clip_eps=clip_eps, kl_coef=0.0)

    adv = jax.jit(algo.get_advantage("test_max_baseline"))(REWARDS)
    np.testing.assert_allclose(adv[2], [-3, -3, -3, 0])
    loss, _ = jax.jit(algo.get_loss("test_pg_no_kl"))(
        LOGP, OLD, LOGP - 1.0, ADV, MASK, clip_eps=0.2, kl_coef=10.0
    )
    np.testing.assert_allclose(
        loss, _loss("pg")(LOGP, OLD, LOGP, ADV, MASK, clip_eps=0.2, kl_coef=0.0)[0], rtol=1e-6
    )
  finally:
    algo.ADVANTAGES.pop("test_max_baseline", None)
    algo.LOSSES.pop("test_pg_no_kl", None)
