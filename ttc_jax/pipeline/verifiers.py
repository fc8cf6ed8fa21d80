"""Verifier stages: Monte Carlo step labels, PRM and ORM training, verifier and search evaluation.

  <workdir>/prm_labels/       `label_steps`: labels-*.array_record (+ .json stats)
  <workdir>/prm/, orm/        `train_value_model`: checkpoints/, best/, model/, metrics.jsonl
  <workdir>/verifiers/        `eval_verifiers`: eval.json, scores.jsonl
  <workdir>/search/           `eval_search`: eval.json, results.jsonl

The labels, value models and verifier evaluation are the arith pipeline's (the
text pipeline loads its PRM and scores with `text.score_samples`);
`eval_search` serves both pipelines through the run context.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
from flax import nnx

from ttc_jax import config as config_lib
from ttc_jax import io_utils
from ttc_jax.config import settings as config_settings
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.policy import policy_sections
from ttc_jax.prm import data as prm_data
from ttc_jax.prm import evaluate, label_shards, labels
from ttc_jax.prm import train as prm_train
from ttc_jax.search import sweep
from ttc_jax.selection import best_of_n
from ttc_jax.tasks import arith


def labels_sections(cfg) -> dict:
  return dict(policy_sections(cfg), labels=cfg.labels.to_dict())


def value_sections(kind: str):
  """The sections of the `prm` or `orm` stage."""
  return lambda cfg: dict(labels_sections(cfg), **{kind: cfg[kind].to_dict()})


def verifiers_sections(cfg) -> dict:
  return dict(
      labels_sections(cfg),
      eval=cfg.eval.to_dict(),
      prm=cfg.prm.to_dict(),
      orm=cfg.orm.to_dict(),
      verify=cfg.verify.to_dict(),
  )


def search_sections(cfg) -> dict:
  return dict(
      labels_sections(cfg),
      eval=cfg.eval.to_dict(),
      prm=cfg.prm.to_dict(),
      search=config_lib.search_section(cfg.search),
  )


def label_steps(ctx: RunContext) -> dict:
  lb = ctx.cfg.labels
  problems = ctx.problems("train", lb.questions_per_level)
  settings = config_settings.label_settings(lb)
  stats = label_shards.label_dataset(
      ctx.load_policy(),
      ctx.tokenizer,
      problems,
      ctx.path("prm_labels"),
      jax.random.key(lb.seed),
      settings,
      extract_answer=arith.extract_answer,
      equivalent=arith.equivalent,
      check_solution=arith.check_solution,
      mesh=ctx.mesh,
      progress=ctx.progress,
  )
  recs = label_shards.load_labels(ctx.path("prm_labels"))
  return dict(stats, **labels.label_quality(recs), records=len(recs))


def train_value_model(kind: str):
  """The run function of the `prm` or `orm` stage: a value model from the policy."""

  def run(ctx: RunContext) -> dict:
    sec = ctx.cfg[kind]
    policy = ctx.load_policy()
    return prm_train.train_value_model(
        ctx.model_cfg,
        nnx.state(policy),
        ctx.tokenizer,
        label_shards.load_labels(ctx.path("prm_labels")),
        ctx.path(kind),
        config_settings.value_train_settings(sec, kind),
        kind=kind,
        label=sec.get("label", "soft"),
        seed=ctx.cfg.seed,
        mesh=ctx.mesh,
        meta=ctx.meta(value_sections(kind)(ctx.cfg)),
        progress=ctx.progress,
        outcome=(
            labels.outcome_fn(arith.extract_answer, arith.equivalent) if sec.use_rollouts else None
        ),
    )

  return run


def load_value_model(ctx: RunContext, kind: str):
  """The `prm` or `orm` stage's model on the context's mesh."""
  return prm_train.load_value_model(
      ctx.path(kind, "model"),
      ctx.model_cfg,
      ctx.tokenizer,
      kind=kind,
      seed=ctx.cfg.seed,
      mesh=ctx.mesh,
  )


def eval_verifiers(ctx: RunContext) -> dict:
  v, e = ctx.cfg.verify, ctx.cfg.eval
  records = io_utils.read_jsonl(ctx.path("eval", "samples.jsonl"))
  if records and "samples" not in records[0]:
    raise ValueError(
        f"{ctx.path('eval', 'samples.jsonl')} has no sample texts (written by an "
        "older version); run in a new --workdir"
    )
  prompts = [r["prompt"] for r in records for _ in r["samples"]]
  texts = [t for r in records for t in r["samples"]]
  exact = [
      evaluate.exact_step_labels(r["question"], t, arith.check_solution)
      for r in records
      for t in r["samples"]
  ]
  _, held = prm_data.split_records(
      label_shards.load_labels(ctx.path("prm_labels")), ctx.cfg.prm.heldout_fraction
  )
  out: dict[str, Any] = {}
  scores = {}
  for kind in ("prm", "orm"):
    model = load_value_model(ctx, kind)
    t0 = time.perf_counter()
    scores[kind] = evaluate.score_solutions(
        model, ctx.tokenizer, prompts, texts, batch_size=v.score_batch, mesh=ctx.mesh
    )
    dt = time.perf_counter() - t0
    held_scores = evaluate.score_solutions(
        model,
        ctx.tokenizer,
        [r["prompt"] for r in held],
        [r["solution"] for r in held],
        batch_size=v.score_batch,
        mesh=ctx.mesh,
    )
    thr = evaluate.calibrate_threshold(held_scores, [r["exact"] for r in held])
    fixed = evaluate.verifier_quality(scores[kind], exact, v.threshold)
    out[kind] = dict(
        evaluate.verifier_quality(scores[kind], exact, thr),
        scoring_seconds=dt,
        first_error_accuracy_fixed=fixed["first_error_accuracy"],
        fixed_threshold=v.threshold,
    )
  ns = tuple(e.majority_ns)
  curves = best_of_n.selection_curves(records, scores, ns, arith.equivalent, v.aggregation)
  by_level = {
      k: best_of_n.selection_curves(
          [r for r in records if r["level"] == k],
          _subset(scores, records, k),
          ns,
          arith.equivalent,
          v.aggregation,
      )
      for k in ctx.levels
      if any(r["level"] == k for r in records)
  }
  top = max(ns)
  out["aggregation"] = {
      agg: best_of_n.selection_curves(
          records, {"prm": scores["prm"]}, (top,), arith.equivalent, agg
      )["prm_best_of_n_weighted"][top]
      for agg in ("last", "min", "prod")
  }
  out["curves"] = curves
  out["curves_by_level"] = by_level
  io_utils.atomic_write_jsonl(
      ctx.path("verifiers", "scores.jsonl"),
      [
          dict(
              question=r["question"],
              prm=scores["prm"][i : i + len(r["samples"])],
              orm=scores["orm"][i : i + len(r["samples"])],
          )
          for r, i in zip(records, np.cumsum([0] + [len(r["samples"]) for r in records]))
      ],
  )
  io_utils.atomic_write_json(ctx.path("verifiers", "eval.json"), out)
  return out


def _subset(scores: dict[str, list], records: list[dict], level: str) -> dict[str, list]:
  """The flat per-sample score lists restricted to one level's questions."""
  out: dict[str, list] = {k: [] for k in scores}
  pos = 0
  for r in records:
    n = len(r["samples"])
    if r["level"] == level:
      for k in scores:
        out[k] += scores[k][pos : pos + n]
    pos += n
  return out


def eval_search(ctx: RunContext) -> dict:
  """Beam, lookahead and DVTS over the `cfg.search` budgets, with the best-of-N baselines
  from the eval_policy samples and their PRM scores."""
  sc, e = ctx.cfg.search, ctx.cfg.eval
  chosen = ctx.test_problems(sc)
  policy, prm = ctx.load_policy(), ctx.load_prm()
  records, out = sweep.evaluate_search(
      policy,
      prm,
      ctx.tokenizer,
      chosen,
      config_settings.search_settings(sc),
      ctx.levels,
      io_utils.read_jsonl(ctx.path("eval", "samples.jsonl")),
      io_utils.read_jsonl(ctx.path("verifiers", "scores.jsonl")),
      num_samples=e.num_samples,
      aggregation=ctx.cfg.verify.aggregation,
      extract_answer=ctx.extract_answer,
      equivalent=ctx.equivalent,
      mesh=ctx.mesh,
  )
  io_utils.atomic_write_jsonl(ctx.path("search", "results.jsonl"), records)
  io_utils.atomic_write_json(ctx.path("search", "eval.json"), out)
  return out
