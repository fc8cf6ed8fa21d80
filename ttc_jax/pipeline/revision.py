"""Revision stages (arith): chains on training questions, ORM on revision outputs, RL, chain
evaluation; and the helpers all revision stages share (data and SFT: `revision_data.py`).

  <workdir>/revision_chains/   train_chains.jsonl: SFT chains on training questions
  <workdir>/revision_orm/      the ORM on revision outputs (previous attempts in context)
  <workdir>/revision_rl/       checkpoints/, model/, metrics.jsonl
  <workdir>/revision_eval/     eval.json, chains_sft.jsonl, chains_rl.jsonl

`run_chains`, `score_chains` and `load_revision` are also what the
compute-optimal policy's revision family runs (`compute_optimal.revise_fn`).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from flax import nnx

from ttc_jax import config as config_lib
from ttc_jax import io_utils
from ttc_jax.config import settings as config_settings
from ttc_jax.models.config import ModelConfig
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.policy import policy_sections
from ttc_jax.prm import data as prm_data
from ttc_jax.prm import evaluate as prm_eval
from ttc_jax.prm import train as prm_train
from ttc_jax.revision import chains, evaluate, rl
from ttc_jax.revision import format as fmt
from ttc_jax.tasks import arith
from ttc_jax.tasks.arith import device as arith_device


def revision_cfg(cfg) -> ModelConfig:
  """The policy's architecture with a context long enough for previous attempts."""
  return ModelConfig.from_dict(dict(cfg.model.to_dict(), max_len=int(cfg.revision.max_len)))


def question_position(cfg) -> str:
  """Where revision prompts put the question (`format.revision_prompt`); "first" if unset."""
  return str(cfg.revision.get("question_position", "first"))


def revision_sections(*parts: str):
  """The sections of a revision stage reading the revision sections `parts`."""

  def sections(cfg) -> dict:
    r = cfg.revision
    common = dict(context_attempts=r.context_attempts, max_len=r.max_len)
    if question_position(cfg) != "first":  # hashed only when set: older runs stay reusable
      common["question_position"] = question_position(cfg)
    out = dict(policy_sections(cfg), revision_data=r.data.to_dict(), revision_common=common)
    hashed = {"sft": config_lib.revision_sft_section, "rl": config_lib.rl_section}
    for p in parts:
      out[f"revision_{p}"] = hashed[p](r[p]) if p in hashed else r[p].to_dict()
    return out

  return sections


def load_revision(ctx: RunContext, which: str = "sft"):
  return ctx.load_lm(ctx.path(f"revision_{which}", "model"), revision_cfg(ctx.cfg))


# --- chains: ORM data and RL contexts on training questions, evaluation -------------------


def revision_chains(ctx: RunContext) -> dict:
  ch = ctx.cfg.revision.chains
  probs = ctx.problems("train", ch.questions_per_level, skip=ch.skip_questions)
  recs, stats = run_chains(
      ctx,
      load_revision(ctx, "sft"),
      probs,
      [ch.steps] * ch.chains,
      jax.random.key(ch.seed),
      ch.temperature,
  )
  io_utils.atomic_write_jsonl(ctx.path("revision_chains", "train_chains.jsonl"), recs)
  return dict(
      stats,
      questions=len(probs),
      accuracy=float(np.mean([c for r in recs for x in r["correct"] for c in x])),
  )


def run_chains(ctx: RunContext, model, probs: list[dict], lengths, rng, temperature: float):
  """Chains for `probs`; records with attempts, answers and correctness per chain.

  Questions are grouped by attempt budget (`chains.attempt_budget` of their
  reference solution's length, capped by revision.max_new_tokens), so easy
  questions do not pay for the hard ones' prompt and attempt buffers.
  """
  r = ctx.cfg.revision
  groups: dict[int, list[int]] = {}
  for i, p in enumerate(probs):
    groups.setdefault(chains.attempt_budget(len(p["solution"]), r.max_new_tokens), []).append(i)
  texts: list = [None] * len(probs)
  stats = dict(generated_tokens=0, seconds=0.0, generations=0, groups={})
  for budget, idx in sorted(groups.items()):
    hist, hlen, st = chains.run_chains(
        model,
        ctx.tokenizer,
        [probs[i]["question"] for i in idx],
        lengths,
        jax.random.fold_in(rng, budget),
        context=r.context_attempts,
        max_new_tokens=budget,
        temperature=temperature,
        max_rows=r.max_rows,
        question_position=question_position(ctx.cfg),
        mesh=ctx.mesh,
    )
    for i, t in zip(idx, chains.attempt_texts(ctx.tokenizer, hist, hlen)):
      texts[i] = t
    for k in ("generated_tokens", "seconds", "generations"):
      stats[k] += st[k]
    stats["groups"][str(budget)] = dict(questions=len(idx), seconds=st["seconds"])
  stats["tokens_per_s"] = stats["generated_tokens"] / max(stats["seconds"], 1e-9)
  recs = []
  for p, chs in zip(probs, texts):
    answers = [[arith.extract_answer(t) for t in c] for c in chs]
    recs.append(
        dict(
            question=p["question"],
            level=p["level"],
            target=str(p["answer"]),
            attempts=chs,
            answers=answers,
            correct=[[bool(arith.equivalent(a, str(p["answer"]))) for a in c] for c in answers],
        )
    )
  return recs, stats


def score_chains(ctx: RunContext, orm, recs: list[dict], batch_size: int) -> float:
  """Sets r["scores"][c][t], the ORM's final score of every attempt; returns seconds."""
  rows = attempt_rows(ctx, recs)
  t0 = time.perf_counter()
  scores = prm_eval.score_solutions(
      orm,
      ctx.tokenizer,
      [x["prompt"] for x in rows],
      [x["solution"] for x in rows],
      batch_size=batch_size,
      mesh=ctx.mesh,
  )
  it = iter(scores)
  for r in recs:
    r["scores"] = [[(s[-1] if s else 0.0) for s in (next(it) for _ in c)] for c in r["attempts"]]
  return time.perf_counter() - t0


def attempt_rows(ctx: RunContext, recs: list[dict]) -> list[dict]:
  """One row per attempt: its revision prompt (truncated context) and its lines."""
  k = ctx.cfg.revision.context_attempts
  position = question_position(ctx.cfg)
  rows = []
  for r in recs:
    for ci, chain in enumerate(r["attempts"]):
      for t, att in enumerate(chain):
        rows.append(
            dict(
                question=r["question"],
                level=r["level"],
                answer=r["target"],
                chain=ci,
                step=t,
                steps=prm_eval.text_steps(att),
                solution=att,
                prompt=fmt.revision_prompt(r["question"], fmt.truncate(chain[:t], k), position),
                answer_correct=r["correct"][ci][t],
                previous_correct=bool(r["correct"][ci][t - 1]) if t else None,
            )
        )
  return rows


def load_revision_orm(ctx: RunContext):
  return prm_train.load_value_model(
      ctx.path("revision_orm", "model"),
      revision_cfg(ctx.cfg),
      ctx.tokenizer,
      kind="orm",
      seed=ctx.cfg.seed,
      mesh=ctx.mesh,
  )


def revision_orm(ctx: RunContext) -> dict:
  rows = [
      x
      for x in attempt_rows(
          ctx, io_utils.read_jsonl(ctx.path("revision_chains", "train_chains.jsonl"))
      )
      if x["steps"]
  ]
  return prm_train.train_value_model(
      revision_cfg(ctx.cfg),
      nnx.state(load_revision(ctx, "sft")),
      ctx.tokenizer,
      rows,
      ctx.path("revision_orm"),
      config_settings.value_train_settings(ctx.cfg.revision.orm, "revision.orm"),
      kind="orm",
      seed=ctx.cfg.seed,
      mesh=ctx.mesh,
      meta=ctx.meta(revision_sections("sft", "chains", "orm")(ctx.cfg)),
      progress=ctx.progress,
  )


def revision_rl(ctx: RunContext) -> dict:
  rl_cfg = ctx.cfg.revision.rl
  recs = rl.select_chain_records(
      io_utils.read_jsonl(ctx.path("revision_chains", "train_chains.jsonl")), rl_cfg.contexts
  )
  contexts = [
      dict(prompt=x["prompt"], answer=x["answer"], question=x["question"])
      for x in rl.select_context_rows(attempt_rows(ctx, recs), rl_cfg.contexts)
  ]
  held = [c for c in contexts if prm_data.is_heldout(c["question"], rl_cfg.heldout_fraction)]
  train = [c for c in contexts if not prm_data.is_heldout(c["question"], rl_cfg.heldout_fraction)]
  held = held[: int(rl_cfg.eval_contexts)]
  model, ref = load_revision(ctx, "sft"), load_revision(ctx, "sft")
  meta = ctx.meta(revision_sections("sft", "chains", "rl")(ctx.cfg))
  t0 = time.perf_counter()
  last = rl.train_rl(
      model,
      ref,
      ctx.tokenizer,
      train,
      held,
      config_settings.rl_settings(rl_cfg),
      ctx.path("revision_rl"),
      reward_fn=arith_device.DeviceGrader.from_tokenizer(ctx.tokenizer),
      encode_targets=arith_device.encode_targets,
      seed=ctx.cfg.seed,
      mesh=ctx.mesh,
      meta=meta,
      progress=ctx.progress,
  )
  return dict(
      final_metrics=last,
      train_contexts=len(train),
      heldout_contexts=len(held),
      seconds=time.perf_counter() - t0,
  )


def eval_revision(ctx: RunContext) -> dict:
  ev = ctx.cfg.revision.eval
  probs = ctx.problems("test", ev.questions_per_level)
  budgets = tuple(int(b) for b in ev.budgets)
  lengths = chains.chain_lengths(budgets, ev.step_chains, ev.report_steps)
  orm = load_revision_orm(ctx)
  out = dict(budgets=list(budgets), chain_lengths=lengths, questions=len(probs))
  recs_of = {}
  for which in ("sft", "rl"):
    recs, stats = run_chains(
        ctx, load_revision(ctx, which), probs, lengths, jax.random.key(ev.seed), ev.temperature
    )
    stats["orm_seconds"] = score_chains(ctx, orm, recs, ev.score_batch)
    io_utils.atomic_write_jsonl(ctx.path("revision_eval", f"chains_{which}.jsonl"), recs)
    recs_of[which] = recs
    out[which] = dict(
        evaluate.summarize(recs, budgets, arith.equivalent, ctx.levels, ev.report_steps),
        stats=stats,
    )
    o = out[which]["overall"]
    steps = [None if v is None else round(v, 3) for v in o["pass_at_step"]]
    print(
        f"[eval_revision] {which}: pass@1 by step {steps}, "
        f"right->wrong {o['flips']['right_to_wrong']:.3f}"
    )
  # RL minus SFT, sequential at the largest budget, paired by question (with its noise)
  top = max(budgets)
  out["rl_vs_sft"] = dict(
      budget=top,
      **{
          sel: evaluate.paired_gain(recs_of["sft"], recs_of["rl"], 1, top, sel, arith.equivalent)
          for sel in evaluate.SELECTIONS
      },
  )
  io_utils.atomic_write_json(ctx.path("revision_eval", "eval.json"), out)
  return out
