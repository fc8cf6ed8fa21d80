"""PRM beam search (Snell et al. 2024, §5.2) as one jit-compiled kernel.

With N beams and beam width M, per question:
  1. every active beam samples one step: `sampling.decode` until a step
     delimiter or EOS, at most `max_step_tokens` tokens (`delimiter_id` is one id
     or a tuple of them: with a BPE vocabulary, every token whose text contains
     the delimiter, `HFTokenizer.delimiter_ids`);
  2. the PRM scores the new step incrementally (`ValueModel.extend` on the
     step's tokens, its own KV cache holding exactly the tokens scored so
     far), reading the value at the step's last token;
  3. before the next round, the top N/M active beams by that value are kept
     (`lax.top_k`) and each is copied M times into the active slots (a gather
     of tokens and both caches).
The outer `lax.while_loop` runs rounds until every beam is done or after
`max_rounds`; the inner loop over tokens is the sampler's. As beams finish,
a round runs on R/2 or R/4 of the R = B*N rows when the active ones fit
(`sample_and_score`, `compact_levels`): fixed shapes, less work on rows that
would only be carried along. The N beams left
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
  * Optional final completion (`final_completion`, on for the text pipeline, off
    for the embedded task): after the last round, beams that did not finish are
    decoded to EOS (no step stops) and scored, so a search stopped by max_rounds
    still returns complete solutions, as search-and-learn's last iteration does.

The round (`select_parents`, `sample_and_score`, `search_round`) is in
`beam_round.py`; this module holds the kernel over rounds and its entry points.
The same round serves DVTS (selection within groups of slots, `dvts.py`) and
lookahead search (a hook that re-scores each step after a greedy rollout,
`lookahead.py`): `search` takes `groups`, `keep` and `evaluate` for that.
Sampling knobs and the lookahead depth are traced: sweeping them reuses one
compilation; N, M, lengths and the models' structure are static.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ttc_jax import sampling
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import state as search_state
from ttc_jax.search.beam_round import Evaluate, completion_round, init_state, search_round
from ttc_jax.search.state import SearchResult

# Default `compact_levels` of the kernels: rounds run on R, R/2 or R/4 rows.
COMPACT_LEVELS = 2
# Default `share_prefix` of the kernels: prompt caches held once per question.
SHARE_PREFIX = True


def run_search(
    policy,
    prm,
    prompts,
    prompt_lengths,
    rng,
    params: SamplingParams,
    lookahead: jax.Array,
    *,
    n: int,
    groups: int,
    keep: int,
    max_rounds: int,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | tuple[int, ...],
    evaluate: Evaluate | None = None,
    compact_levels: int = 0,
    final_completion: bool = False,
    prm_prompts: jax.Array | None = None,
    prm_prompt_lengths: jax.Array | None = None,
    prm_cache_len: int | None = None,
    share_prefix: bool = False,
    cache_dtype=None,
) -> SearchResult:
  """The whole search, traceable: rounds in a `lax.while_loop` (see module docstring),
  then, with `final_completion`, `beam_round.completion_round`. The PRM reads
  `prm_prompts` (default: the policy's prompts) into a cache of `prm_cache_len` slots."""
  st = init_state(
      policy,
      prm,
      prompts,
      prompt_lengths,
      width=n,
      max_new_tokens=max_new_tokens,
      max_step_tokens=max_step_tokens,
      max_rounds=max_rounds + int(final_completion),
      prm_prompts=prm_prompts,
      prm_prompt_lengths=prm_prompt_lengths,
      prm_cache_len=prm_cache_len,
      share_prefix=share_prefix,
      cache_dtype=cache_dtype,
  )
  round_fn = functools.partial(
      search_round,
      policy,
      prm,
      rng=rng,
      params=params,
      lookahead=lookahead,
      groups=groups,
      keep=keep,
      max_step_tokens=max_step_tokens,
      eos_id=eos_id,
      delimiter_id=delimiter_id,
      evaluate=evaluate,
      compact_levels=compact_levels,
  )
  # Run while (a) rounds remain and (b) some beam of some question is active.
  st = jax.lax.while_loop(
      lambda s: (s.round < max_rounds) & jnp.any(~s.policy.done), lambda s: round_fn(st=s), st
  )
  if final_completion:
    st = completion_round(
        policy,
        prm,
        st,
        rng,
        params,
        prompt_lengths,
        groups=groups,
        keep=keep,
        max_step_tokens=max_step_tokens,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
    )
  b = prompts.shape[0]
  generations = jnp.full((b,), n, jnp.int32) * (1 + jnp.asarray(lookahead, jnp.int32))
  return search_state.result_from_state(
      st,
      prompt_lengths.astype(jnp.int32),
      generations,
      max_new_tokens=max_new_tokens,
      policy_cfg=policy.cfg,
      prm_cfg=prm.cfg,
  )


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdefs",
        "n",
        "groups",
        "keep",
        "max_rounds",
        "max_step_tokens",
        "max_new_tokens",
        "eos_id",
        "delimiter_id",
        "evaluate",
        "compact_levels",
        "final_completion",
        "prm_cache_len",
        "share_prefix",
        "cache_dtype",
    ),
)
def _search(
    graphdefs,
    states,
    prompts,
    prompt_lengths,
    rng,
    params,
    lookahead,
    *,
    n,
    groups,
    keep,
    max_rounds,
    max_step_tokens,
    max_new_tokens,
    eos_id,
    delimiter_id,
    evaluate,
    compact_levels=0,
    final_completion=False,
    prm_prompts=None,
    prm_prompt_lengths=None,
    prm_cache_len=None,
    share_prefix=False,
    cache_dtype=None,
):
  policy, prm = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  return run_search(
      policy,
      prm,
      prompts,
      prompt_lengths,
      rng,
      params,
      lookahead,
      n=n,
      groups=groups,
      keep=keep,
      max_rounds=max_rounds,
      max_step_tokens=max_step_tokens,
      max_new_tokens=max_new_tokens,
      eos_id=eos_id,
      delimiter_id=delimiter_id,
      evaluate=evaluate,
      compact_levels=compact_levels,
      final_completion=final_completion,
      prm_prompts=prm_prompts,
      prm_prompt_lengths=prm_prompt_lengths,
      prm_cache_len=prm_cache_len,
      share_prefix=share_prefix,
      cache_dtype=cache_dtype,
  )


def search(
    policy,
    prm,
    prompts,
    prompt_lengths,
    rng,
    *,
    n: int,
    groups: int,
    keep: int,
    max_rounds: int = 40,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | Sequence[int],
    params: SamplingParams | None = None,
    lookahead: int = 0,
    evaluate: Evaluate | None = None,
    compact_levels: int = COMPACT_LEVELS,
    final_completion: bool = False,
    prm_prompts=None,
    prm_prompt_lengths=None,
    share_prefix: bool = SHARE_PREFIX,
    cache_dtype: str | None = None,
) -> SearchResult:
  """Validates arguments and runs the jitted kernel (shared by beam, lookahead, DVTS).

  prompts: int32[B, P] right-padded (BOS first), prompt_lengths: int32[B].
  `params` defaults to temperature 1 without filters. Under
  `parallel.use_mesh(mesh)`, with prompts placed by `parallel.data_sharding`,
  questions and their beams are split over the batch mesh axes; beam gathers
  stay within a question's shard. `compact_levels`: see `sample_and_score`
  (the default halves the batch up to twice as beams finish; 0 = off).
  `final_completion`: beams not finished after the rounds (at max_rounds, or cut off) get
  one completion to EOS or max_new_tokens, PRM-scored, before the candidates are returned
  (`beam_round.completion_round`; `step_scores` then has max_rounds + 1 slots).
  `prm_prompts` int32[B, P'] / `prm_prompt_lengths` int32[B]: what the PRM reads before
  the first step, in its own format (an external PRM, `prm_steps.StepTagPRM`); default the
  policy's prompts. The PRM cache is sized for the PRM's longer steps (`extend_width`,
  `extra_per_step` of a StepTagPRM).
  `share_prefix` (default `SHARE_PREFIX`): the prompts' KV caches are held once per question
  and read by all its beams, each beam caching only its own tokens (`models.prefix_cache`;
  results equal the unshared layout's, False, up to float rounding, except that a beam never
  generates more than max_new_tokens tokens). `cache_dtype`: "" / None (each model's compute
  dtype), "bfloat16" or "float32": how both KV caches are stored (`cache_storage_dtype`).
  """
  prompts = jnp.asarray(prompts, jnp.int32)
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  if prompts.ndim != 2 or prompt_lengths.shape != prompts.shape[:1]:
    raise ValueError(
        f"prompts {prompts.shape} and prompt_lengths {prompt_lengths.shape} "
        "must be [B, P] and [B]"
    )
  if n < 1 or groups < 1 or keep < 1 or n % groups or (n // groups) % keep:
    raise ValueError(
        f"n={n} beams must split into {groups} group(s) whose size is a " f"multiple of keep={keep}"
    )
  if max_rounds < 1 or max_step_tokens < 1 or max_new_tokens < 1:
    raise ValueError(
        f"max_rounds={max_rounds}, max_step_tokens={max_step_tokens} and "
        f"max_new_tokens={max_new_tokens} must be >= 1"
    )
  sampling.check_fits(policy.cfg, prompts.shape[1], max_new_tokens, "policy")
  if lookahead < 0:
    raise ValueError(f"lookahead must be >= 0, got {lookahead}")
  if compact_levels < 0:
    raise ValueError(f"compact_levels must be >= 0, got {compact_levels}")
  params = SamplingParams.make() if params is None else params
  p_prm = prompts.shape[1]
  if prm_prompts is not None:
    prm_prompts = jnp.asarray(prm_prompts, jnp.int32)
    prm_prompt_lengths = jnp.asarray(prm_prompt_lengths, jnp.int32)
    if prm_prompts.ndim != 2 or prm_prompts.shape[0] != prompts.shape[0]:
      raise ValueError(f"prm_prompts {prm_prompts.shape} must be [B={prompts.shape[0]}, P']")
    p_prm = prm_prompts.shape[1]
  steps = max_rounds + int(lookahead) + int(final_completion)  # a path's steps, at most
  extra = int(getattr(prm, "extra_per_step", 0)) * min(steps, max_new_tokens)
  width = getattr(prm, "extend_width", lambda t: t)(max_step_tokens)
  (g_pol, s_pol), (g_prm, s_prm) = nnx.split(policy), nnx.split(prm)
  return _search(
      (g_pol, g_prm),
      (s_pol, s_prm),
      prompts,
      prompt_lengths,
      rng,
      params,
      jnp.int32(lookahead),
      n=n,
      groups=groups,
      keep=keep,
      max_rounds=max_rounds,
      max_step_tokens=max_step_tokens,
      max_new_tokens=max_new_tokens,
      eos_id=sampling.token_ids(eos_id),
      delimiter_id=sampling.token_ids(delimiter_id),
      evaluate=evaluate,
      compact_levels=int(compact_levels),
      final_completion=bool(final_completion),
      prm_prompts=prm_prompts,
      prm_prompt_lengths=prm_prompt_lengths,
      prm_cache_len=p_prm + max_new_tokens + width + extra,
      share_prefix=bool(share_prefix),
      cache_dtype=search_state.cache_storage_dtype(cache_dtype, policy.cfg, prm.cfg),
  )


def beam_search(
    policy,
    prm,
    prompts,
    prompt_lengths,
    rng,
    *,
    n: int,
    m: int,
    max_rounds: int = 40,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | Sequence[int],
    params: SamplingParams | None = None,
    compact_levels: int = COMPACT_LEVELS,
    final_completion: bool = False,
    prm_prompts=None,
    prm_prompt_lengths=None,
    share_prefix: bool = SHARE_PREFIX,
    cache_dtype: str | None = None,
) -> SearchResult:
  """PRM beam search with N beams and beam width M (M divides N); see the module docstring.

  Returns the N candidates per question (`SearchResult`); pick answers with
  `state.select_answers`.
  """
  if m < 1 or n % m:
    raise ValueError(f"beam width m={m} must divide n={n}")
  return search(
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
      compact_levels=compact_levels,
      final_completion=final_completion,
      prm_prompts=prm_prompts,
      prm_prompt_lengths=prm_prompt_lengths,
      share_prefix=share_prefix,
      cache_dtype=cache_dtype,
  )
