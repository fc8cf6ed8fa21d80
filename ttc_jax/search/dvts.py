"""Diverse verifier tree search (DVTS; Beeching et al. 2024, after Snell et al. 2024).

The N beams of a question are split into N/M independent subtrees of M
contiguous slots. Each round, every active beam samples one step and the PRM
scores it (as in beam search); then each subtree keeps its single best
active beam and copies it into all of its active slots. So DVTS is beam
search restricted within subtrees (`beam.search` with groups = N/M, keep =
1), sharing its kernel, its finished-beam rule (finished beams keep their
slot and are never extended) and its budget accounting; with one subtree it
is beam search with beam width M = N. The N final beams (M per subtree) are
the candidates for best-of-N weighted selection.
"""

from __future__ import annotations

from ttc_jax.sampling import SamplingParams
from ttc_jax.search import beam
from ttc_jax.search.state import SearchResult


def dvts(
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
    delimiter_id: int | tuple[int, ...],
    params: SamplingParams | None = None,
    compact_levels: int = beam.COMPACT_LEVELS,
    final_completion: bool = False,
    prm_prompts=None,
    prm_prompt_lengths=None,
    share_prefix: bool = beam.SHARE_PREFIX,
    cache_dtype: str | None = None,
) -> SearchResult:
  """DVTS with N beams in N/M subtrees of M beams (M divides N)."""
  if m < 1 or n % m:
    raise ValueError(f"subtree size m={m} must divide n={n}")
  return beam.search(
      policy,
      prm,
      prompts,
      prompt_lengths,
      rng,
      n=n,
      groups=n // m,
      keep=1,
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
