"""Lookahead search (Snell et al. 2024, §5.2): beam search whose steps are ranked after
a greedy rollout.

Each round is beam search's (`beam_round.search_round`), with one hook: after a
beam samples its step and the PRM scores it, the beam is rolled out up to k
more steps at temperature 0; the PRM reads the rollout too and the value at
its end ranks the beam. Then the rollout is discarded: the beam keeps only
its new step. Discarding costs nothing: the rollout wrote both KV caches only
at slots past the step, so resetting the cache indices restores them.

Rollout tokens count in every budget (generated tokens, policy and PRM
forwards), and the paper's generation count is N (k + 1). `step_scores` and
`SearchResult.scores` stay the PRM values of the steps themselves; the
rollout value only ranks beams (`SearchState.score`). With k = 0 the hook
does nothing and the search equals beam search. k is traced: every k shares
one compilation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ttc_jax import sampling
from ttc_jax.sampling import DecodeState, SamplingParams
from ttc_jax.search import beam, beam_round
from ttc_jax.search.state import Budget, SearchResult


def rollout_values(
    policy,
    prm,
    stepped: DecodeState,
    prm_cache: dict,
    step_values: jax.Array,
    budget: Budget,
    k: jax.Array,
    *,
    max_step_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | tuple[int, ...],
) -> tuple[jax.Array, DecodeState, dict, Budget]:
  """`beam_round.Evaluate` hook: PRM values float32[B*W] after up to k greedy steps.

  Rows that are done (their step ended with EOS, or finished earlier) do not
  roll out and keep `step_values`. Returns the values, the state and PRM
  cache as they were after the step (rollout discarded), and the budget.
  """
  greedy = SamplingParams.make(0.0)
  key = jax.random.key(0)  # unused by greedy decoding

  def cond(carry):
    j, roll, _, _, _ = carry
    return (j < k) & jnp.any(~roll.done)

  def body(carry):
    j, roll, cache, values, bud = carry
    nxt, _ = sampling.decode(
        policy,
        roll,
        key,
        greedy,
        max_new_tokens=max_step_tokens,
        eos_id=eos_id,
        stop_ids=sampling.token_ids(delimiter_id),
    )
    n = nxt.length - roll.length
    before = cache["index"]
    v, cache = beam_round.extend_prm(prm, cache, nxt.tokens, roll.length, n, max_step_tokens)
    bud = bud.add_decode(roll.length, nxt.length).add_prm(before, cache["index"] - before)
    return j + 1, nxt, cache, jnp.where(n > 0, v, values), bud

  init = (jnp.int32(0), stepped, prm_cache, step_values, budget)
  _, roll, cache, values, budget = jax.lax.while_loop(cond, body, init)
  restored = stepped.replace(cache=dict(roll.cache, index=stepped.cache["index"]))
  return values, restored, dict(cache, index=prm_cache["index"]), budget


def lookahead_search(
    policy,
    prm,
    prompts,
    prompt_lengths,
    rng,
    *,
    n: int,
    m: int,
    k: int,
    max_rounds: int = 40,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | tuple[int, ...],
    params: SamplingParams | None = None,
    compact_levels: int = beam.COMPACT_LEVELS,
    final_completion: bool = False,
    prm_prompts=None,
    prm_prompt_lengths=None,
    share_prefix: bool = beam.SHARE_PREFIX,
    cache_dtype: str | None = None,
) -> SearchResult:
  """Beam search (N beams, width M) ranking each step by the PRM after k greedy steps."""
  if m < 1 or n % m:
    raise ValueError(f"beam width m={m} must divide n={n}")
  return beam.search(
      policy,
      prm,
      prompts,
      prompt_lengths,
      rng,
      n=n,
      groups=1,
      keep=n // m,
      max_rounds=max_rounds,
      max_step_tokens=max_step_tokens,
      max_new_tokens=max_new_tokens,
      eos_id=eos_id,
      delimiter_id=delimiter_id,
      params=params,
      lookahead=k,
      evaluate=rollout_values,
      compact_levels=compact_levels,
      final_completion=final_completion,
      prm_prompts=prm_prompts,
      prm_prompt_lengths=prm_prompt_lengths,
      share_prefix=share_prefix,
      cache_dtype=cache_dtype,
  )
