"""Shared prompt caches in the search kernels (`share_prefix`, `models.prefix_cache`) and the
caches' storage dtype (`cache_dtype`): smaller state, the same searches.

The unshared layout (share_prefix=False: a copy of the prompt's caches per beam) is the
comparison: beam search (M = 4 and M = sqrt N), lookahead k = 1 and 3, DVTS, with and without
row compaction, alone and on 8 fake CPU devices, final completion, and an external PRM that
reads its own prompt (`prm_steps.StepTagPRM`) give the same tokens, budgets and FLOPs and
step scores within float tolerance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax import parallel
from ttc_jax.config.common import validate_search
from ttc_jax.config.errors import ConfigError
from ttc_jax.models import prefix_cache
from ttc_jax.models.reward import create_value_model
from ttc_jax.models.transformer import create_model
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import beam, beam_round, dvts, lookahead, state

CFG = tiny_config(vocab_size=8, num_layers=1, max_len=40)
EOS, DELIM = 2, 4
B, N = 8, 4
KW = dict(max_rounds=6, max_step_tokens=6, max_new_tokens=24, eos_id=EOS, delimiter_id=DELIM)
T1 = SamplingParams.make(1.0)
EXACT = (
    "tokens",
    "lengths",
    "num_steps",
    "finished",
    "generations",
    "generated_tokens",
    "policy_tokens",
    "prm_tokens",
    "rounds",
)
RUNS = {
    "beam_m4": functools.partial(beam.beam_search, m=4),
    "beam_sqrt": functools.partial(beam.beam_search, m=2),  # round(sqrt(4))
    "lookahead_k1": functools.partial(lookahead.lookahead_search, m=2, k=1),
    "lookahead_k3": functools.partial(lookahead.lookahead_search, m=2, k=3),
    "dvts": functools.partial(dvts.dvts, m=2),
}


@pytest.fixture(scope="module")
def models():
  return create_model(CFG, 1), create_value_model(CFG, 4)


def _prompts(b=B, seed=0, width=6):
  rng = np.random.default_rng(seed)
  lens = rng.integers(2, width + 1, b).astype(np.int32)
  toks = np.zeros((b, width), np.int32)
  for q, n in enumerate(lens):
    toks[q, :n] = [1] + list(rng.choice([3, 5, 6, 7], n - 1))
  return jnp.asarray(toks), jnp.asarray(lens)


def _assert_equal(a, b, atol=1e-5):
  for f in EXACT:
    np.testing.assert_array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), f)
  np.testing.assert_allclose(a.step_scores, b.step_scores, atol=atol)
  np.testing.assert_allclose(a.scores, b.scores, atol=atol)
  np.testing.assert_allclose(a.policy_flops, b.policy_flops, rtol=1e-6)
  np.testing.assert_allclose(a.prm_flops, b.prm_flops, rtol=1e-6)


_BASE: dict = {}


def _unshared(models, method, seed):
  """The unshared layout's result (computed once per module)."""
  if (method, seed) not in _BASE:
    _BASE[method, seed] = RUNS[method](
        *models, *_prompts(), jax.random.key(seed), n=N, params=T1, share_prefix=False, **KW
    )
  return _BASE[method, seed]


@pytest.mark.parametrize("method", list(RUNS))
def test_shared_prompt_caches_give_the_same_search(models, method):
  base = _unshared(models, method, 0)
  for levels in (0, 5):  # without and with row compaction (rows of several questions)
    res = RUNS[method](
        *models,
        *_prompts(),
        jax.random.key(0),
        n=N,
        params=T1,
        share_prefix=True,
        compact_levels=levels,
        **KW,
    )
    _assert_equal(res, base)
  assert beam.SHARE_PREFIX
  # not trivial: beams finish at different rounds
  fin = np.asarray(base.finished)
  assert fin.any() and (~fin).any()


@pytest.mark.parametrize("method", ["beam_sqrt", "lookahead_k1", "dvts"])
def test_shared_prompt_caches_on_a_mesh(models, method):
  mesh = parallel.make_mesh((8, 1, 1))
  sharded = []
  for model in models:
    graphdef, params = nnx.split(model)
    sharded.append(nnx.merge(graphdef, parallel.shard_state(params, mesh)))
  toks, lens = _prompts()
  with parallel.use_mesh(mesh):
    toks = jax.device_put(toks, parallel.data_sharding(mesh, 2))
    lens = jax.device_put(lens, parallel.data_sharding(mesh, 1))
    res = RUNS[method](*sharded, toks, lens, jax.random.key(0), n=N, params=T1, **KW)
  assert len(res.tokens.sharding.device_set) == 8
  _assert_equal(res, _unshared(models, method, 0))


def test_final_completion_with_shared_caches(models):
  kw = dict(KW, max_rounds=3)
  args = (*models, *_prompts(), jax.random.key(1))
  for run in (RUNS["beam_sqrt"], RUNS["lookahead_k1"]):
    a = run(*args, n=N, params=T1, final_completion=True, share_prefix=False, **kw)
    b = run(*args, n=N, params=T1, final_completion=True, share_prefix=True, **kw)
    _assert_equal(a, b)


@functools.partial(jax.jit, static_argnames=("graphdefs", "share", "cache_dtype"))
def _init(graphdefs, states, prompts, lens, share, cache_dtype=None):
  policy, prm = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  return beam_round.init_state(
      policy,
      prm,
      prompts,
      lens,
      width=N,
      max_new_tokens=24,
      max_step_tokens=6,
      max_rounds=6,
      share_prefix=share,
      cache_dtype=cache_dtype,
  )


def test_shared_layout_state_is_smaller(models):
  graphdefs, states = zip(*(nnx.split(m) for m in models))
  toks, lens = _prompts()
  p, kh, d = toks.shape[1], CFG.num_kv_heads, CFG.head_dim
  plain = _init(graphdefs, states, toks, lens, False)
  shared = _init(graphdefs, states, toks, lens, True)
  pol, prm = shared.policy.cache, shared.prm_cache
  assert pol["layers"][0]["k"].shape == (B * N, kh, d, 24 + 1)
  assert pol["layers"][0]["v"].shape == (B * N, kh, 24 + 1, d)
  assert pol["prefix"]["layers"][0]["k"].shape == (B, kh, d, p - 1)
  assert prm["layers"][0]["k"].shape == (B * N, kh, d, 24 + 6)
  assert prm["prefix"]["layers"][0]["v"].shape == (B, kh, p, d)
  assert plain.policy.cache["layers"][0]["k"].shape == (B * N, kh, d, p + 24)
  assert plain.prm_cache["layers"][0]["k"].shape == (B * N, kh, d, p + 24 + 6)
  size = lambda t: sum(x.size for x in jax.tree.leaves(t))
  assert size(shared) < size(plain)
  saved = size((plain.policy.cache, plain.prm_cache)) - size((pol, prm))
  per_slot = 2 * kh * d * CFG.num_layers  # k and v of one token, one layer each
  # per beam but one, the policy's p - 1 and the PRM's p prompt slots; the prefixes' lengths
  assert saved == per_slot * (B * N - B) * (2 * p - 1) - 2 * B
  # same positions: index counts prompt tokens as in the plain layout
  np.testing.assert_array_equal(pol["index"], plain.policy.cache["index"])
  np.testing.assert_array_equal(prm["index"], plain.prm_cache["index"])
  np.testing.assert_array_equal(prefix_cache.room(pol), np.repeat(np.asarray(lens), N) + 24)


def test_reorder_leaves_the_prefix_and_reads_the_right_question(models):
  """take_beams gathers suffixes only; a row of compacted rounds carries its question."""
  graphdefs, states = zip(*(nnx.split(m) for m in models))
  toks, lens = _prompts()
  st = _init(graphdefs, states, toks, lens, True)
  parents = jnp.broadcast_to(jnp.arange(N)[::-1], (B, N))
  moved = state.take_beams(st.prm_cache, parents)
  same = zip(jax.tree.leaves(moved["prefix"]), jax.tree.leaves(st.prm_cache["prefix"]))
  assert all(x is y for x, y in same)  # not gathered: the same arrays
  rows = jnp.asarray([5 * N + 1, 0, 2 * N + 3])
  part = prefix_cache.with_question(
      jax.tree.map(lambda x: x[rows], {k: v for k, v in st.prm_cache.items() if k != "prefix"})
      | {"prefix": st.prm_cache["prefix"]},
      rows // N,
  )
  np.testing.assert_array_equal(prefix_cache.prefix_length(part), np.asarray(lens)[[5, 0, 2]])
  assert "question" not in prefix_cache.without_question(part)


def test_cache_dtype(models):
  toks, lens = _prompts()
  bf = tiny_config(vocab_size=8, num_layers=1, max_len=40, dtype="bfloat16")
  pol, prm = create_model(bf, 1), create_value_model(bf, 4)
  run = functools.partial(
      beam.beam_search, pol, prm, toks, lens, jax.random.key(0), n=N, m=2, params=T1, **KW
  )
  default = run()
  assert default.step_scores.dtype == jnp.float32
  _assert_equal(run(cache_dtype="float32"), default, atol=0)  # bf16 values stored exactly
  _assert_equal(run(cache_dtype="bfloat16"), default, atol=0)  # the default for bf16 models
  graphdefs, states = zip(*(nnx.split(m) for m in (pol, prm)))
  st = _init(graphdefs, states, toks, lens, True, "float32")
  assert st.policy.cache["prefix"]["layers"][0]["k"].dtype == jnp.float32
  assert st.prm_cache["layers"][0]["v"].dtype == jnp.float32
  with pytest.raises(ValueError, match="narrower"):
    beam.beam_search(*models, toks, lens, jax.random.key(0), n=N, m=2, cache_dtype="bfloat16", **KW)
  with pytest.raises(ValueError, match="cache_dtype"):
    beam.beam_search(*models, toks, lens, jax.random.key(0), n=N, m=2, cache_dtype="fp8", **KW)
  import ml_collections

  ok = ml_collections.ConfigDict(dict(methods=("beam_m4",), budgets=(4,), cache_dtype="bfloat16"))
  validate_search(ok)
  for bad in (dict(cache_dtype="half"), dict(share_prefix="yes")):
    with pytest.raises(ConfigError):
      validate_search(ml_collections.ConfigDict(dict(ok.to_dict(), **bad)))
