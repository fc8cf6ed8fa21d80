"""Revision stages (arith): trajectories and SFT of the revision model.

  <workdir>/revision_data/     trajectories.array_record (+ stats.json)
  <workdir>/revision_sft/      checkpoints/, best/, model/, metrics.jsonl

The later revision stages (chains, ORM, RL, evaluation) are in `pipeline/revision.py`.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from ttc_jax import evaluation, io_utils, parallel
from ttc_jax.config import settings as config_settings
from ttc_jax.data import records as records_lib
from ttc_jax.models.transformer import create_model
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.revision import question_position, revision_cfg, revision_sections
from ttc_jax.prm import data as prm_data
from ttc_jax.revision import format as fmt
from ttc_jax.revision import sft, trajectories
from ttc_jax.tasks import arith


def revision_data(ctx: RunContext) -> dict:
  d, r = ctx.cfg.revision.data, ctx.cfg.revision
  probs = ctx.problems("train", d.questions_per_level)
  texts, stats = evaluation.sample_texts(
      ctx.load_policy(),
      ctx.tokenizer,
      [p["prompt"] for p in probs],
      jax.random.key(d.seed),
      num_samples=d.samples_per_question,
      max_new_tokens=d.max_new_tokens,
      temperature=d.temperature,
      max_batch=d.max_batch,
      mesh=ctx.mesh,
      progress=ctx.progress,
      desc="revision samples",
  )
  recs = []
  lucky = 0
  for p, ts in zip(probs, texts):
    ok = [arith.is_correct(t, p["answer"]) for t in ts]
    if d.exact_targets:  # a right answer reached through a wrong step is no target
      keep = [not c or arith.check_solution(p["question"], t).all_correct for t, c in zip(ts, ok)]
      lucky += len(keep) - sum(keep)
      ts, ok = [t for t, k in zip(ts, keep) if k], [c for c, k in zip(ok, keep) if k]
    recs.append(
        dict(
            question=p["question"],
            level=p["level"],
            answer=str(p["answer"]),
            samples=ts,
            sample_correct=ok,
        )
    )
  trajs = trajectories.build_dataset(
      recs,
      np.random.default_rng(d.seed),
      max_context=r.context_attempts,
      max_per_question=d.max_per_question,
      keep_fraction=float(d.keep_fraction),
      question_position=question_position(ctx.cfg),
      keep=lambda t: fits_sft(ctx.cfg, t),
  )
  records_lib.write_records(ctx.path("revision_data", "trajectories.array_record"), trajs)
  out = dict(
      trajectories.summarize(trajs),
      sampling=stats,
      dropped_lucky_right=lucky,
      sample_accuracy=float(np.mean([c for x in recs for c in x["sample_correct"]])),
      questions_with_right_and_wrong=int(
          sum(any(x["sample_correct"]) and not all(x["sample_correct"]) for x in recs)
      ),
  )
  io_utils.atomic_write_json(ctx.path("revision_data", "stats.json"), out)
  return out


def read_trajectories(ctx: RunContext) -> list[dict]:
  return records_lib.read_records(ctx.path("revision_data", "trajectories.array_record"))


def revision_sft(ctx: RunContext) -> dict:
  with parallel.use_mesh(ctx.mesh):
    model = create_model(revision_cfg(ctx.cfg), ctx.cfg.seed, ctx.mesh)
  nnx.update(model, nnx.state(ctx.load_policy()))
  trajs = read_trajectories(ctx)
  _, summary = sft.train_revision_model(
      model,
      ctx.tokenizer,
      trajs,
      config_settings.sft_settings(ctx.cfg.revision.sft),
      ctx.path("revision_sft"),
      seed=ctx.cfg.seed,
      mesh=ctx.mesh,
      meta=ctx.meta(revision_sections("sft")(ctx.cfg)),
      progress=ctx.progress,
      replay=sft_replay(ctx, len(trajs), trajs),
  )
  return summary


def sft_replay(ctx: RunContext, num_trajectories: int, trajectories: list[dict] = ()) -> list[dict]:
  """Policy rows (plain prompt, reference solution) for `revision.sft.replay_fraction`:
  f / (1 - f) per trajectory, from training questions after those of the revision data
  and the SFT chains (so RL contexts and ORM data stay on questions SFT never saw).
  With `replay_foreign_fraction`, that share of them get attempts of other questions
  (from the SFT-training `trajectories`' contexts) in context (`sft.foreign_context`)."""
  r = ctx.cfg.revision
  frac = float(r.sft.get("replay_fraction", 0.0))
  if frac <= 0.0:
    return []
  want = int(round(frac / (1.0 - frac) * num_trajectories))
  per_level = max(1, -(-want // len(ctx.levels)))
  skip = max(
      int(r.data.questions_per_level),
      int(r.chains.skip_questions) + int(r.chains.questions_per_level),
  )
  probs = ctx.problems("train", per_level, skip=skip)
  position = question_position(ctx.cfg)
  rows = [
      dict(
          prompt=fmt.revision_prompt(p["question"], [], position),
          target=p["solution"],
          question=p["question"],
          level=p["level"],
      )
      for p in probs
  ]
  foreign = float(r.sft.get("replay_foreign_fraction", 0.0))
  if foreign > 0.0:
    pool = [
        t
        for t in trajectories
        if not prm_data.is_heldout(t["question"], float(r.sft.heldout_fraction))
    ]
    rows = sft.foreign_context(
        rows,
        pool,
        foreign,
        max_context=int(r.context_attempts),
        rng=np.random.default_rng(int(r.data.seed) + 1),
        question_position=position,
        fits=lambda t: fits_sft(ctx.cfg, t),
    )
  return rows


def fits_sft(cfg, t: dict) -> bool:
  """Whether a (prompt, target) row fits `revision.sft.seq_len` (characters are tokens,
  plus BOS and EOS)."""
  return len(t["prompt"]) + len(t["target"]) + 2 <= int(cfg.revision.sft.seq_len)
