"""TEST/BENCHMARK REFERENCE: beam search, DVTS and lookahead search as a host loop.

Not for real use: it re-reads whole prefixes every round. Beams are
Python lists of token ids; each round the policy is prefilled from scratch
on every prefix and samples one step (`sampling.decode`), the PRM re-scores
every full prefix with the cacheless `ValueModel.score`, and selection is a
stable sort in Python. No cache survives a round, so agreement with the
kernel (`beam.search`) checks its cache bookkeeping, gathers and selection.

RNG parity: to draw the same samples as the kernel, round r samples with
`fold_in(rng, r)` over all B*W rows in slot order (row b*W + w) and buffers
of P + max_new_tokens tokens, exactly as the kernel does; `sampling.decode`
then folds in the token index. The two differ only by float rounding of
prefill-vs-incremental caches (values agree to ~1e-6).

Budget counts follow the kernel's definitions (see `state.py`), counted
token by token.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from ttc_jax import sampling


@functools.partial(
    jax.jit, static_argnames=("graphdef", "max_step_tokens", "eos_id", "delimiter_id")
)
def _sample_step(
    graphdef,
    model_state,
    tokens,
    lengths,
    done,
    key,
    params,
    *,
    max_step_tokens,
    eos_id,
    delimiter_id,
):
  policy = nnx.merge(graphdef, model_state)
  dec = sampling.prefill(policy, tokens, lengths, tokens.shape[1])
  dec = dec.replace(done=done)
  dec, _ = sampling.decode(
      policy,
      dec,
      key,
      params,
      max_new_tokens=max_step_tokens,
      eos_id=eos_id,
      stop_ids=delimiter_id,
  )
  return dec.tokens, dec.length


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _score(graphdef, model_state, tokens, lengths):
  return nnx.merge(graphdef, model_state).score(tokens, lengths)


def _select(score, done, groups: int, keep: int) -> list[int]:
  """Parent slot of each slot of one question (same rule as `beam_round.select_parents`)."""
  w = len(score)
  s = w // groups
  m = s // keep
  parents = list(range(w))
  for g in range(groups):
    slots = list(range(g * s, (g + 1) * s))
    active = [i for i in slots if not done[i]]
    ranked = sorted(active, key=lambda i: (-score[i], i))[:keep]
    for j, slot in enumerate(active):
      parents[slot] = ranked[j // m]
  return parents


def _padded(seqs: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
  toks = np.zeros((len(seqs), width), np.int32)
  for r, s in enumerate(seqs):
    toks[r, : len(s)] = s
  return toks, np.asarray([len(s) for s in seqs], np.int32)


def reference_search(
    policy,
    prm,
    prompts,
    prompt_lengths,
    rng,
    *,
    n: int,
    groups: int,
    keep: int,
    max_rounds: int,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id: int | tuple[int, ...],
    delimiter_id: int | tuple[int, ...],
    params: sampling.SamplingParams,
    lookahead: int = 0,
    final_completion: bool = False,
) -> dict[str, np.ndarray]:
  """Beam search (groups=1, keep=N/M), DVTS (groups=N/M, keep=1) or lookahead, host loop.

  With lookahead k > 0 each new step is ranked by the PRM value after up to
  k greedy steps (prefilled from scratch too), which are then dropped. With
  `final_completion`, after the rounds, parents are selected once more and every
  beam not finished with room left decodes to EOS or its buffer's end (no step
  stops), scored as its last step.
  Returns numpy arrays named like `SearchResult` fields (tokens, lengths,
  scores, step_scores, num_steps, finished, generated_tokens, policy_tokens,
  prm_tokens, rounds) plus policy_context and prm_context.
  """
  prompts, prompt_lengths = np.asarray(prompts), np.asarray(prompt_lengths)
  delimiters, eos_ids = sampling.token_ids(delimiter_id), sampling.token_ids(eos_id)
  b, p = prompts.shape
  buf = p + max_new_tokens
  g_pol, s_pol = nnx.split(policy)
  g_prm, s_prm = nnx.split(prm)
  greedy = sampling.SamplingParams.make(0.0)
  count = {
      k: np.zeros(b, np.int64)
      for k in ("generated_tokens", "policy_tokens", "policy_context", "prm_tokens", "prm_context")
  }

  def advance(seqs, done, key, knobs, width=max_step_tokens, stops=delimiters, limit=None):
    """One step (at most `width` tokens, up to a `stops` id, rows cut at `limit[r]` tokens)
    for every row not done: the new rows and whether each one stepped."""
    toks, lens = _padded(seqs, buf)
    new_toks, new_lens = jax.device_get(
        _sample_step(
            g_pol,
            s_pol,
            toks,
            lens,
            np.asarray(done),
            key,
            knobs,
            max_step_tokens=width,
            eos_id=eos_ids,
            delimiter_id=stops,
        )
    )
    new_lens, out = np.array(new_lens), []
    for r, s in enumerate(seqs):
      q = r // n
      if limit is not None:
        new_lens[r] = min(int(new_lens[r]), max(limit[r], len(s)))
      for pos in range(len(s), int(new_lens[r])):  # fed token pos - 1, attends pos keys
        count["generated_tokens"][q] += 1
        count["policy_tokens"][q] += 1
        count["policy_context"][q] += pos
        count["prm_tokens"][q] += 1  # the PRM reads it once, pos + 1 keys
        count["prm_context"][q] += pos + 1
      out.append(s + [int(t) for t in new_toks[r, len(s) : new_lens[r]]])
    return out, [len(o) > len(s) for o, s in zip(out, seqs)]

  def last_values(seqs):
    values = np.asarray(_score(g_prm, s_prm, *_padded(seqs, buf)))
    return [float(values[r, len(s) - 1]) for r, s in enumerate(seqs)]

  seqs = [list(prompts[q, : prompt_lengths[q]]) for q in range(b) for _ in range(n)]
  done, finished = [False] * (b * n), [False] * (b * n)
  score, steps = [0.0] * (b * n), [[] for _ in range(b * n)]
  for q in range(b):
    plen = int(prompt_lengths[q])
    count["policy_tokens"][q] += plen - 1  # prefill once per question
    count["policy_context"][q] += sum(pos + 1 for pos in range(plen - 1))
    count["prm_tokens"][q] += plen
    count["prm_context"][q] += sum(pos + 1 for pos in range(plen))

  def select(seqs, steps, done, finished, score):
    rows = []
    for q in range(b):
      sl = slice(q * n, (q + 1) * n)
      rows += [q * n + i for i in _select(score[sl], done[sl], groups, keep)]
    out = [list(seqs[i]) for i in rows], [list(steps[i]) for i in rows]
    return out + tuple([x[i] for i in rows] for x in (done, finished, score))

  rounds = 0
  while rounds < max_rounds and not all(done):
    seqs, steps, done, finished, score = select(seqs, steps, done, finished, score)
    seqs, stepped = advance(seqs, done, jax.random.fold_in(rng, rounds), params)
    for r, s in enumerate(seqs):
      if stepped[r]:
        finished[r] = s[-1] in eos_ids
        done[r] = finished[r] or s[-1] not in delimiters or len(s) >= buf
    values = last_values(seqs)
    rank = list(values)
    roll, roll_done = seqs, list(done)
    for _ in range(lookahead):
      if all(roll_done):
        break
      roll, rolled = advance(roll, roll_done, jax.random.key(0), greedy)
      roll_values = last_values(roll)
      for r, s in enumerate(roll):
        if rolled[r]:
          rank[r] = roll_values[r]
          roll_done[r] = s[-1] in eos_ids or len(s) >= buf
    for r in range(b * n):
      if stepped[r]:
        score[r] = rank[r]
        steps[r].append(values[r])
    rounds += 1
  if final_completion:
    seqs, steps, done, finished, score = select(seqs, steps, done, finished, score)
    limit = [int(prompt_lengths[r // n]) + max_new_tokens for r in range(b * n)]
    todo = [f or len(s) >= lim for f, s, lim in zip(finished, seqs, limit)]
    key = jax.random.fold_in(rng, rounds)
    seqs, stepped = advance(seqs, todo, key, params, max_new_tokens, (), limit)
    values = last_values(seqs)
    for r, s in enumerate(seqs):
      if stepped[r]:
        finished[r] = s[-1] in eos_ids
        score[r] = values[r]
        steps[r].append(values[r])
  out_toks = np.zeros((b, n, max_new_tokens), np.int32)
  lengths = np.zeros((b, n), np.int32)
  step_scores = np.zeros((b, n, max_rounds + int(final_completion)), np.float32)
  for r, s in enumerate(seqs):
    q, w = divmod(r, n)
    gen = s[int(prompt_lengths[q]) :]
    out_toks[q, w, : len(gen)], lengths[q, w] = gen, len(gen)
    step_scores[q, w, : len(steps[r])] = steps[r]
  return dict(
      tokens=out_toks,
      lengths=lengths,
      step_scores=step_scores,
      scores=np.asarray([st[-1] for st in steps], np.float32).reshape(b, n),
      num_steps=np.asarray([len(st) for st in steps], np.int32).reshape(b, n),
      finished=np.asarray(finished).reshape(b, n),
      rounds=np.int32(rounds),
      **count,
  )
