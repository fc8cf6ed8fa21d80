"""One round of the PRM search kernel (`beam.search`): select, expand, sample, score.

`select_parents` picks each slot's parent (top `keep` active beams per group,
copied into the free slots), `sample_and_score` reorders the beams and both KV
caches by those parents and samples one step per active row (compacted to R/2
or R/4 rows as beams finish), and the PRM scores the new step incrementally
(`extend_prm`). `search_round` is the whole round, the body of the kernel's
`lax.while_loop`; `init_state` prefills the prompts before the first round;
`completion_round` is the optional final completion after the last one.
The choices these encode (finished beams stay, duplicates allowed, ties to
the lower slot) are documented in `beam`.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from ttc_jax import parallel, sampling
from ttc_jax.models import prefix_cache
from ttc_jax.sampling import DecodeState, SamplingParams
from ttc_jax.search import state as search_state
from ttc_jax.search.state import Budget, SearchState

# evaluate(policy, prm, stepped_state, prm_cache, step_values[B*W], budget, lookahead,
#          *, max_step_tokens, eos_id, delimiter_id) -> (rank_values[B*W], state, cache, budget)
Evaluate = Callable[..., tuple[jax.Array, DecodeState, dict, Budget]]


def run_tokens(tokens: jax.Array, start: jax.Array, width: int) -> jax.Array:
  """tokens[R, L] -> int32[R, width]: row r's tokens from start[r] on (clamped at L-1)."""
  idx = start[:, None] + jnp.arange(width, dtype=jnp.int32)[None]
  return jnp.take_along_axis(tokens, jnp.minimum(idx, tokens.shape[1] - 1), axis=1)


def extend_prm(
    prm, cache: dict, tokens: jax.Array, start: jax.Array, n: jax.Array, width: int
) -> tuple[jax.Array, dict]:
  """PRM values float32[R] at the end of tokens[r, start:start+n] (n <= width), appended to cache.

  Rows with n == 0 get a meaningless value and keep their cache index.
  """
  values, _, cache = prm.extend(cache, run_tokens(tokens, start, width), n)
  chex.assert_shape(values, start.shape)
  return values, cache


def extend_run(
    prm, cache: dict, tokens: jax.Array, start: jax.Array, n: jax.Array, width: int
) -> tuple[jax.Array, dict]:
  """`extend_prm` for runs longer than `width` (a final completion): the first n - 1 tokens
  in chunks of `width` as plain text (`prm.extend_prompt` where the PRM has one: no
  step-end handling), then the last token, whose value is returned."""
  plain = getattr(prm, "extend_prompt", prm.extend)
  body = jnp.maximum(n - 1, 0)

  def step(carry):
    j, cache = carry
    m = jnp.clip(body - j * width, 0, width)
    _, _, cache = plain(cache, run_tokens(tokens, start + j * width, width), m)
    return j + 1, cache

  _, cache = jax.lax.while_loop(lambda c: c[0] * width < jnp.max(body), step, (jnp.int32(0), cache))
  return extend_prm(prm, cache, tokens, start + body, (n > 0).astype(jnp.int32), 1)


def init_state(
    policy,
    prm,
    prompts: jax.Array,
    prompt_lengths: jax.Array,
    *,
    width: int,
    max_new_tokens: int,
    max_step_tokens: int,
    max_rounds: int,
    prm_prompts: jax.Array | None = None,
    prm_prompt_lengths: jax.Array | None = None,
    prm_cache_len: int | None = None,
    share_prefix: bool = False,
    cache_dtype=None,
) -> SearchState:
  """Prefills each prompt once (policy and PRM), then copies it into `width` slots.

  The PRM reads `prm_prompts` [B, P'] (its own prompt format; default: the policy's
  prompts) as plain text (`prm.extend_prompt` where it has one) into a cache of
  `prm_cache_len` slots (default P + max_new_tokens + max_step_tokens).

  `share_prefix`: both caches are shared-prefix caches (`models.prefix_cache`): the prompt
  once per question (policy [B,Kh,D,P-1] per layer, PRM [B,Kh,D,P']) and per beam a suffix
  for the rest (policy max_new_tokens + 1 slots, PRM prm_cache_len - P'); each beam then
  generates at most max_new_tokens tokens (a plain cache lets a shorter prompt's beams run
  to the buffer's end). Otherwise every slot holds a copy of its prompt's caches.
  `cache_dtype`: the caches' storage dtype (default: each model's compute dtype)."""
  b, p = prompts.shape
  chex.assert_shape(prompt_lengths, (b,))
  buf = p + max_new_tokens
  prm_len = prm_cache_len or buf + max_step_tokens
  if prm_prompts is None:
    prm_prompts, prm_prompt_lengths = prompts, prompt_lengths
  p_prm = prm_prompts.shape[1]
  extend_prompt = getattr(prm, "extend_prompt", prm.extend)
  if share_prefix:
    dec = sampling.prefill(policy, prompts, prompt_lengths, buf, cache_dtype, cache_len=p)
    prm_cache = prm.init_cache(b, p_prm, cache_dtype)
    _, _, prm_cache = extend_prompt(prm_cache, prm_prompts, prm_prompt_lengths)
    pol_cache = prefix_cache.share(
        dec.cache, prompt_lengths - 1, width, max_new_tokens + 1, slots=max(p - 1, 1)
    )
    policy_state = sampling.repeat_state(dec.replace(cache={}), width).replace(cache=pol_cache)
    prm_cache = prefix_cache.share(prm_cache, prm_prompt_lengths, width, prm_len - p_prm)
  else:
    dec = sampling.prefill(policy, prompts, prompt_lengths, buf, cache_dtype)
    prm_cache = prm.init_cache(b, prm_len, cache_dtype)
    _, _, prm_cache = extend_prompt(prm_cache, prm_prompts, prm_prompt_lengths)
    policy_state = sampling.repeat_state(dec, width)
    prm_cache = jax.tree.map(lambda x: jnp.repeat(x, width, axis=0), prm_cache)
  budget = Budget.zeros(b).add_decode(
      jnp.ones_like(prompt_lengths), prompt_lengths, generated=False
  )
  budget = budget.add_prm(jnp.zeros_like(prm_prompt_lengths), prm_prompt_lengths)
  return SearchState(
      policy=policy_state,
      prm_cache=prm_cache,
      score=jnp.zeros((b, width), jnp.float32),
      step_scores=jnp.zeros((b, width, max_rounds), jnp.float32),
      num_steps=jnp.zeros((b, width), jnp.int32),
      finished=jnp.zeros((b, width), bool),
      round=jnp.int32(0),
      budget=budget,
  )


def _put_rows(tree, idx: jax.Array, part):
  return prefix_cache.map_rows(lambda x, y: x.at[idx].set(y), tree, part)


def _with_question(dec: DecodeState, cache: dict, question: jax.Array | None):
  """Both caches with (question int32[R']) or without (None) each row's question."""
  if question is None:
    f = prefix_cache.without_question
  else:
    f = lambda c: prefix_cache.with_question(c, question)
  return dec.replace(cache=f(dec.cache)), f(cache)


def sample_and_score(
    policy,
    prm,
    state: DecodeState,
    prm_cache: dict,
    parents: jax.Array,
    key: jax.Array,
    params: SamplingParams,
    *,
    max_step_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | tuple[int, ...],
    compact_levels: int = 0,
) -> tuple[DecodeState, jax.Array, jax.Array, dict]:
  """Reorders beams by `parents` [B, W], then one step for every active row, PRM-scored.

  `state` and `prm_cache` hold R = B*W rows before the reorder. Returns the
  reordered, stepped state, `stopped[R]` (see `sampling.decode`), PRM values
  float32[R] at each new step's end (meaningless where nothing was sampled)
  and the PRM cache. Compaction: finished rows cost as much as active ones in
  a fixed-shape batch, so with compact_levels = c > 0 the round runs on the
  smallest of R, R/2, ..., R/2^c rows that holds every active row (a
  `lax.switch` over those sizes; each compiles once): the active rows are
  gathered straight from their parents and written back in place, while
  finished rows, their own parents, are not copied at all. Each row samples
  with its own row's noise, so the result is the same for every c.

  Under a mesh that splits rows over devices there is no compaction: gathering the active
  rows of all devices into R/2^j rows is a cross-device gather, so GSPMD replicates the
  compacted batch and its caches on every device (on a TPU v5e-8, arith_paper's beam search
  at 2,048 rows: 14.2 GiB per device and 552 collectives with c=2, 5.1 GiB and 2 without;
  docs/accelerators.md).
  """
  b, w = parents.shape
  r = b * w
  sizes = [r >> j for j in range(compact_levels + 1) if r % (1 << j) == 0]
  if parallel.batch_shards() > 1:
    sizes = sizes[:1]

  def run(dec, cache, rows):
    dec_out, stopped = sampling.decode(
        policy,
        dec,
        key,
        params,
        max_new_tokens=max_step_tokens,
        eos_id=eos_id,
        stop_ids=sampling.token_ids(delimiter_id),
        rows=rows,
        total_rows=r,
    )
    values, cache = extend_prm(
        prm, cache, dec_out.tokens, dec.length, dec_out.length - dec.length, max_step_tokens
    )
    return dec_out, stopped, values, cache

  def whole(operands):
    dec, cache = search_state.take_beams(operands, parents)  # per-question gather
    return run(dec, cache, None)

  if len(sizes) == 1:
    return whole((state, prm_cache))
  flat = (parents + (jnp.arange(b, dtype=jnp.int32) * w)[:, None]).reshape(r)
  active = ~state.done[flat]
  order = jnp.argsort(~active, stable=True).astype(jnp.int32)  # active rows first

  def on(size):
    def part(operands):
      dec, cache = operands
      idx = order[:size]  # every active row; the rest finished, own parents
      src = flat[idx]
      # rows of several questions: each reads its own question's prompt (shared caches)
      d, c = _with_question(*sampling.gather_state((dec, cache), src), src // w)
      d, stopped, values, c = run(d, c, idx)
      d, c = _with_question(d, c, None)
      return (
          _put_rows(dec, idx, d),
          jnp.full((r,), -1, jnp.int32).at[idx].set(stopped),
          jnp.zeros((r,), jnp.float32).at[idx].set(values),
          _put_rows(cache, idx, c),
      )

    return whole if size == r else part

  count = jnp.sum(active)
  which = sum((count <= s).astype(jnp.int32) for s in sizes[1:])  # smallest size that fits
  return jax.lax.switch(which, [on(s) for s in sizes], (state, prm_cache))


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
  _, top = jax.lax.top_k(ranked, keep)  # [B, G, keep]
  rank = jnp.cumsum(active, axis=-1) - 1  # among free slots
  chosen = jnp.take_along_axis(top, jnp.clip(rank // m, 0, keep - 1), axis=-1)
  parents = jnp.where(active, chosen, jnp.arange(s)) + (jnp.arange(groups) * s)[:, None]
  chex.assert_shape(parents, (b, groups, s))
  return parents.reshape(b, w).astype(jnp.int32)


def search_round(
    policy,
    prm,
    st: SearchState,
    rng: jax.Array,
    params: SamplingParams,
    lookahead: jax.Array,
    *,
    groups: int,
    keep: int,
    max_step_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | tuple[int, ...],
    evaluate: Evaluate | None = None,
    compact_levels: int = 0,
) -> SearchState:
  """Select + expand, sample one step per active beam, score it with the PRM."""
  b, w = st.score.shape
  st = search_state.constrain_state(st)
  parents = select_parents(st.score, st.done, groups=groups, keep=keep)
  # per-beam scalars are reordered here, the policy state and both caches by sample_and_score
  score, step_scores, num_steps, finished, before_len, prm_before = search_state.take_beams(
      (
          st.score,
          st.step_scores,
          st.num_steps,
          st.finished,
          st.policy.length.reshape(b, w),
          st.prm_cache["index"].reshape(b, w),
      ),
      parents,
      flat=False,
  )
  st = st.replace(score=score, step_scores=step_scores, num_steps=num_steps, finished=finished)
  before_len, prm_before = before_len.reshape(b * w), prm_before.reshape(b * w)
  dec, stopped, values, prm_cache = sample_and_score(
      policy,
      prm,
      st.policy,
      st.prm_cache,
      parents,
      jax.random.fold_in(rng, st.round),
      params,
      max_step_tokens=max_step_tokens,
      eos_id=eos_id,
      delimiter_id=delimiter_id,
      compact_levels=compact_levels,
  )
  new = dec.length - before_len  # [B*W]
  stepped = new > 0
  cut_off = stepped & (stopped < 0)  # no delimiter/EOS in the step, or buffer full
  dec = dec.replace(done=dec.done | cut_off)
  budget = st.budget.add_decode(before_len, dec.length)
  budget = budget.add_prm(prm_before, prm_cache["index"] - prm_before)
  rank_values = values
  if evaluate is not None:
    rank_values, dec, prm_cache, budget = evaluate(
        policy,
        prm,
        dec,
        prm_cache,
        values,
        budget,
        lookahead,
        max_step_tokens=max_step_tokens,
        eos_id=eos_id,
        delimiter_id=delimiter_id,
    )
  stepped = stepped.reshape(b, w)
  slot = jax.nn.one_hot(st.num_steps, st.step_scores.shape[-1], dtype=bool) & stepped[..., None]
  return st.replace(
      policy=dec,
      prm_cache=prm_cache,
      score=jnp.where(stepped, rank_values.reshape(b, w), st.score),
      step_scores=jnp.where(slot, values.reshape(b, w)[..., None], st.step_scores),
      num_steps=st.num_steps + stepped,
      finished=st.finished | (stepped & sampling.is_eos(stopped, eos_id).reshape(b, w)),
      round=st.round + 1,
      budget=budget,
  )


def completion_round(
    policy,
    prm,
    st: SearchState,
    rng: jax.Array,
    params: SamplingParams,
    prompt_lengths: jax.Array,
    *,
    groups: int,
    keep: int,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id: int | tuple[int, ...],
) -> SearchState:
  """The final completion after the last step round (`beam.search(final_completion=True)`).

  Parents are selected as in every round; then each beam that has not finished (still
  running at max_rounds, or cut off at max_step_tokens) and has room left decodes to EOS
  or max_new_tokens generated tokens (prompt_lengths[B] + max_new_tokens), with no step stops, and the PRM scores the completion as the
  beam's last step (its value at the last token: the candidate's score). As in Hugging
  Face's search-and-learn, whose last iteration samples to EOS; here it is one round more,
  so `step_scores` needs max_rounds + 1 slots and `round` does not count it.
  """
  b, w = st.score.shape
  st = search_state.constrain_state(st)
  parents = select_parents(st.score, st.done, groups=groups, keep=keep)
  score, step_scores, num_steps, finished = search_state.take_beams(
      (st.score, st.step_scores, st.num_steps, st.finished), parents, flat=False
  )
  dec, prm_cache = search_state.take_beams((st.policy, st.prm_cache), parents)
  before, prm_before = dec.length, prm_cache["index"]
  limit = jnp.repeat(prompt_lengths.astype(jnp.int32), w) + max_new_tokens
  dec = dec.replace(done=finished.reshape(b * w) | (before >= limit))
  dec, stopped = sampling.decode(
      policy,
      dec,
      jax.random.fold_in(rng, st.round),
      params,
      max_new_tokens=max_new_tokens,
      eos_id=eos_id,
      max_length=limit,
  )
  new = dec.length - before
  values, prm_cache = extend_run(prm, prm_cache, dec.tokens, before, new, max_step_tokens)
  budget = st.budget.add_decode(before, dec.length)
  budget = budget.add_prm(prm_before, prm_cache["index"] - prm_before)
  stepped = (new > 0).reshape(b, w)
  slot = jax.nn.one_hot(num_steps, step_scores.shape[-1], dtype=bool) & stepped[..., None]
  return st.replace(
      policy=dec,
      prm_cache=prm_cache,
      score=jnp.where(stepped, values.reshape(b, w), score),
      step_scores=jnp.where(slot, values.reshape(b, w)[..., None], step_scores),
      num_steps=num_steps + stepped,
      finished=finished | (stepped & sampling.is_eos(stopped, eos_id).reshape(b, w)),
      budget=budget,
  )
