"""Step-level search kernels (beam, lookahead, DVTS) against a host-loop reference.

A random 1-layer policy over 8 token ids (BOS=1, EOS=2, delimiter=4) samples
short ragged steps, so searches see beams finish at different rounds, steps
cut off at max_step_tokens, and real selection; a random ValueModel is the
PRM. Kernels are compiled once per configuration and shared by the tests.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from toy_models import ScriptedPolicy
from ttc_jax import parallel
from ttc_jax.models.reward import create_value_model
from ttc_jax.models.transformer import create_model
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import beam, beam_round, dvts, lookahead, reference, state
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer

CFG = tiny_config(vocab_size=8, num_layers=1, max_len=40)
EOS, DELIM = 2, 4
B, N, M = 8, 4, 2
KW = dict(max_rounds=6, max_step_tokens=6, max_new_tokens=24, eos_id=EOS, delimiter_id=DELIM)
T1 = SamplingParams.make(1.0)
RESULT_FIELDS = (
    "tokens",
    "lengths",
    "num_steps",
    "finished",
    "generated_tokens",
    "policy_tokens",
    "prm_tokens",
    "rounds",
)


@pytest.fixture(scope="module")
def models():
  return create_model(CFG, 1), create_value_model(CFG, 4)


def _prompts(b=B, seed=0):
  rng = np.random.default_rng(seed)
  lens = rng.integers(2, 5, b).astype(np.int32)
  toks = np.zeros((b, 4), np.int32)
  for q, n in enumerate(lens):
    toks[q, :n] = [1] + list(rng.choice([3, 5, 6, 7], n - 1))
  return jnp.asarray(toks), jnp.asarray(lens)


def _assert_same(result, ref, fields=RESULT_FIELDS):
  for f in fields:
    np.testing.assert_array_equal(np.asarray(getattr(result, f)), ref[f], err_msg=f)
  np.testing.assert_allclose(result.scores, ref["scores"], atol=1e-5)
  np.testing.assert_allclose(result.step_scores, ref["step_scores"], atol=1e-5)


@pytest.fixture(scope="module")
def beam_seed0(models):
  return beam.beam_search(*models, *_prompts(), jax.random.key(0), n=N, m=M, params=T1, **KW)


@pytest.mark.parametrize("strategy", ["beam", "dvts", "lookahead"])
def test_kernel_matches_host_loop_reference(models, beam_seed0, strategy):
  """Same rng folding, same beams, tokens, scores, answers and budgets as the host loop."""
  groups, keep = (N // M, 1) if strategy == "dvts" else (1, N // M)
  k = 2 if strategy == "lookahead" else 0
  run = dict(
      beam=beam.beam_search,
      dvts=dvts.dvts,
      lookahead=functools.partial(lookahead.lookahead_search, k=k),
  )[strategy]
  for seed in (0, 1):
    if strategy == "beam" and seed == 0:
      res = beam_seed0
    else:
      res = run(*models, *_prompts(), jax.random.key(seed), n=N, m=M, params=T1, **KW)
    ref = reference.reference_search(
        *models,
        *_prompts(),
        jax.random.key(seed),
        n=N,
        groups=groups,
        keep=keep,
        params=T1,
        lookahead=k,
        **KW,
    )
    _assert_same(res, ref)
    # the case is not trivial: several rounds, finished and cut-off beams, uneven steps
    assert int(res.rounds) >= 3
    fin = np.asarray(res.finished)
    assert fin.any() and (~fin).any()
    assert len(set(np.asarray(res.num_steps).ravel().tolist())) >= 3


def test_budget_counts_match_reference_and_flops(models, beam_seed0):
  ref = reference.reference_search(
      *models, *_prompts(), jax.random.key(0), n=N, groups=1, keep=N // M, params=T1, **KW
  )
  np.testing.assert_array_equal(beam_seed0.generations, np.full(B, N))
  np.testing.assert_allclose(
      beam_seed0.policy_flops,
      state.flops(
          jnp.asarray(ref["policy_tokens"]), jnp.asarray(ref["policy_context"], jnp.float32), CFG
      ),
      rtol=1e-6,
  )
  np.testing.assert_allclose(
      beam_seed0.prm_flops,
      state.flops(
          jnp.asarray(ref["prm_tokens"]),
          jnp.asarray(ref["prm_context"], jnp.float32),
          CFG,
          value_head=True,
      ),
      rtol=1e-6,
  )
  # candidates share prefixes, so they can hold more tokens than were generated, but not
  # fewer than the longest one
  longest = np.asarray(beam_seed0.lengths).max(1)
  assert (np.asarray(beam_seed0.generated_tokens) >= longest).all()


# --- round by round -----------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _init(graphdefs, states, prompts, lens):
  policy, prm = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  return beam_round.init_state(
      policy, prm, prompts, lens, width=N, max_new_tokens=24, max_step_tokens=6, max_rounds=6
  )


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _round(graphdefs, states, st, rng):
  policy, prm = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  return beam_round.search_round(
      policy,
      prm,
      st,
      rng,
      T1,
      jnp.int32(0),
      groups=1,
      keep=N // M,
      max_step_tokens=6,
      eos_id=EOS,
      delimiter_id=DELIM,
  )


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _check_caches(graphdefs, states, st, parents, extra):
  """Reorders (the kernel's gather), then reads both caches next to a cacheless recompute."""
  policy, prm = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  pol, prm_cache = state.take_beams((st.policy, st.prm_cache), parents)
  st = st.replace(policy=pol, prm_cache=prm_cache)
  rows, last = jnp.arange(pol.length.shape[0]), pol.length - 1
  cached, _ = policy(pol.tokens[rows, last][:, None], last[:, None], pol.cache)
  steps = jnp.arange(pol.tokens.shape[1])[None]
  full, _ = policy(
      pol.tokens,
      jnp.broadcast_to(steps, pol.tokens.shape),
      None,
      attention_mask=steps < pol.length[:, None],
  )
  v_cache, _, _ = prm.extend(st.prm_cache, extra[:, None], jnp.ones_like(pol.length))
  longer = jnp.concatenate([pol.tokens, jnp.zeros_like(pol.tokens[:, :1])], 1)
  longer = longer.at[rows, pol.length].set(extra)
  v_full = prm.score(longer, pol.length + 1)[rows, pol.length]
  return st, cached[:, 0], full[rows, last], v_cache, v_full


def _rounds(models, seed=0):
  graphdefs, states = zip(*(nnx.split(m) for m in models))
  st = _init(graphdefs, states, *_prompts())
  out = [st]
  while int(st.round) < 6 and not bool(st.done.all()):
    st = _round(graphdefs, states, st, jax.random.key(seed))
    out.append(st)
  return graphdefs, states, out


def test_reorder_keeps_each_beams_caches_consistent_with_its_tokens(models):
  graphdefs, states, sts = _rounds(models)
  st = sts[2]
  chosen = beam_round.select_parents(st.score, st.done, groups=1, keep=N // M)
  reverse = jnp.broadcast_to(jnp.arange(N)[::-1], (B, N))
  assert (np.asarray(chosen) != np.arange(N)).any()  # selection really moves beams
  for parents in (chosen, reverse):
    extra = jnp.full((B * N,), 5, jnp.int32)
    new, cached, full, v_cache, v_full = _check_caches(graphdefs, states, st, parents, extra)
    src = (np.asarray(parents) + N * np.arange(B)[:, None]).ravel()
    np.testing.assert_array_equal(new.policy.tokens, np.asarray(st.policy.tokens)[src])
    np.testing.assert_array_equal(new.prm_cache["index"], new.policy.length)
    np.testing.assert_array_equal(new.policy.cache["index"], new.policy.length - 1)
    np.testing.assert_allclose(cached, full, atol=1e-4)
    np.testing.assert_allclose(v_cache, v_full, atol=1e-5)


def test_finished_beams_are_never_extended(models, beam_seed0):
  _, _, sts = _rounds(models)
  assert len(sts) >= 4
  # the rounds run one by one reproduce the single-jit kernel
  final = state.result_from_state(
      sts[-1], _prompts()[1], beam_seed0.generations, max_new_tokens=24, policy_cfg=CFG, prm_cfg=CFG
  )
  for f in RESULT_FIELDS:
    np.testing.assert_array_equal(getattr(final, f), getattr(beam_seed0, f), err_msg=f)
  seen_done = 0
  for prev, cur in zip(sts[1:], sts[2:]):
    done = np.asarray(prev.done)
    seen_done += int(done.sum())
    rows = done.ravel()
    for name in ("tokens", "length", "logprobs"):
      np.testing.assert_array_equal(
          np.asarray(getattr(cur.policy, name))[rows], np.asarray(getattr(prev.policy, name))[rows]
      )
    for name in ("score", "step_scores", "num_steps", "finished"):
      np.testing.assert_array_equal(
          np.asarray(getattr(cur, name))[done], np.asarray(getattr(prev, name))[done]
      )
    assert np.asarray(cur.done)[done].all()
  assert seen_done > 0
  # in the final result, a finished candidate ends with its EOS
  last = sts[-1]
  pol = jax.device_get(last.policy)
  for r, fin in enumerate(np.asarray(last.finished).ravel()):
    if fin:
      assert pol.tokens[r, pol.length[r] - 1] == EOS
      assert (pol.tokens[r, pol.length[r] :] == 0).all()


# --- budgets counted by hand on a scripted policy ---------------------------------------

TOK = CharTokenizer()
PROMPT, SOLUTION = "1+2\n", "1+2=3\nAnswer: 3"  # steps of 6 and 10 tokens (EOS included)
ANSWER_AT = len(PROMPT) + len(SOLUTION) - 1


@pytest.fixture(scope="module")
def scripted():
  policy = ScriptedPolicy(TOK, PROMPT + SOLUTION, {ANSWER_AT: {"3": 0.7, "4": 0.3}})
  prm = create_value_model(tiny_config(num_layers=1), 2)
  toks, lens = TOK.encode_batch([PROMPT, PROMPT], 8)
  return policy, prm, jnp.asarray(toks), jnp.asarray(lens)


def _by_hand(rounds, k=0, n=4):
  """Per question: (generated, policy tokens, policy context, PRM tokens, PRM context)."""
  p = 5  # BOS 1+2\n
  runs = [(p, 6), (p + 6, 10)][:rounds]  # (first position, tokens) of each step
  if k and rounds > 1:
    runs.append((p + 6, 10))  # round 0's rollout: "Answer: 3" + EOS
  gen = n * sum(t for _, t in runs)
  pol_ctx = sum(range(1, p)) + n * sum(sum(range(a, a + t)) for a, t in runs)
  prm_ctx = sum(range(1, p + 1)) + n * sum(sum(range(a + 1, a + t + 1)) for a, t in runs)
  return gen, p - 1 + gen, pol_ctx, p + gen, prm_ctx


@pytest.mark.parametrize("k", [0, 1])
def test_budget_counts_by_hand(scripted, k):
  policy, prm, toks, lens = scripted
  res = lookahead.lookahead_search(
      policy,
      prm,
      toks,
      lens,
      jax.random.key(3),
      n=4,
      m=2,
      k=k,
      max_rounds=5,
      max_step_tokens=12,
      max_new_tokens=24,
      eos_id=TOK.EOS,
      delimiter_id=TOK.newline_id,
      params=T1,
  )
  gen, pol_tok, pol_ctx, prm_tok, prm_ctx = _by_hand(2, k)
  assert int(res.rounds) == 2
  assert res.generations.tolist() == [4 * (k + 1)] * 2
  assert res.generated_tokens.tolist() == [gen] * 2
  assert res.policy_tokens.tolist() == [pol_tok] * 2
  assert res.prm_tokens.tolist() == [prm_tok] * 2
  np.testing.assert_allclose(
      res.policy_flops, state.flops(jnp.int32(pol_tok), jnp.float32(pol_ctx), policy.cfg), rtol=1e-6
  )
  np.testing.assert_allclose(
      res.prm_flops,
      state.flops(jnp.int32(prm_tok), jnp.float32(prm_ctx), prm.cfg, value_head=True),
      rtol=1e-6,
  )
  assert res.lengths.tolist() == [[16] * 4] * 2 and res.finished.all()
  assert (np.asarray(res.num_steps) == 2).all()
  picked = state.select_answers(res, TOK, arith.extract_answer, arith.equivalent)
  for q in picked:
    texts = {c["text"] for c in q["candidates"]}
    assert texts <= {"1+2=3\nAnswer: 3", "1+2=3\nAnswer: 4"}
    sums = {a: sum(c["score"] for c in q["candidates"] if c["answer"] == a) for a in "34"}
    assert q["answer"] == max(sums, key=sums.get)


def test_cut_off_step_ends_the_beam(scripted):
  """A step of max_step_tokens tokens without a delimiter is scored, then the beam stops."""
  _, prm, toks, lens = scripted
  policy = ScriptedPolicy(TOK, PROMPT + "1+2+3+4+5+6=21\nAnswer: 21")  # a 14-char line
  # lookahead k=0 is beam search (tested below) and shares the budget test's compilation
  res = lookahead.lookahead_search(
      policy,
      prm,
      toks,
      lens,
      jax.random.key(0),
      n=4,
      m=2,
      k=0,
      max_rounds=5,
      max_step_tokens=12,
      max_new_tokens=24,
      eos_id=TOK.EOS,
      delimiter_id=TOK.newline_id,
      params=T1,
  )
  assert int(res.rounds) == 1 and not res.finished.any()
  assert res.lengths.tolist() == [[12] * 4] * 2 and res.generated_tokens.tolist() == [48] * 2
  assert TOK.decode(res.tokens[0, 0, :12]) == "1+2+3+4+5+6="
  assert (np.asarray(res.num_steps) == 1).all() and (np.asarray(res.scores) > 0).all()


# --- compilation, sharding, strategy equivalences ------------------------------------------


def test_one_compilation_for_a_sweep_of_sampling_knobs(models):
  sizes = []
  for t, k, p in [(0.7, 0, 1.0), (0.0, 0, 1.0), (0.5, 3, 1.0), (1.3, 0, 0.9)]:
    beam.beam_search(
        *models, *_prompts(), jax.random.key(0), n=N, m=M, params=SamplingParams.make(t, k, p), **KW
    )
    sizes.append(beam._search._cache_size())  # the first call may compile (caches emptied)
  assert sizes[0] >= 1 and sizes[1:] == [sizes[0]] * 3


def test_mesh_results_equal_single_device(models, beam_seed0):
  mesh = parallel.make_mesh((8, 1, 1))
  toks, lens = _prompts()
  sharded = []
  for model in models:
    graphdef, params = nnx.split(model)
    sharded.append(nnx.merge(graphdef, parallel.shard_state(params, mesh)))
  with parallel.use_mesh(mesh):
    toks = jax.device_put(toks, parallel.data_sharding(mesh, 2))
    lens = jax.device_put(lens, parallel.data_sharding(mesh, 1))
    res = beam.beam_search(*sharded, toks, lens, jax.random.key(0), n=N, m=M, params=T1, **KW)
  assert len(res.tokens.sharding.device_set) == 8
  for f in RESULT_FIELDS + ("generations",):
    np.testing.assert_array_equal(getattr(res, f), getattr(beam_seed0, f), err_msg=f)
  np.testing.assert_allclose(res.scores, beam_seed0.scores, atol=1e-6)
  np.testing.assert_allclose(res.policy_flops, beam_seed0.policy_flops, rtol=1e-6)


def test_compacting_finished_rows_changes_nothing(models, beam_seed0):
  """Rounds on R/2 or R/4 rows once enough beams finished: the same search (row-keyed noise)."""
  toks, lens = _prompts()
  kw = dict(n=N, groups=1, keep=N // M, params=T1, **KW)
  off = beam.search(*models, toks, lens, jax.random.key(0), compact_levels=0, **kw)
  deep = beam.search(*models, toks, lens, jax.random.key(0), compact_levels=5, **kw)
  for res in (off, deep):
    for f in RESULT_FIELDS + ("generations",):
      np.testing.assert_array_equal(getattr(res, f), getattr(beam_seed0, f), err_msg=f)
    np.testing.assert_allclose(res.step_scores, beam_seed0.step_scores, atol=1e-6)
  # the small sizes were used: some round ran with at most a quarter of the rows active
  steps = np.asarray(beam_seed0.num_steps).ravel()
  assert any(0 < (steps > k).sum() <= steps.size // 4 for k in range(KW["max_rounds"]))
  assert beam.COMPACT_LEVELS > 0
  with pytest.raises(ValueError, match="compact_levels"):
    beam.search(*models, toks, lens, jax.random.key(0), compact_levels=-1, **kw)


def test_no_compaction_across_devices_on_a_mesh(models):
  """Compaction gathers rows across the batch: on a data-split mesh it is off (one program
  for every compact_levels), alone it switches over row counts (lax.switch -> case)."""
  toks, lens = _prompts()
  kw = dict(n=N, groups=1, keep=N // M, params=T1, **KW)

  def text(levels):
    f = lambda t, n: beam.search(*models, t, n, jax.random.key(0), compact_levels=levels, **kw)
    return jax.jit(f).lower(toks, lens).as_text()

  assert text(2).count("stablehlo.case") > text(0).count("stablehlo.case")
  with parallel.use_mesh(parallel.make_mesh((8, 1, 1))):
    assert parallel.batch_shards() == 8
    assert text(2).count("stablehlo.case") == text(0).count("stablehlo.case")
  assert parallel.batch_shards() == 1


def test_lookahead_k0_is_beam_search_and_k_is_traced(models, beam_seed0):
  kw = dict(n=N, m=M, params=T1, **KW)
  res0 = lookahead.lookahead_search(*models, *_prompts(), jax.random.key(0), k=0, **kw)
  for f in RESULT_FIELDS + ("generations",):
    np.testing.assert_array_equal(getattr(res0, f), getattr(beam_seed0, f), err_msg=f)
  np.testing.assert_allclose(res0.step_scores, beam_seed0.step_scores, atol=1e-6)
  size = beam._search._cache_size()
  res2 = lookahead.lookahead_search(*models, *_prompts(), jax.random.key(0), k=2, **kw)
  assert beam._search._cache_size() == size
  assert res2.generations.tolist() == [3 * N] * B
  assert (np.asarray(res2.generated_tokens) > np.asarray(res0.generated_tokens)).any()
  assert (np.asarray(res2.tokens) != np.asarray(res0.tokens)).any()  # rollouts re-rank


def test_dvts_with_one_subtree_is_beam_search_with_width_n(models):
  args = (*models, *_prompts(), jax.random.key(5))
  one = dvts.dvts(*args, n=N, m=N, params=T1, **KW)
  ref = beam.beam_search(*args, n=N, m=N, params=T1, **KW)
  for f in RESULT_FIELDS + ("scores", "step_scores", "policy_flops", "prm_flops"):
    np.testing.assert_array_equal(getattr(one, f), getattr(ref, f), err_msg=f)


def test_selection_rule_and_bad_arguments(models):
  score = jnp.array([[0.1, 0.9, 0.5, 0.7, 0.3, 0.2]])
  done = jnp.array([[False, False, True, False, False, False]])
  # 5 free slots, keep 3 with M=2: ranks 0,1 -> best (1), 2,3 -> second (3), 4 -> third (4)
  parents = beam_round.select_parents(score, done, groups=1, keep=3)
  assert parents.tolist() == [[1, 1, 2, 3, 3, 4]]
  # two groups of 3 (DVTS, M=3): each group's best active beam fills its free slots
  assert beam_round.select_parents(score, done, groups=2, keep=1).tolist() == [[1, 1, 2, 3, 3, 3]]
  with pytest.raises(ValueError, match="must divide"):
    beam.beam_search(*models, *_prompts(), jax.random.key(0), n=4, m=3, **KW)
  with pytest.raises(ValueError, match="exceeds the policy's max_len"):
    beam.beam_search(
        *models, *_prompts(), jax.random.key(0), n=4, m=2, **dict(KW, max_new_tokens=40)
    )
