"""Revision chains as device computations: the sampler inside a loop over revision steps.

A chain is a sequence of attempts at one question; attempt t is sampled from
the revision prompt built from the question and the `context` most recent
earlier attempts (`format.revision_prompt`). Many questions x chains run as
one batch of rows `R = B * C`; one jitted call runs a *phase* of revision
steps with a `lax.fori_loop`: at each step the prompts are assembled on the
device from the attempt history (gather/scatter, no host round trip), then
prefilled and decoded with the KV-cache sampler.

Chains of unequal length ("staircase"): a budget N split as C parallel chains
x L sequential steps needs chains 0..C-1 to reach length L. Over several
(C, L) splits, chain c needs length max{L : c < C}, a non-increasing profile;
`run_chains` runs steps where the number of live chains is the same as one
phase of fixed shape, so e.g. every split of budgets 1..16 costs 48
generations per question instead of 16 x 16.

history: int32[R, S, A] attempt tokens (as sampled, EOS included), S steps,
A = max_new_tokens; h_lengths: int32[R, S] (0 for steps not run).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc_jax import evaluation, parallel, sampling
from ttc_jax.revision import format as fmt


@dataclasses.dataclass(frozen=True)
class TokenIds:
  """Special ids the device-side prompt assembly needs (static, hashable)."""

  pad: int
  bos: int
  eos: int
  newline: int

  @classmethod
  def from_tokenizer(cls, tok) -> "TokenIds":
    return cls(tok.PAD, tok.BOS, tok.EOS, tok.newline_id)


def _compact(x: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Moves the kept entries of each row of x[R, A] to its front (PAD after); counts[R]."""
  r, a = x.shape
  dest = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, a)
  out = jnp.zeros_like(x).at[jnp.arange(r)[:, None], dest].set(x, mode="drop")
  return out, keep.sum(axis=1).astype(jnp.int32)


def clean_tokens(seg: jax.Array, seg_len: jax.Array, ids: TokenIds) -> tuple[jax.Array, jax.Array]:
  """Device twin of `format.clean_attempt(tokenizer.decode(seg[:seg_len]))`.

  seg: int32[R, A]; returns (tokens int32[R, A] compacted, lengths int32[R]):
  PAD/BOS dropped, everything from the first EOS dropped, empty lines dropped.
  """
  a = seg.shape[1]
  i = jnp.arange(a)[None]
  valid = i < seg_len[:, None]
  after_eos = jnp.cumsum(valid & (seg == ids.eos), axis=1) > 0
  keep = valid & ~after_eos & (seg != ids.pad) & (seg != ids.bos)
  c1, n1 = _compact(seg, keep)
  v1 = i < n1[:, None]
  nl = v1 & (c1 == ids.newline)
  content = v1 & ~nl
  prev_content = jnp.pad(content[:, :-1], ((0, 0), (1, 0)))
  later_content = (jnp.cumsum(content[:, ::-1], axis=1)[:, ::-1] - content) > 0
  return _compact(c1, content | (nl & prev_content & later_content))


def _place(out: jax.Array, toks: jax.Array, n: jax.Array, pos: jax.Array) -> jax.Array:
  """out[r, pos[r] : pos[r] + n[r]] = toks[r, :n[r]] for every row r (columns past the end
  are dropped). out: int32[R, W]; toks: int32[R, w]; n, pos: int32[R]."""
  r, width = out.shape
  w = toks.shape[1]
  dest = jnp.where(jnp.arange(w)[None] < n[:, None], pos[:, None] + jnp.arange(w)[None], width)
  return out.at[jnp.arange(r)[:, None], dest].set(toks, mode="drop")


def assemble_prompts(
    questions: jax.Array,
    q_lengths: jax.Array,
    history: jax.Array,
    h_lengths: jax.Array,
    step: jax.Array,
    *,
    context: int,
    ids: TokenIds,
    question_position: str = "first",
) -> tuple[jax.Array, jax.Array]:
  """Revision prompts for attempt `step` of each row.

  questions: int32[R, Q] ([BOS] question \\n, right-padded); q_lengths[R];
  history[R, S, A], h_lengths[R, S]; step: traced int. Uses attempts
  step-context .. step-1 (those >= 0), with the question before them or, for
  question_position "last", after them (`format.revision_prompt`). Returns
  prompts int32[R, Q + context*(A+2)] and their lengths [R].
  """
  r, q = questions.shape
  _, s, a = history.shape
  chex.assert_shape(q_lengths, (r,))
  chex.assert_shape(h_lengths, (r, s))
  last = fmt.check_question_position(question_position) == "last"
  width = q + context * (a + 2)
  rows = jnp.arange(r)
  q_lengths = q_lengths.astype(jnp.int32)
  out = jnp.zeros((r, width), jnp.int32)
  if last:  # BOS, the attempts, then the question without its BOS
    out = out.at[:, 0].set(ids.bos)
    pos = jnp.ones((r,), jnp.int32)
  else:  # the question, then the attempts
    out = out.at[:, :q].set(jnp.where(jnp.arange(q)[None] < q_lengths[:, None], questions, ids.pad))
    pos = q_lengths
  for j in range(context):
    slot = step - context + j
    live = slot >= 0
    idx = jnp.maximum(slot, 0)
    seg = jax.lax.dynamic_index_in_dim(history, idx, axis=1, keepdims=False)
    seg_len = jnp.where(live, jax.lax.dynamic_index_in_dim(h_lengths, idx, 1, False), 0)
    toks, n = clean_tokens(seg, seg_len, ids)
    out = _place(out, toks, n, pos)
    for off in (0, 1):
      out = out.at[rows, jnp.where(live, pos + n + off, width)].set(ids.newline, mode="drop")
    pos = pos + jnp.where(live, n + 2, 0)
  if last:
    out = _place(out, questions[:, 1:], q_lengths - 1, pos)
    pos = pos + q_lengths - 1
  return out, pos


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "start", "num_steps", "context", "ids", "question_position"),
)
def _phase(
    graphdef,
    model_state,
    questions,
    q_lengths,
    history,
    h_lengths,
    rng,
    params,
    *,
    start,
    num_steps,
    context,
    ids,
    question_position,
):
  model = nnx.merge(graphdef, model_state)
  r, s, a = history.shape
  ctx = min(context, start + num_steps - 1)  # most attempts any step here sees
  rows = jnp.arange(r)

  def body(t, carry):
    hist, hlen = carry
    prompts, plen = assemble_prompts(
        questions,
        q_lengths,
        hist,
        hlen,
        t,
        context=ctx,
        ids=ids,
        question_position=question_position,
    )
    state = sampling.prefill(model, prompts, plen, prompts.shape[1] + a)
    state, _ = sampling.decode(
        model, state, jax.random.fold_in(rng, t), params, max_new_tokens=a, eos_id=ids.eos
    )
    idx = plen[:, None] + jnp.arange(a)[None]
    gen_len = state.length - plen
    gen = jnp.where(jnp.arange(a)[None] < gen_len[:, None], state.tokens[rows[:, None], idx], 0)
    hist = jax.lax.dynamic_update_index_in_dim(hist, gen, t, axis=1)
    hlen = jax.lax.dynamic_update_index_in_dim(hlen, gen_len, t, axis=1)
    return hist, hlen

  return jax.lax.fori_loop(start, start + num_steps, body, (history, h_lengths))


# The jitted phase, for callers holding the model as (graphdef, state) (ttc_jax.aot lowers it).
phase_split = _phase


def chain_lengths(budgets: Sequence[int], min_chains: int = 0, min_steps: int = 0) -> list[int]:
  """Per-chain lengths (non-increasing) covering every split C x L = N of each budget
  into powers of two, plus `min_chains` chains of at least `min_steps` steps."""
  need: dict[int, int] = {}
  for n in budgets:
    if n < 1 or n & (n - 1):
      raise ValueError(f"revision budgets must be powers of two, got {n}")
    length = 1
    while length <= n:
      for c in range(n // length):
        need[c] = max(need.get(c, 0), length)
      length *= 2
  for c in range(min_chains):
    need[c] = max(need.get(c, 0), min_steps)
  return [need[c] for c in range(len(need))]


def attempt_budget(
    reference_len: int, cap: int, slack: float = 1.25, extra: int = 8, multiple: int = 32
) -> int:
  """Tokens allowed per attempt given the reference solution's length: slack x it + extra,
  rounded up to `multiple` (few shapes), at most `cap`. An attempt cut off there is
  one far longer than a right solution, so it is wrong anyway."""
  want = int(np.ceil(reference_len * slack + extra))
  return int(min(cap, -(-want // multiple) * multiple))


def splits(budget: int) -> list[tuple[int, int]]:
  """(chains C, steps L) with C * L = budget, L a power of two: parallel first."""
  return [
      (budget // (1 << e), 1 << e) for e in range(budget.bit_length()) if budget % (1 << e) == 0
  ]


def run_chains(
    model,
    tokenizer,
    questions: Sequence[str],
    lengths: Sequence[int],
    rng: jax.Array,
    *,
    context: int = fmt.DEFAULT_CONTEXT,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    max_rows: int = 512,
    question_position: str = "first",
    mesh=None,
) -> tuple[np.ndarray, np.ndarray, dict]:
  """Runs chains of the given per-chain `lengths` for every question.

  Returns history int32[B, C, S, A] (numpy), h_lengths int32[B, C, S] (0
  where chain c has fewer than S steps) and stats (generated tokens, seconds,
  compiled phase shapes). Questions run in chunks of at most
  max_rows // C, padded (`evaluation.padded_rows`) to a few shapes. Prompts
  follow `format.revision_prompt` with `question_position`.
  """
  lengths = [int(x) for x in lengths]
  if not lengths or any(x < 1 for x in lengths) or lengths != sorted(lengths, reverse=True):
    raise ValueError(f"chain lengths must be positive and non-increasing, got {lengths}")
  if not questions:
    raise ValueError("run_chains got no questions")
  c, s, a = len(lengths), lengths[0], max_new_tokens
  ids = TokenIds.from_tokenizer(tokenizer)
  q_width = max(len(tokenizer.encode(q)) for q in questions) + 2
  q_width = -(-q_width // 8) * 8
  sampling.check_fits(model.cfg, q_width + context * (a + 2), a, "revision model")
  params = sampling.SamplingParams.make(temperature, top_k, top_p, vocab_limit=tokenizer.vocab_size)
  live = [sum(1 for x in lengths if x > t) for t in range(s)]
  phases, t = [], 0
  while t < s:
    e = t
    while e < s and live[e] == live[t]:
      e += 1
    phases.append((t, e - t, live[t]))
    t = e
  chunk = max(1, max_rows // c)
  graphdef, mstate = nnx.split(model)
  hist_out = np.zeros((len(questions), c, s, a), np.int32)
  hlen_out = np.zeros((len(questions), c, s), np.int32)
  t0, generated = time.perf_counter(), 0
  for ci, lo in enumerate(range(0, len(questions), chunk)):
    part = list(questions[lo : lo + chunk])
    real = len(part)
    b = evaluation.padded_rows(real, chunk)
    part += [part[-1]] * (b - real)
    qt, ql = tokenizer.encode_batch([q + "\n" for q in part], q_width, add_bos=True)
    hist = jnp.zeros((b, c, s, a), jnp.int32)
    hlen = jnp.zeros((b, c, s), jnp.int32)
    for start, num, nc in phases:
      rows_q = jnp.repeat(jnp.asarray(qt), nc, axis=0)
      rows_ql = jnp.repeat(jnp.asarray(ql), nc, axis=0)
      sub_h = hist[:, :nc].reshape(b * nc, s, a)
      sub_l = hlen[:, :nc].reshape(b * nc, s)
      with parallel.use_mesh(mesh):
        sub_h, sub_l = _phase(
            graphdef,
            mstate,
            rows_q,
            rows_ql,
            sub_h,
            sub_l,
            jax.random.fold_in(jax.random.fold_in(rng, ci), start),
            params,
            start=start,
            num_steps=num,
            context=context,
            ids=ids,
            question_position=question_position,
        )
      hist = hist.at[:, :nc].set(sub_h.reshape(b, nc, s, a))
      hlen = hlen.at[:, :nc].set(sub_l.reshape(b, nc, s))
    h, l = jax.device_get((hist, hlen))
    hist_out[lo : lo + real], hlen_out[lo : lo + real] = h[:real], l[:real]
    generated += int(l[:real].sum())
  dt = time.perf_counter() - t0
  return (
      hist_out,
      hlen_out,
      dict(
          generated_tokens=generated,
          seconds=dt,
          tokens_per_s=generated / max(dt, 1e-9),
          generations=int(sum(lengths)) * len(questions),
          phases=[list(p) for p in phases],
      ),
  )


def attempt_texts(tokenizer, history: np.ndarray, h_lengths: np.ndarray) -> list[list[list[str]]]:
  """Decoded, cleaned attempts [B][C][steps run] from `run_chains` output."""
  out = []
  for hb, lb in zip(history, h_lengths):
    out.append(
        [
            [
                fmt.clean_attempt(tokenizer.decode(hb[ci, t, : lb[ci, t]]))
                for t in range(hb.shape[1])
                if lb[ci, t] > 0
            ]
            for ci in range(hb.shape[0])
        ]
    )
  return out
