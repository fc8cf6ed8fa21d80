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

import os
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


def _value_section(cfg, kind: str) -> dict:
  return config_lib.prm_section(cfg.prm) if kind == "prm" else cfg[kind].to_dict()


def value_sections(kind: str):
  """The sections of the `prm` or `orm` stage."""
  return lambda cfg: dict(labels_sections(cfg), **{kind: _value_section(cfg, kind)})


def verifiers_sections(cfg) -> dict:
  return dict(
      labels_sections(cfg),
      eval=cfg.eval.to_dict(),
      prm=config_lib.prm_section(cfg.prm),
      orm=cfg.orm.to_dict(),
      verify=config_lib.verify_section(cfg.verify),
  )


def search_sections(cfg) -> dict:
  return dict(
      labels_sections(cfg),
      eval=cfg.eval.to_dict(),
      prm=config_lib.prm_section(cfg.prm),
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
    label = config_lib.record_label(sec) if kind == "prm" else sec.get("label", "soft")
    return fit_value_model(ctx, kind, label, ctx.path(kind), value_sections(kind)(ctx.cfg))

  return run


def fit_value_model(ctx: RunContext, kind: str, label: str, out_dir: str, sections: dict) -> dict:
  """A `kind` value model trained on the labelled records' `label` targets into `out_dir`,
  with the `cfg[kind]` schedule and the run's seed (the `prm`/`orm` stages and the PRMs of
  the verifier ablation, which differ only in `label`)."""
  sec = ctx.cfg[kind]
  return prm_train.train_value_model(
      ctx.model_cfg,
      nnx.state(ctx.load_policy()),
      ctx.tokenizer,
      label_shards.load_labels(ctx.path("prm_labels")),
      out_dir,
      config_settings.value_train_settings(sec, kind),
      kind=kind,
      label=label,
      seed=ctx.cfg.seed,
      mesh=ctx.mesh,
      meta=ctx.meta(sections),
      progress=ctx.progress,
      outcome=(
          labels.outcome_fn(arith.extract_answer, arith.equivalent) if sec.use_rollouts else None
      ),
  )


def load_value_model(ctx: RunContext, kind: str, directory: str | None = None):
  """The `prm` or `orm` stage's model (or the one in `directory`) on the context's mesh."""
  return prm_train.load_value_model(
      os.path.join(directory or ctx.path(kind), "model"),
      ctx.model_cfg,
      ctx.tokenizer,
      kind=kind,
      seed=ctx.cfg.seed,
      mesh=ctx.mesh,
  )


def eval_inputs(ctx: RunContext) -> dict:
  """What every verifier is evaluated on: the eval_policy sample records, their flat prompts,
  texts and exact step labels (the task's checker), and the held-out labelled records (for
  the verifier's threshold)."""
  records = io_utils.read_jsonl(ctx.path("eval", "samples.jsonl"))
  if records and "samples" not in records[0]:
    raise ValueError(
        f"{ctx.path('eval', 'samples.jsonl')} has no sample texts (written by an "
        "older version); run in a new --workdir"
    )
  _, held = prm_data.split_records(
      label_shards.load_labels(ctx.path("prm_labels")), ctx.cfg.prm.heldout_fraction
  )
  return dict(
      records=records,
      prompts=[r["prompt"] for r in records for _ in r["samples"]],
      texts=[t for r in records for t in r["samples"]],
      exact=[
          evaluate.exact_step_labels(r["question"], t, arith.check_solution)
          for r in records
          for t in r["samples"]
      ],
      held=held,
  )


def evaluate_verifier(ctx: RunContext, model, inputs: dict) -> tuple[dict, list]:
  """(quality, per-sample step scores) of one value model on `eval_inputs`: step AUROC and
  first-error accuracy at the threshold calibrated on the held-out labelled records, and
  first-error accuracy at the fixed `verify.threshold`."""
  v = ctx.cfg.verify
  t0 = time.perf_counter()
  scores = evaluate.score_solutions(
      model,
      ctx.tokenizer,
      inputs["prompts"],
      inputs["texts"],
      batch_size=v.score_batch,
      mesh=ctx.mesh,
  )
  dt = time.perf_counter() - t0
  held = inputs["held"]
  held_scores = evaluate.score_solutions(
      model,
      ctx.tokenizer,
      [r["prompt"] for r in held],
      [r["solution"] for r in held],
      batch_size=v.score_batch,
      mesh=ctx.mesh,
  )
  thr = evaluate.calibrate_threshold(held_scores, [r["exact"] for r in held])
  fixed = evaluate.verifier_quality(scores, inputs["exact"], v.threshold)
  quality = dict(
      evaluate.verifier_quality(scores, inputs["exact"], thr),
      scoring_seconds=dt,
      first_error_accuracy_fixed=fixed["first_error_accuracy"],
      fixed_threshold=v.threshold,
  )
  return quality, scores


def score_rows(records: list[dict], scores: dict[str, list]) -> list[dict]:
  """scores.jsonl rows: {question, <kind>: [per-sample step scores]} from flat score lists."""
  starts = np.cumsum([0] + [len(r["samples"]) for r in records])
  return [
      dict(question=r["question"], **{k: v[i : i + len(r["samples"])] for k, v in scores.items()})
      for r, i in zip(records, starts)
  ]


def eval_verifiers(ctx: RunContext) -> dict:
  v, e = ctx.cfg.verify, ctx.cfg.eval
  inputs = eval_inputs(ctx)
  records = inputs["records"]
  out: dict[str, Any] = {}
  scores = {}
  for kind in ("prm", "orm"):
    out[kind], scores[kind] = evaluate_verifier(ctx, load_value_model(ctx, kind), inputs)
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
  io_utils.atomic_write_jsonl(ctx.path("verifiers", "scores.jsonl"), score_rows(records, scores))
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
  records, out = search_sweep(
      ctx, ctx.load_prm(), io_utils.read_jsonl(ctx.path("verifiers", "scores.jsonl"))
  )
  io_utils.atomic_write_jsonl(ctx.path("search", "results.jsonl"), records)
  io_utils.atomic_write_json(ctx.path("search", "eval.json"), out)
  return out


def search_sweep(ctx: RunContext, prm, scores: list[dict]) -> tuple[list[dict], dict]:
  """The `cfg.search` sweep (questions, settings, RNG streams) guided by `prm`, with the
  best-of-N baselines from the eval_policy samples and their `scores` rows (key "prm")."""
  sc, e = ctx.cfg.search, ctx.cfg.eval
  return sweep.evaluate_search(
      ctx.load_policy(),
      prm,
      ctx.tokenizer,
      ctx.test_problems(sc),
      config_settings.search_settings(sc),
      ctx.levels,
      io_utils.read_jsonl(ctx.path("eval", "samples.jsonl")),
      scores,
      num_samples=e.num_samples,
      aggregation=ctx.cfg.verify.aggregation,
      extract_answer=ctx.extract_answer,
      equivalent=ctx.equivalent,
      mesh=ctx.mesh,
  )
