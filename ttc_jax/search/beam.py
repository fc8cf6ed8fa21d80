"""PRM beam search (Snell et al. 2024, §5.2) as one jit-compiled kernel.

With N beams and beam width M, per question:
  1. every active beam samples one step: `sampling.decode` until the step
     delimiter (newline) or EOS, at most `max_step_tokens` tokens;
  2. the PRM scores the new step incrementally (`ValueModel.extend` on the
     step's tokens, its own KV cache holding exactly the tokens scored so
     far), reading the value at the step's last token;
  3. before the next round, the top N/M active beams by that value are kept
     (`lax.top_k`) and each is copied M times into the active slots (a gather
     of tokens and both caches).
The outer `lax.while_loop` runs rounds until every beam is done or after
`max_rounds`; the inner loop over tokens is the sampler's. The N beams left
(finished or not) are the candidates for best-of-N weighted selection
(`state.select_answers`, on host).

Documented choices:
  * Finished beams stay in the pool. A beam that samples EOS (or fills its
    buffer, or writes a step of max_step_tokens tokens without a delimiter:
    cut off, as in Hugging Face's search-and-learn) keeps its slot and its
    final score and is never extended or copied again. It takes no part in
    selection: the F = N - #finished free slots are refilled with the top
    ceil(F / M) active beams, M copies each, best first (rank j of the free
    slots takes parent j // M). So a question never holds more than N beams,
    and each round costs at most N steps.
  * Duplicate prefixes are allowed: copies of one parent that sample the
    same step are separate beams, as in the paper (no de-duplication).
    Greedy decoding (temperature 0) with M > 1 therefore makes M identical
    children.
  * Ties in score go to the lower slot index (`lax.top_k`).
  * `SearchResult.scores` is the PRM value of each candidate's last step.

The same round serves DVTS (selection within groups of slots, `dvts.py`) and
lookahead search (a hook that re-scores each step after a greedy rollout,
`lookahead.py`): `search` takes `groups`, `keep` and `evaluate` for that.
Sampling knobs and the lookahead depth are traced: sweeping them reuses one
compilation; N, M, lengths and the models' structure are static.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from ttc_jax import sampling
from ttc_jax.sampling import DecodeState, SamplingParams
from ttc_jax.search import state as search_state
from ttc_jax.search.state import Budget, SearchResult, SearchState

# evaluate(policy, prm, stepped_state, prm_cache, step_values[B*W], budget, lookahead,
#          *, max_step_tokens, eos_id, delimiter_id) -> (rank_values[B*W], state, cache, budget)
Evaluate = Callable[..., tuple[jax.Array, DecodeState, dict, Budget]]


def run_tokens(tokens: jax.Array, start: jax.Array, width: int) -> jax.Array:
  """tokens[R, L] -> int32[R, width]: row r's tokens from start[r] on (clamped at L-1)."""
  idx = start[:, None] + jnp.arange(width, dtype=jnp.int32)[None]
  return jnp.take_along_axis(tokens, jnp.minimum(idx, tokens.shape[1] - 1), axis=1)


def extend_prm(prm, cache: dict, tokens: jax.Array, start: jax.Array, n: jax.Array, width: int
               ) -> tuple[jax.Array, dict]:
  """PRM values float32[R] at the end of tokens[r, start:start+n] (n <= width), appended to cache.

  Rows with n == 0 get a meaningless value and keep their cache index.
  """
  values, _, cache = prm.extend(cache, run_tokens(tokens, start, width), n)
  chex.assert_shape(values, start.shape)
  return values, cache


def init_state(policy, prm, prompts: jax.Array, prompt_lengths: jax.Array, *, width: int,
               max_new_tokens: int, max_step_tokens: int, max_rounds: int) -> SearchState:
  """Prefills each prompt once (policy and PRM), then copies it into `width` slots."""
  b, p = prompts.shape
  chex.assert_shape(prompt_lengths, (b,))
  buf = p + max_new_tokens
  dec = sampling.prefill(policy, prompts, prompt_lengths, buf)
  prm_cache = prm.init_cache(b, buf + max_step_tokens)
  _, _, prm_cache = prm.extend(prm_cache, prompts, prompt_lengths)
  budget = Budget.zeros(b).add_decode(jnp.ones_like(prompt_lengths), prompt_lengths,
                                      generated=False)
  budget = budget.add_prm(jnp.zeros_like(prompt_lengths), prompt_lengths)
  return SearchState(
      policy=sampling.repeat_state(dec, width),
      prm_cache=jax.tree.map(lambda x: jnp.repeat(x, width, axis=0), prm_cache),
      score=jnp.zeros((b, width), jnp.float32),
      step_scores=jnp.zeros((b, width, max_rounds), jnp.float32),
      num_steps=jnp.zeros((b, width), jnp.int32),
      finished=jnp.zeros((b, width), bool), round=jnp.int32(0), budget=budget)


def select_parents(score: jax.Array, done: jax.Array, *, groups: int, keep: int) -> jax.Array:
  """Parent slot int32[B, W] of every slot for the next round.

  Slots are split into `groups` contiguous groups of S = W / groups; within a
  group the top `keep` active beams by score are kept and copied M = S / keep
  times into the group's active slots (free slot of rank j takes the kept
  beam of rank j // M). Done slots are their own parents.
  """
  b, w = score.shape
  s = w // groups
  m = s // keep
  active = ~done.reshape(b, groups, s)
  ranked = jnp.where(active, score.reshape(b, groups, s), -jnp.inf)
  _, top = jax.lax.top_k(ranked, keep)                                  # [B, G, keep]
  rank = jnp.cumsum(active, axis=-1) - 1                                # among free slots
  chosen = jnp.take_along_axis(top, jnp.clip(rank // m, 0, keep - 1), axis=-1)
  parents = jnp.where(active, chosen, jnp.arange(s)) + (jnp.arange(groups) * s)[:, None]
  chex.assert_shape(parents, (b, groups, s))
  return parents.reshape(b, w).astype(jnp.int32)


def search_round(policy, prm, st: SearchState, rng: jax.Array, params: SamplingParams,
                 lookahead: jax.Array, *, groups: int, keep: int, max_step_tokens: int,
                 eos_id: int, delimiter_id: int, evaluate: Evaluate | None = None
                 ) -> SearchState:
  """Select + expand, sample one step per active beam, score it with the PRM."""
  b, w = st.score.shape
  st = search_state.reorder_beams(st, select_parents(st.score, st.done, groups=groups,
                                                     keep=keep))
  st = search_state.constrain_state(st)
  before = st.policy
  dec, stopped = sampling.decode(policy, before, jax.random.fold_in(rng, st.round), params,
                                 max_new_tokens=max_step_tokens, eos_id=eos_id,
                                 stop_ids=(delimiter_id,))
  new = dec.length - before.length                                      # [B*W]
  stepped = new > 0
  cut_off = stepped & (stopped < 0)               # no delimiter/EOS in the step, or buffer full
  dec = dec.replace(done=dec.done | cut_off)
  values, prm_cache = extend_prm(prm, st.prm_cache, dec.tokens, before.length, new,
                                 max_step_tokens)
  budget = st.budget.add_decode(before.length, dec.length).add_prm(before.length, new)
  rank_values = values
  if evaluate is not None:
    rank_values, dec, prm_cache, budget = evaluate(
        policy, prm, dec, prm_cache, values, budget, lookahead,
        max_step_tokens=max_step_tokens, eos_id=eos_id, delimiter_id=delimiter_id)
  stepped = stepped.reshape(b, w)
  slot = jax.nn.one_hot(st.num_steps, st.step_scores.shape[-1], dtype=bool) & stepped[..., None]
  return st.replace(
      policy=dec, prm_cache=prm_cache,
      score=jnp.where(stepped, rank_values.reshape(b, w), st.score),
      step_scores=jnp.where(slot, values.reshape(b, w)[..., None], st.step_scores),
      num_steps=st.num_steps + stepped,
      finished=st.finished | (stepped & ((stopped == eos_id) & (stopped >= 0)).reshape(b, w)),
      round=st.round + 1, budget=budget)


def run_search(policy, prm, prompts, prompt_lengths, rng, params: SamplingParams,
               lookahead: jax.Array, *, n: int, groups: int, keep: int, max_rounds: int,
               max_step_tokens: int, max_new_tokens: int, eos_id: int, delimiter_id: int,
               evaluate: Evaluate | None = None) -> SearchResult:
  """The whole search, traceable: rounds in a `lax.while_loop` (see module docstring)."""
  st = init_state(policy, prm, prompts, prompt_lengths, width=n, max_new_tokens=max_new_tokens,
                  max_step_tokens=max_step_tokens, max_rounds=max_rounds)
  round_fn = functools.partial(
      search_round, policy, prm, rng=rng, params=params, lookahead=lookahead, groups=groups,
      keep=keep, max_step_tokens=max_step_tokens, eos_id=eos_id, delimiter_id=delimiter_id,
      evaluate=evaluate)
  # Run while (a) rounds remain and (b) some beam of some question is active.
  st = jax.lax.while_loop(lambda s: (s.round < max_rounds) & jnp.any(~s.policy.done),
                          lambda s: round_fn(st=s), st)
  b = prompts.shape[0]
  generations = jnp.full((b,), n, jnp.int32) * (1 + jnp.asarray(lookahead, jnp.int32))
  return search_state.result_from_state(
      st, prompt_lengths.astype(jnp.int32), generations, max_new_tokens=max_new_tokens,
      policy_cfg=policy.cfg, prm_cfg=prm.cfg)


@functools.partial(jax.jit, static_argnames=(
    "graphdefs", "n", "groups", "keep", "max_rounds", "max_step_tokens", "max_new_tokens",
    "eos_id", "delimiter_id", "evaluate"))
def _search(graphdefs, states, prompts, prompt_lengths, rng, params, lookahead, *, n, groups,
            keep, max_rounds, max_step_tokens, max_new_tokens, eos_id, delimiter_id, evaluate):
  policy, prm = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  return run_search(policy, prm, prompts, prompt_lengths, rng, params, lookahead, n=n,
                    groups=groups, keep=keep, max_rounds=max_rounds,
                    max_step_tokens=max_step_tokens, max_new_tokens=max_new_tokens,
                    eos_id=eos_id, delimiter_id=delimiter_id, evaluate=evaluate)


def search(policy, prm, prompts, prompt_lengths, rng, *, n: int, groups: int, keep: int,
           max_rounds: int = 40, max_step_tokens: int, max_new_tokens: int, eos_id: int,
           delimiter_id: int, params: SamplingParams | None = None, lookahead: int = 0,
           evaluate: Evaluate | None = None) -> SearchResult:
  """Validates arguments and runs the jitted kernel (shared by beam, lookahead, DVTS).

  prompts: int32[B, P] right-padded (BOS first), prompt_lengths: int32[B].
  `params` defaults to temperature 1 without filters. Under
  `parallel.use_mesh(mesh)`, with prompts placed by `parallel.data_sharding`,
  questions and their beams are split over the batch mesh axes; beam gathers
  stay within a question's shard.
  """
  prompts = jnp.asarray(prompts, jnp.int32)
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  if prompts.ndim != 2 or prompt_lengths.shape != prompts.shape[:1]:
    raise ValueError(f"prompts {prompts.shape} and prompt_lengths {prompt_lengths.shape} "
                     "must be [B, P] and [B]")
  if n < 1 or groups < 1 or keep < 1 or n % groups or (n // groups) % keep:
    raise ValueError(f"n={n} beams must split into {groups} group(s) whose size is a "
                     f"multiple of keep={keep}")
  if max_rounds < 1 or max_step_tokens < 1 or max_new_tokens < 1:
    raise ValueError(f"max_rounds={max_rounds}, max_step_tokens={max_step_tokens} and "
                     f"max_new_tokens={max_new_tokens} must be >= 1")
  sampling.check_fits(policy.cfg, prompts.shape[1], max_new_tokens, "policy")
  if lookahead < 0:
    raise ValueError(f"lookahead must be >= 0, got {lookahead}")
  params = SamplingParams.make() if params is None else params
  (g_pol, s_pol), (g_prm, s_prm) = nnx.split(policy), nnx.split(prm)
  return _search((g_pol, g_prm), (s_pol, s_prm), prompts, prompt_lengths, rng, params,
                 jnp.int32(lookahead), n=n, groups=groups, keep=keep, max_rounds=max_rounds,
                 max_step_tokens=max_step_tokens, max_new_tokens=max_new_tokens,
                 eos_id=int(eos_id), delimiter_id=int(delimiter_id), evaluate=evaluate)


def beam_search(policy, prm, prompts, prompt_lengths, rng, *, n: int, m: int,
                max_rounds: int = 40, max_step_tokens: int, max_new_tokens: int, eos_id: int,
                delimiter_id: int, params: SamplingParams | None = None) -> SearchResult:
  """PRM beam search with N beams and beam width M (M divides N); see the module docstring.

  Returns the N candidates per question (`SearchResult`); pick answers with
  `state.select_answers`.
  """
  if m < 1 or n % m:
    raise ValueError(f"beam width m={m} must divide n={n}")
  return search(policy, prm, prompts, prompt_lengths, rng, n=n, groups=1, keep=n // m,
                max_rounds=max_rounds, max_step_tokens=max_step_tokens,
                max_new_tokens=max_new_tokens, eos_id=eos_id, delimiter_id=delimiter_id,
                params=params)
