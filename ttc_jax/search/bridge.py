"""Step-level search with an external PRM whose vocabulary differs from the policy's.

The kernels feed the PRM the policy's token ids (`prm_steps.StepTagPRM`), which needs one
shared vocabulary. Here the policy's part of every round runs on the device as in the
kernels (parents selected with `beam_round.select_parents`, beams and the policy cache
reordered with `state.take_beams`, one step per active beam with `sampling.decode`), and
the PRM's part on the host: each beam's steps are decoded with the policy's tokenizer, the
solution is re-encoded with the PRM's own tokenizer in its own format
(`LoadedPRM.encode(question, steps)`: its prompt, each step followed by its tag) and scored
without a cache (as search-and-learn re-scores every iteration); a step's value is read at
its tag. Finished beams, cut-off steps, selection, lookahead rollouts (k greedy steps,
then dropped) and the final completion follow the kernels (`beam`), with the same RNG
folding, so with a shared vocabulary and text that re-encodes to the same tokens the
results are the kernels'. A step's text is its decoded tokens up to the step delimiter
(the rest of the token that holds it is dropped, as `text_steps` splits text).

Budgets: policy counts as in the kernels; PRM tokens count what an incremental PRM would
read (the growth of each beam's PRM sequence), not the re-reads this host loop does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc_jax import sampling
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import state as search_state
from ttc_jax.search.beam_round import select_parents


@dataclasses.dataclass
class BridgedPRM:
  """An external PRM with its own tokenizer and format (`loaded`: model, tokenizer,
  encode(question, steps) -> (ids, tag positions), as `processbench_load.LoadedPRM`) and the
  policy's tokenizer the search decodes steps with."""

  loaded: Any
  policy_tokenizer: Any

  @property
  def cfg(self):
    return self.loaded.model.cfg


@functools.partial(jax.jit, static_argnames=("graphdef", "width", "eos", "stops", "cut"))
def _step(graphdef, state, dec, parents, key, params, limit, finished, *, width, eos, stops, cut):
  """Reorders beams by parents (rows that finished, `finished` given: done, the others not:
  the final completion), then at most `width` tokens per active row, rows stopping at
  `limit` tokens; with `cut`, a row that met no stop id is done (a cut-off step)."""
  policy = nnx.merge(graphdef, state)
  dec = search_state.take_beams(dec, parents)
  if finished is not None:
    dec = dec.replace(done=finished | (dec.length >= limit))
  before = dec.length
  dec, stopped = sampling.decode(
      policy, dec, key, params, max_new_tokens=width, eos_id=eos, stop_ids=stops, max_length=limit
  )
  if cut:
    dec = dec.replace(done=dec.done | ((dec.length > before) & (stopped < 0)))
  return dec, stopped, before


@functools.partial(jax.jit, static_argnames=("graphdef", "buf", "width"))
def _prefill(graphdef, state, prompts, lengths, *, buf, width):
  dec = sampling.prefill(nnx.merge(graphdef, state), prompts, lengths, buf)
  return sampling.repeat_state(dec, width)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _score(graphdef, state, tokens, lengths):
  return nnx.merge(graphdef, state).score(tokens, lengths)


def prm_values(prm: BridgedPRM, questions, steps, batch: int = 32):
  """(values float32[R] at each solution's last tag, PRM sequence lengths int[R]) of
  (question, steps) pairs in the PRM's own format; sequences past its max_len are cut and
  read at their last position."""
  model, max_len = prm.loaded.model, int(prm.loaded.model.cfg.max_len)
  enc = [prm.loaded.encode(q, s) for q, s in zip(questions, steps)]
  seqs = [(ids[:max_len], min(pos[-1] if pos else len(ids) - 1, max_len - 1)) for ids, pos in enc]
  graphdef, state = nnx.split(model)
  out = np.zeros((len(seqs),), np.float32)
  order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
  for s in range(0, len(order), batch):
    part = order[s : s + batch]
    longest = max(len(seqs[i][0]) for i in part)
    width = min(max_len, 1 << max(6, math.ceil(math.log2(longest))))
    toks, lens = np.zeros((batch, width), np.int32), np.ones((batch,), np.int32)
    for r, i in enumerate(part):
      toks[r, : len(seqs[i][0])], lens[r] = seqs[i][0], len(seqs[i][0])
    vals = np.asarray(_score(graphdef, state, jnp.asarray(toks), jnp.asarray(lens)))
    for r, i in enumerate(part):
      out[i] = vals[r, seqs[i][1]]
  return out, np.asarray([len(ids) for ids, _ in enc], np.int64)


class _Search:
  """The host side of one bridged search (see `bridged_search`)."""

  def __init__(self, policy, prm, prompts, plens, questions, n, eos, stops, max_rounds, extra):
    self.prm, self.tok, self.n, self.eos, self.stops = prm, prm.policy_tokenizer, n, eos, stops
    self.b, self.rows = prompts.shape[0], prompts.shape[0] * n
    self.g_pol, self.s_pol = nnx.split(policy)
    self.qs = [questions[r // n] for r in range(self.rows)]
    self.score = np.zeros((self.b, n), np.float32)
    self.finished = np.zeros((self.b, n), bool)
    self.step_scores = np.zeros((self.b, n, max_rounds + extra), np.float32)
    self.steps: list[list[str]] = [[] for _ in range(self.rows)]
    self.count = {k: np.zeros(self.b) for k in ("gen", "pol", "pol_ctx", "prm", "prm_ctx")}
    self.count["pol"] += plens - 1
    self.count["pol_ctx"] += plens * (plens - 1) / 2
    first = np.asarray([len(prm.loaded.encode(q, [])[0]) for q in questions], np.int64)
    self.prm_len = np.repeat(first, n)
    self.count["prm"] += first
    self.count["prm_ctx"] += first * (first + 1) / 2

  def add(self, key, per_row):
    self.count[key] += np.asarray(per_row, np.float64).reshape(self.b, self.n).sum(1)

  def reorder(self, done):
    parents = select_parents(
        jnp.asarray(self.score), jnp.asarray(done), groups=self.groups, keep=self.keep
    )
    self.score, self.step_scores, self.finished = (
        np.array(search_state.take_beams(jnp.asarray(x), parents, flat=False))
        for x in (self.score, self.step_scores, self.finished)
    )
    src = (np.asarray(parents) + self.n * np.arange(self.b)[:, None]).ravel()
    self.steps, self.prm_len = [list(self.steps[i]) for i in src], self.prm_len[src]
    return parents

  def step(self, dec, parents, key, knobs, limit, finished, width, stops, cut=True):
    """Decodes, counts the policy's work; returns the new state, stop ids, the rows that
    stepped and each row's new text (up to the step delimiter when `stops`)."""
    dec, stopped, before = _step(
        self.g_pol,
        self.s_pol,
        dec,
        parents,
        key,
        knobs,
        limit,
        finished,
        width=width,
        eos=self.eos,
        stops=stops,
        cut=cut,
    )
    toks, length, before = (np.asarray(x) for x in jax.device_get((dec.tokens, dec.length, before)))
    new = length - before
    self.add("gen", new)
    self.add("pol", new)
    self.add("pol_ctx", new * (before + length - 1) / 2)
    delim = self.tok.step_delimiter
    texts = [self.tok.decode(toks[r, before[r] : length[r]]) for r in range(self.rows)]
    texts = [t.split(delim)[0] if stops else t for t in texts]
    return dec, np.asarray(stopped), np.nonzero(new > 0)[0], texts

  def values(self, idx, row_steps, lengths):
    """PRM values of rows `idx` with `row_steps`; counts the PRM's growth from `lengths`."""
    vals, lens = prm_values(self.prm, [self.qs[r] for r in idx], row_steps)
    grow = np.zeros(self.rows)
    grow[idx] = lens - lengths[idx]
    ctx = np.zeros(self.rows)
    ctx[idx] = (lens - lengths[idx]) * (lens + lengths[idx] + 1) / 2
    self.add("prm", grow)
    self.add("prm_ctx", ctx)
    return vals, lens

  def commit(self, idx, texts, vals, rank, stopped, lens):
    for j, r in enumerate(idx):
      q, s = divmod(int(r), self.n)
      self.steps[r].append(texts[r])
      self.step_scores[q, s, len(self.steps[r]) - 1] = vals[j]
      self.score[q, s] = rank[j]
      self.finished[q, s] |= int(stopped[r]) in self.eos
    self.prm_len[idx] = lens

  def rollouts(self, dec, idx, texts, vals, lens, k, width, limit):
    """Rank values after up to k greedy steps from each stepped row (then dropped)."""
    greedy, ident = SamplingParams.make(0.0), jnp.broadcast_to(jnp.arange(self.n), (self.b, self.n))
    rank = dict(zip(idx.tolist(), vals.tolist()))
    roll_steps = {r: self.steps[r] + [texts[r]] for r in idx.tolist()}
    roll_len = self.prm_len.copy()
    roll_len[idx] = lens
    roll = dec
    for _ in range(k):
      if bool(np.asarray(roll.done).all()):
        break
      roll, _, moved, new = self.step(
          roll, ident, jax.random.key(0), greedy, limit, None, width, self.stops, cut=False
      )
      moved = np.asarray([r for r in moved if r in roll_steps], np.int64)
      if not len(moved):
        continue
      v, roll_lens = self.values(moved, [roll_steps[r] + [new[r]] for r in moved], roll_len)
      for j, r in enumerate(moved.tolist()):
        roll_steps[r].append(new[r])
        rank[r] = float(v[j])
      roll_len[moved] = roll_lens
    return np.asarray([rank[r] for r in idx.tolist()], np.float32)


def bridged_search(
    policy,
    prm: BridgedPRM,
    prompts,
    prompt_lengths,
    rng,
    *,
    questions: Sequence[str],
    n: int,
    groups: int,
    keep: int,
    lookahead: int = 0,
    max_rounds: int,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id,
    delimiter_id,
    params: SamplingParams | None = None,
    final_completion: bool = False,
    compact_levels: int = 0,
) -> search_state.SearchResult:
  """Beam search (groups=1, keep=N/M), DVTS (groups=N/M, keep=1) or lookahead (k =
  `lookahead`) of the policy's `prompts` [B, P] with a `BridgedPRM`; the PRM's prompt is
  written from `questions[b]`. Returns the kernels' `SearchResult`. (`compact_levels`, a
  kernel speed knob, is accepted and unused.)"""
  del compact_levels
  eos, stops = sampling.token_ids(eos_id), sampling.token_ids(delimiter_id)
  params = SamplingParams.make() if params is None else params
  prompts, plens = np.asarray(prompts, np.int32), np.asarray(prompt_lengths, np.int32)
  b, p = prompts.shape
  sampling.check_fits(policy.cfg, p, max_new_tokens, "policy")
  hs = _Search(
      policy, prm, prompts, plens, questions, n, eos, stops, max_rounds, int(final_completion)
  )
  hs.groups, hs.keep = groups, keep
  dec = _prefill(hs.g_pol, hs.s_pol, prompts, plens, buf=p + max_new_tokens, width=n)
  limit = jnp.full((b * n,), p + max_new_tokens, jnp.int32)
  rounds = 0
  while rounds < max_rounds and not bool(np.asarray(dec.done).all()):
    parents = hs.reorder(np.asarray(dec.done).reshape(b, n))
    key = jax.random.fold_in(rng, rounds)
    dec, stopped, idx, texts = hs.step(
        dec, parents, key, params, limit, None, max_step_tokens, stops
    )
    vals, lens = hs.values(idx, [hs.steps[r] + [texts[r]] for r in idx], hs.prm_len)
    rank = vals
    if lookahead and len(idx):
      rank = hs.rollouts(dec, idx, texts, vals, lens, lookahead, max_step_tokens, limit)
    hs.commit(idx, texts, vals, rank, stopped, lens)
    rounds += 1
  if final_completion:
    parents = hs.reorder(np.asarray(dec.done).reshape(b, n))
    lim = jnp.asarray(np.repeat(plens, n) + max_new_tokens, jnp.int32)
    fin = jnp.asarray(hs.finished.ravel())
    key = jax.random.fold_in(rng, rounds)
    dec, stopped, idx, texts = hs.step(dec, parents, key, params, lim, fin, max_new_tokens, ())
    vals, lens = hs.values(idx, [hs.steps[r] + [texts[r]] for r in idx], hs.prm_len)
    hs.commit(idx, texts, vals, vals, stopped, lens)
  return _result(hs, dec, plens, max_new_tokens, rounds, n * (1 + lookahead), policy.cfg)


def _result(hs: _Search, dec, plens, g: int, rounds: int, generations: int, policy_cfg):
  b, n = hs.score.shape
  toks, length = (np.asarray(x) for x in jax.device_get((dec.tokens, dec.length)))
  start = np.repeat(plens, n)
  out = np.zeros((b * n, g), np.int32)
  for r in range(b * n):
    gen = toks[r, start[r] : length[r]][:g]
    out[r, : len(gen)] = gen
  num_steps = np.asarray([len(s) for s in hs.steps], np.int32).reshape(b, n)
  last = np.maximum(num_steps - 1, 0)[..., None]
  c = {k: jnp.asarray(v, jnp.float32) for k, v in hs.count.items()}
  return search_state.SearchResult(
      tokens=jnp.asarray(out.reshape(b, n, g)),
      lengths=jnp.asarray((length - start).reshape(b, n)),
      scores=jnp.asarray(np.take_along_axis(hs.step_scores, last, -1)[..., 0]),
      step_scores=jnp.asarray(hs.step_scores),
      num_steps=jnp.asarray(num_steps),
      finished=jnp.asarray(hs.finished),
      generations=jnp.full((b,), generations, jnp.int32),
      generated_tokens=c["gen"].astype(jnp.int32),
      policy_tokens=c["pol"].astype(jnp.int32),
      prm_tokens=c["prm"].astype(jnp.int32),
      policy_flops=search_state.flops(c["pol"], c["pol_ctx"], policy_cfg),
      prm_flops=search_state.flops(c["prm"], c["prm_ctx"], hs.prm.cfg, value_head=True),
      rounds=jnp.int32(rounds),
  )
