"""Running the search kernels over held-out questions at several generation budgets.

Methods (Snell et al. 2024 §5.2, plus DVTS), keyed by the *generation budget*
G (the paper's unit, comparable with best-of-N at N = G):

  beam_m4        beam search, N = G beams, beam width M = 4
  beam_sqrt      beam search, N = G, M = round(sqrt(G))
  lookahead_k1   lookahead search with k = 1: N = G / 2 beams (each step also
  lookahead_k3   costs k greedy rollout steps), k = 3: N = G / 4; M = min(4, N)
  dvts           DVTS, N = G beams in G / 4 subtrees of M = 4

A budget a method cannot fill (N < 1, or M not dividing N) is skipped. Each
call searches many questions at once (`max_beams` rows); the last call is
padded with copies (`evaluation.padded_rows`), so a sweep compiles a few
shapes per method and budget. Answers are chosen with best-of-N weighted
over the N final candidates (`state.select_answers`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ttc_jax import evaluation, parallel
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import beam, bridge, dvts, lookahead
from ttc_jax.search import state as search_state
from ttc_jax.search.budgets import METHODS, plan
from ttc_jax.selection import best_of_n


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  """A search sweep (config `search`, less the pipeline's `questions_per_level` / `questions`).

  methods: names from `budgets.METHODS`; budgets: generation budgets G; seed: the sweep's RNG
  (folded per method and budget). Per search: at most max_rounds steps of at most
  max_step_tokens tokens, max_new_tokens in all (capped by what the model's max_len leaves
  after the prompt), sampled at temperature / top_k (0: off) / top_p (1: off); max_beams:
  rows (questions x N beams) per kernel call; compact_levels: the kernels' cache compaction
  levels (speed only, `beam.COMPACT_LEVELS`); final_completion: beams not finished after
  the rounds get one completion to EOS before answers are read (`beam.search`; on in the
  text configs, off by default and for the embedded task); share_prefix: the kernels hold each
  prompt's KV caches once per question (`beam.SHARE_PREFIX`; memory only, False keeps a copy
  per beam); cache_dtype: how KV caches are stored ("" = each model's compute dtype,
  "bfloat16", "float32"; `state.cache_storage_dtype`).
  """

  methods: tuple[str, ...]
  budgets: tuple[int, ...]
  seed: int
  max_rounds: int
  max_step_tokens: int
  max_new_tokens: int
  temperature: float
  top_k: int
  top_p: float
  max_beams: int
  compact_levels: int = beam.COMPACT_LEVELS
  final_completion: bool = False
  share_prefix: bool = beam.SHARE_PREFIX
  cache_dtype: str = ""


def _run_kernel(method: str, policy, prm, toks, lens, rng, spec: dict, kw: dict):
  if isinstance(prm, bridge.BridgedPRM):  # another vocabulary: rounds on the host
    n, m = spec["n"], spec["m"]
    groups, keep = (n // m, 1) if method == "dvts" else (1, n // m)
    kw = {k: v for k, v in kw.items() if k not in ("share_prefix", "cache_dtype")}
    return bridge.bridged_search(
        policy, prm, toks, lens, rng, n=n, groups=groups, keep=keep, lookahead=spec["k"], **kw
    )
  kw = {k: v for k, v in kw.items() if k != "questions"}
  if method.startswith("beam"):
    return beam.beam_search(policy, prm, toks, lens, rng, n=spec["n"], m=spec["m"], **kw)
  if method.startswith("lookahead"):
    return lookahead.lookahead_search(
        policy, prm, toks, lens, rng, n=spec["n"], m=spec["m"], k=spec["k"], **kw
    )
  return dvts.dvts(policy, prm, toks, lens, rng, n=spec["n"], m=spec["m"], **kw)


def kernel_args(
    policy,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_rounds: int,
    max_step_tokens: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    compact_levels: int = beam.COMPACT_LEVELS,
    final_completion: bool = False,
    share_prefix: bool = beam.SHARE_PREFIX,
    cache_dtype: str = "",
) -> tuple[int, dict]:
  """(P, kernel keyword arguments) for searching `prompts`: P is the padded prompt width (the
  longest with BOS, rounded up to a multiple of 8); solutions get what is left of max_len.
  Steps end at any of the tokenizer's `delimiter_ids` (every token containing the step
  delimiter; the character tokenizer's newline alone), solutions at any of its `eos_ids`."""
  enc = max(len(tokenizer.encode(p)) + 1 for p in prompts)
  plen = int(math.ceil(enc / 8) * 8)
  params = SamplingParams.make(temperature, top_k, top_p, vocab_limit=tokenizer.vocab_size)
  return plen, dict(
      max_rounds=max_rounds,
      max_step_tokens=max_step_tokens,
      max_new_tokens=min(max_new_tokens, policy.cfg.max_len - plen),
      eos_id=getattr(tokenizer, "eos_ids", (tokenizer.EOS,)),
      delimiter_id=getattr(tokenizer, "delimiter_ids", (tokenizer.newline_id,)),
      params=params,
      compact_levels=compact_levels,
      final_completion=final_completion,
      share_prefix=share_prefix,
      cache_dtype=cache_dtype,
  )


def prm_prompt_arrays(prm, problems: Sequence[dict], width: int | None = None) -> dict:
  """{prm_prompts int32[B, P'], prm_prompt_lengths int32[B]} for a PRM that reads its own
  prompt format (`prm_steps.StepTagPRM.prompt_ids`, from each problem's question), padded
  to `width` (default: the longest rounded up to a multiple of 8); {} for a PRM that reads
  the policy's prompts."""
  if isinstance(prm, bridge.BridgedPRM):  # it writes its prompts from the questions itself
    return dict(questions=[p.get("question", p["prompt"]) for p in problems])
  fn = getattr(prm, "prompt_ids", None)
  if fn is None:
    return {}
  ids = [list(fn(p.get("question", p["prompt"]))) for p in problems]
  width = width or int(math.ceil(max(len(x) for x in ids) / 8) * 8)
  toks = np.zeros((len(ids), width), np.int32)
  for r, x in enumerate(ids):
    toks[r, : len(x)] = x
  return dict(prm_prompts=toks, prm_prompt_lengths=np.asarray([len(x) for x in ids], np.int32))


def run_method(
    policy,
    prm,
    tokenizer,
    problems: Sequence[dict],
    method: str,
    budget: int,
    rng: jax.Array,
    *,
    extract_answer: Callable[[str], Any],
    equivalent: Callable[[Any, Any], bool],
    max_rounds: int,
    max_step_tokens: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    max_beams: int = 2048,
    compact_levels: int = beam.COMPACT_LEVELS,
    final_completion: bool = False,
    share_prefix: bool = beam.SHARE_PREFIX,
    cache_dtype: str = "",
    mesh=None,
) -> tuple[list[dict], dict] | None:
  """Searches every problem (dicts with prompt, answer) with `method` at `budget`.

  Returns (per-question records, stats) or None when the budget does not fit
  the method. A record: answer, correct, generations, generated_tokens,
  policy_flops, prm_flops, candidate answers and scores.
  """
  spec = plan(method, budget)
  if spec is None:
    return None
  n = spec["n"]
  chunk = max(1, max_beams // n)
  if mesh is not None:
    d = mesh.shape["data"] * mesh.shape["fsdp"]
    chunk = int(math.ceil(chunk / d) * d)
  plen, kw = kernel_args(
      policy,
      tokenizer,
      [p["prompt"] for p in problems],
      max_rounds=max_rounds,
      max_step_tokens=max_step_tokens,
      max_new_tokens=max_new_tokens,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      compact_levels=compact_levels,
      final_completion=final_completion,
      share_prefix=share_prefix,
      cache_dtype=cache_dtype,
  )
  prm_width = np.shape(prm_prompt_arrays(prm, problems).get("prm_prompts", np.zeros((0, 0))))[1]
  records: list[dict] = []
  t0 = time.perf_counter()
  for i, s in enumerate(range(0, len(problems), chunk)):
    part = list(problems[s : s + chunk])
    real = len(part)
    rows = evaluation.padded_rows(real, chunk)
    if mesh is not None:
      rows = int(math.ceil(rows / d) * d)
    part += [part[-1]] * (rows - real)
    toks, lens = tokenizer.encode_batch([p["prompt"] for p in part], plen, add_bos=True)
    call = dict(kw, **prm_prompt_arrays(prm, part, prm_width))
    if mesh is not None:
      toks = jax.device_put(toks, parallel.data_sharding(mesh, 2))
      lens = jax.device_put(lens, parallel.data_sharding(mesh, 1))
      for k in ("prm_prompts", "prm_prompt_lengths"):
        if k in call:
          call[k] = jax.device_put(call[k], parallel.data_sharding(mesh, call[k].ndim))
    with parallel.use_mesh(mesh):
      res = _run_kernel(method, policy, prm, toks, lens, jax.random.fold_in(rng, i), spec, call)
    picked = search_state.select_answers(res, tokenizer, extract_answer, equivalent)
    cost = jax.device_get(
        dict(
            generations=res.generations,
            generated_tokens=res.generated_tokens,
            policy_flops=res.policy_flops,
            prm_flops=res.prm_flops,
        )
    )
    for b in range(real):
      p, sel = part[b], picked[b]
      records.append(
          dict(
              question=p.get("question", p["prompt"].strip()),
              level=p.get("level", ""),
              method=method,
              budget=budget,
              n=n,
              m=spec["m"],
              k=spec["k"],
              answer=sel["answer"],
              target=str(p["answer"]),
              correct=bool(equivalent(sel["answer"], str(p["answer"]))),
              **{c: float(v[b]) for c, v in cost.items()},
              candidate_answers=[c["answer"] for c in sel["candidates"]],
              candidate_scores=[round(c["score"], 5) for c in sel["candidates"]],
          )
      )
  dt = time.perf_counter() - t0
  return records, dict(
      seconds=dt,
      questions=len(records),
      **spec,
      generated_tokens=float(sum(r["generated_tokens"] for r in records)),
  )


def curves(records: Sequence[dict], levels: Sequence[str]) -> tuple[dict, dict]:
  """Accuracy by method and budget, overall and per level: {method: {budget: acc}}."""

  def acc(rs):
    out: dict[str, dict[int, float]] = {}
    for r in rs:
      out.setdefault(r["method"], {}).setdefault(r["budget"], []).append(r["correct"])
    return {m: {b: float(np.mean(v)) for b, v in sorted(d.items())} for m, d in out.items()}

  return acc(records), {
      lv: acc([r for r in records if r["level"] == lv])
      for lv in levels
      if any(r["level"] == lv for r in records)
  }


def evaluate_search(
    policy,
    prm,
    tokenizer,
    problems: Sequence[dict],
    sc: SearchSettings,
    levels: Sequence[str],
    samples: Sequence[dict],
    scores: Sequence[dict],
    *,
    num_samples: int,
    aggregation: str,
    extract_answer: Callable[[str], Any],
    equivalent: Callable[[Any, Any], bool],
    mesh=None,
) -> tuple[list[dict], dict]:
  """The eval_search stage's work: every method x budget of `sc` over `problems`.

  Each (method, budget) gets its own RNG stream folded from `sc.seed`. The best-of-N
  baselines (majority, PRM best-of-N weighted) come from the policy `samples` and their PRM
  `scores` (scores.jsonl rows) of the same questions. Returns (per-question records, the
  stage summary: curves, curves_by_level, stats, questions, baselines).
  """
  records, stats = [], {}
  for method in sc.methods:
    for budget in sc.budgets:
      rng = jax.random.fold_in(
          jax.random.fold_in(jax.random.key(sc.seed), METHODS.index(method)), int(budget)
      )
      out = run_method(
          policy,
          prm,
          tokenizer,
          problems,
          method,
          int(budget),
          rng,
          extract_answer=extract_answer,
          equivalent=equivalent,
          max_rounds=sc.max_rounds,
          max_step_tokens=sc.max_step_tokens,
          max_new_tokens=sc.max_new_tokens,
          temperature=sc.temperature,
          top_k=sc.top_k,
          top_p=sc.top_p,
          max_beams=sc.max_beams,
          compact_levels=sc.compact_levels,
          final_completion=sc.final_completion,
          share_prefix=sc.share_prefix,
          cache_dtype=sc.cache_dtype,
          mesh=mesh,
      )
      if out is None:
        print(f"[eval_search] {method} cannot spend a budget of {budget}; skipped")
        continue
      recs, st = out
      records += recs
      stats.setdefault(method, {})[str(budget)] = st
      acc = np.mean([r["correct"] for r in recs])
      print(f"[eval_search] {method} @ {budget}: accuracy {acc:.3f} in {st['seconds']:.1f}s")
  by_method, by_level = curves(records, levels)
  wanted = {p["question"] for p in problems}
  samples = [r for r in samples if r["question"] in wanted]
  flat = [v for s in scores if s["question"] in wanted for v in s["prm"]]
  budgets = tuple(int(b) for b in sc.budgets if int(b) <= num_samples)
  base = best_of_n.selection_curves(samples, {"prm": flat}, budgets, equivalent, aggregation)
  return records, dict(
      curves=by_method,
      curves_by_level=by_level,
      stats=stats,
      questions=len(problems),
      baselines={k: base[k] for k in ("majority", "prm_best_of_n_weighted")},
  )
