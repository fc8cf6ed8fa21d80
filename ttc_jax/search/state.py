"""Fixed-shape state of step-level search (beam, lookahead, DVTS) and its result.

Layout: B questions x W beam slots. Per-beam arrays are [B, W, ...]; the
policy's `DecodeState` and the PRM's KV cache are flattened to B*W rows (row
b*W + w), so every model call sees one batch. Reordering beams is one gather
of every per-beam leaf with within-question parent indices `parents[B, W]`
(`take_beams`; `beam_round.sample_and_score` for the policy state and caches): slot
w of question b becomes a copy of slot parents[b, w] of the same question,
caches included.

Invariants between rounds (tests check them):
  * policy: `tokens[r, :length[r]]` is row r's prompt + steps; its cache holds
    the first length - 1 tokens (the last one is pending, see `sampling`).
  * PRM: the cache holds exactly the tokens scored so far, i.e. all of them:
    `prm_cache["index"] == policy.length` for a PRM that reads the policy's
    prompts and tokens (a value model); an external PRM reads its own prompt
    and longer step ends (`prm_steps.StepTagPRM`), so its index runs ahead.
  * a beam that is done (EOS, buffer full or a cut-off step) is never
    extended again and is its own parent in every later reorder.

Budget accounting counts useful work only: each generated token costs one
policy forward (of the token before it), the prompt is prefilled once per
question (not once per beam), and each token the PRM reads costs one PRM
forward (an external PRM's own prompt and step tags included: what its cache index
advanced by); a token at position p attends p + 1 keys. Padding rows and masked
slots that the fixed-shape kernels also compute are not counted.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from ttc_jax import parallel
from ttc_jax.models import prefix_cache
from ttc_jax.models.config import ModelConfig
from ttc_jax.sampling import DecodeState
from ttc_jax.selection import best_of_n

CACHE_DTYPES = ("", "bfloat16", "float32")


def cache_storage_dtype(name: str | None, *cfgs: ModelConfig) -> str | None:
  """The kernels' `cache_dtype` as a static name: None for "" / None (each model's compute
  dtype), else "bfloat16" or "float32". Caches are never stored narrower than a model
  computes: "bfloat16" needs every model of `cfgs` to compute in bfloat16 (there it is the
  default; under a float32 model it would round keys/values and change results), so it
  raises ValueError otherwise; "float32" under a bfloat16 model stores the bfloat16 values
  exactly (same results, twice the memory). Raises ValueError for other names."""
  name = "" if name is None else str(name)
  if name not in CACHE_DTYPES:
    raise ValueError(f"cache_dtype={name!r} is not one of {list(CACHE_DTYPES)}")
  wide = [c.dtype for c in cfgs if jnp.dtype(c.dtype) != jnp.dtype(jnp.bfloat16)]
  if name == "bfloat16" and wide:
    raise ValueError(
        f"cache_dtype='bfloat16' with a model computing in {wide[0]}: caches are not stored "
        "narrower than the model computes; set the model's dtype to bfloat16 (its caches are "
        "then bfloat16 by default) or leave cache_dtype ''"
    )
  return name or None


def _per_question(x: jax.Array, b: int) -> jax.Array:
  """Sums per-row values x[B*W] (or x[B]) over the beams of each question -> [B]."""
  return x.reshape(b, -1).sum(axis=1)


@flax.struct.dataclass
class Budget:
  """Work done per question, summed over its beams and rollouts.

  generated_tokens: int32[B] tokens sampled from the policy (search steps and
    lookahead rollouts, discarded or not).
  policy_tokens: int32[B] tokens run through the policy (prefill + decode).
  policy_context: float32[B] sum over those tokens of the keys each attends.
  prm_tokens: int32[B] tokens run through the PRM.
  prm_context: float32[B] sum over those tokens of the keys each attends.
  """

  generated_tokens: jax.Array
  policy_tokens: jax.Array
  policy_context: jax.Array
  prm_tokens: jax.Array
  prm_context: jax.Array

  @classmethod
  def zeros(cls, b: int) -> "Budget":
    i, f = jnp.zeros((b,), jnp.int32), jnp.zeros((b,), jnp.float32)
    return cls(i, i, f, i, f)

  def add_decode(self, start: jax.Array, end: jax.Array, generated: bool = True) -> "Budget":
    """Policy decoding that took rows from length start[R] to end[R] (R = B*W or B).

    Tokens at positions start-1 .. end-2 were fed, attending start .. end-1
    keys: n (start + end - 1) / 2 in all. `generated=False` for a prefill
    (start = 1, end = prompt length).
    """
    b = self.policy_tokens.shape[0]
    n = end - start
    ctx = n * (start + end - 1) // 2
    gen = _per_question(n, b) if generated else 0
    return self.replace(
        generated_tokens=self.generated_tokens + gen,
        policy_tokens=self.policy_tokens + _per_question(n, b),
        policy_context=self.policy_context + _per_question(ctx, b).astype(jnp.float32),
    )

  def add_prm(self, index: jax.Array, n: jax.Array) -> "Budget":
    """The PRM read n[R] tokens at positions index .. index+n-1 (keys index+1 .. index+n)."""
    b = self.prm_tokens.shape[0]
    ctx = n * (2 * index + n + 1) // 2
    return self.replace(
        prm_tokens=self.prm_tokens + _per_question(n, b),
        prm_context=self.prm_context + _per_question(ctx, b).astype(jnp.float32),
    )


def flops(
    tokens: jax.Array, context: jax.Array, cfg: ModelConfig, value_head: bool = False
) -> jax.Array:
  """Forward FLOPs of `tokens` attending `context` keys in all (linear in both).

  `ModelConfig.forward_flops_per_token` is affine in the context length, so
  the sum over tokens is tokens * f(0) + context * (f(1) - f(0)). A value
  model (`value_head=True`) replaces the vocabulary projection (2 V d) by its
  scalar head (2 d).
  """
  f0 = cfg.forward_flops_per_token(0.0)
  per_key = cfg.forward_flops_per_token(1.0) - f0
  if value_head:
    f0 += 2 * cfg.embed_dim - 2 * cfg.vocab_size * cfg.embed_dim
  return tokens.astype(jnp.float32) * f0 + context * per_key


@flax.struct.dataclass
class SearchState:
  """The whole search between rounds; L = P + max_new_tokens, S = L + max_step_tokens.

  policy: DecodeState over B*W rows with buffers of L tokens. `policy.done`
    marks beams finished for good (EOS, full buffer, or a step cut off at
    max_step_tokens); `decode` never extends them.
  prm_cache: PRM KV cache over B*W rows with S slots (room for one more
    step when the buffer is full); index[r] == policy.length[r] for a PRM reading
    the policy's tokens (see the invariants above). With `share_prefix` both caches
    are `models.prefix_cache` layouts: the prompt once per question ([B, ...] under
    "prefix"), per row only the suffix (policy max_new_tokens + 1, PRM S - P' slots).
  score: float32[B, W] ranking value of each beam's newest step (the PRM value
    at its end; lookahead search: at the end of its greedy rollout); 0 before
    the first step.
  step_scores: float32[B, W, R] PRM value at the end of each step (R =
    max_rounds); 0 from num_steps on.
  num_steps: int32[B, W] steps taken.
  finished: bool[B, W] the beam ended with EOS.
  round: int32[] rounds completed.
  budget: Budget, per question.
  """

  policy: DecodeState
  prm_cache: dict
  score: jax.Array
  step_scores: jax.Array
  num_steps: jax.Array
  finished: jax.Array
  round: jax.Array
  budget: Budget

  @property
  def done(self) -> jax.Array:
    """bool[B, W] beams that will not be extended again."""
    return self.policy.done.reshape(self.score.shape)


def take_beams(tree: Any, parents: jax.Array, flat: bool = True) -> Any:
  """Gathers every leaf so that beam w of question b becomes beam parents[b, w].

  parents: int32[B, W], indices within each question. Leaves are [B*W, ...]
  (rows b*W + w; `flat=True`) or [B, W, ...]. The gather is batched over
  questions, so under SPMD it stays local to the question's shard. A shared prompt cache's
  prefix (`prefix_cache`, per question) is not gathered: the beams of a question share it.
  """
  b, w = parents.shape

  def one(x):
    xb = x.reshape((b, w) + x.shape[1:]) if flat else x
    chex.assert_shape(xb, (b, w) + (...,))
    out = jax.vmap(lambda xq, pq: jnp.take(xq, pq, axis=0))(xb, parents)
    return out.reshape(x.shape)

  return prefix_cache.map_rows(one, tree)


def _constrain_cache(cache: dict) -> dict:
  """Rows over the batch mesh axes, KV heads over `tensor` (as `cache_shardings`); a shared
  prompt cache's prefix by question the same way."""

  def layers(ls):
    return tuple(
        {
            "k": parallel.constrain(lc["k"], ("cache_batch", "kv_heads", None, "cache_length")),
            "v": parallel.constrain(lc["v"], ("cache_batch", "kv_heads", "cache_length", None)),
        }
        for lc in ls
    )

  out = dict(
      cache,
      index=parallel.constrain(cache["index"], ("cache_batch",)),
      layers=layers(cache["layers"]),
  )
  if prefix_cache.is_shared(cache):
    pre = cache[prefix_cache.PREFIX]
    out[prefix_cache.PREFIX] = dict(
        length=parallel.constrain(pre["length"], ("cache_batch",)), layers=layers(pre["layers"])
    )
  return out


def constrain_state(state: SearchState) -> SearchState:
  """Keeps beams sharded by question under a mesh (identity without one)."""
  rows = lambda x: parallel.constrain(x, ("batch",) + (None,) * (x.ndim - 1))
  pol = state.policy
  pol = pol.replace(
      tokens=rows(pol.tokens),
      length=rows(pol.length),
      logprobs=rows(pol.logprobs),
      done=rows(pol.done),
      cache=_constrain_cache(pol.cache),
  )
  return state.replace(
      policy=pol,
      prm_cache=_constrain_cache(state.prm_cache),
      score=rows(state.score),
      step_scores=rows(state.step_scores),
      num_steps=rows(state.num_steps),
      finished=rows(state.finished),
  )


@flax.struct.dataclass
class SearchResult:
  """The N candidates per question left by a search, and what they cost.

  tokens: int32[B, N, G] generated tokens after the prompt (G =
    max_new_tokens), PAD after `lengths`.
  lengths: int32[B, N] generated tokens per candidate (EOS included).
  scores: float32[B, N] PRM value of the candidate's last step (the paper's
    last-step aggregation).
  step_scores: float32[B, N, R] PRM value at each step end; 0 from num_steps.
  num_steps: int32[B, N] steps per candidate.
  finished: bool[B, N] ended with EOS (False: cut off, or still running after
    max_rounds).
  generations: int32[B] the paper's budget unit: N for beam search and DVTS,
    N (k + 1) for lookahead search.
  generated_tokens, policy_tokens, prm_tokens: int32[B] (see `Budget`).
  policy_flops, prm_flops: float32[B] forward FLOPs (see `flops`).
  rounds: int32[] search rounds run (the same for every question).
  """

  tokens: jax.Array
  lengths: jax.Array
  scores: jax.Array
  step_scores: jax.Array
  num_steps: jax.Array
  finished: jax.Array
  generations: jax.Array
  generated_tokens: jax.Array
  policy_tokens: jax.Array
  prm_tokens: jax.Array
  policy_flops: jax.Array
  prm_flops: jax.Array
  rounds: jax.Array


def result_from_state(
    state: SearchState,
    prompt_lengths: jax.Array,
    generations: jax.Array,
    *,
    max_new_tokens: int,
    policy_cfg: ModelConfig,
    prm_cfg: ModelConfig,
) -> SearchResult:
  """Cuts the generated part out of each beam's buffer and totals the budget."""
  b, w = state.score.shape
  pol = state.policy
  start = jnp.repeat(prompt_lengths, w)  # [B*W]
  gen_len = pol.length - start
  idx = start[:, None] + jnp.arange(max_new_tokens)[None]  # [B*W, G]
  valid = jnp.arange(max_new_tokens)[None] < gen_len[:, None]
  toks = jnp.take_along_axis(pol.tokens, jnp.minimum(idx, pol.tokens.shape[1] - 1), 1)
  last = jnp.maximum(state.num_steps - 1, 0)[..., None]
  bud = state.budget
  return SearchResult(
      tokens=jnp.where(valid, toks, 0).reshape(b, w, max_new_tokens),
      lengths=gen_len.reshape(b, w),
      scores=jnp.take_along_axis(state.step_scores, last, -1)[..., 0],
      step_scores=state.step_scores,
      num_steps=state.num_steps,
      finished=state.finished,
      generations=generations,
      generated_tokens=bud.generated_tokens,
      policy_tokens=bud.policy_tokens,
      prm_tokens=bud.prm_tokens,
      policy_flops=flops(bud.policy_tokens, bud.policy_context, policy_cfg),
      prm_flops=flops(bud.prm_tokens, bud.prm_context, prm_cfg, value_head=True),
      rounds=state.round,
  )


def select_answers(
    result: SearchResult,
    tokenizer,
    extract_answer: Callable[[str], str | None],
    equivalent: Callable[[Any, Any], bool],
    how: str = "best_of_n_weighted",
) -> list[dict]:
  """Host side: decodes the candidates and picks one answer per question.

  `how` is a `best_of_n.METHODS` entry (default: best-of-N weighted, grouping
  answers by `equivalent`, scores = last-step PRM values). Returns per
  question {"answer": str | None, "candidates": [{"text", "answer", "score",
  "finished"}, ...]} in slot order.
  """
  tokens, lengths, scores, finished = jax.device_get(
      (result.tokens, result.lengths, result.scores, result.finished)
  )
  out = []
  for b in range(tokens.shape[0]):
    texts: Sequence[str] = tokenizer.decode_batch(tokens[b], lengths[b])
    answers = [extract_answer(t) for t in texts]
    sc = [float(s) for s in np.asarray(scores[b])]
    out.append(
        {
            "answer": best_of_n.select(how, answers, sc, equivalent),
            "candidates": [
                {"text": t, "answer": a, "score": s, "finished": bool(f)}
                for t, a, s, f in zip(texts, answers, sc, finished[b])
            ],
        }
    )
  return out
