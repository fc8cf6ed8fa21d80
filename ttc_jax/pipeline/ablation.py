"""The verifier ablation (stage `verifier_ablation`, arith): the same study with PRMs trained on
other step labels.

For each label source of `verify.ablation` other than the main PRM's (config/labels.py:
monte_carlo, monte_carlo_hard, exact), a PRM is trained on the same labelled records with the
same `prm` schedule and seed (only the targets differ), evaluated on the same eval_policy samples
exactly like the main PRM (`verifiers.evaluate_verifier`), drives the same search sweep
(`verifiers.search_sweep`: questions, settings, RNG streams), and goes through the same
compute-optimal search-family analysis (`compute_optimal.study.search_study`: oracle bins from
the policy samples, predicted bins from its own scores). The main PRM's figures come from the
verifiers/ and search/ outputs; its search-family analysis is recomputed here by the same
function on the same questions as the others, so every source is compared on one footing.

  <workdir>/prm_<source>/                      checkpoints/, best/, model/, metrics.jsonl
  <workdir>/verifier_ablation/<source>/        eval.json, scores.jsonl, results.jsonl,
                                               analysis.json (the main source: analysis.json)
  <workdir>/verifier_ablation/<source>/done.json  a finished source (with the stage's hash):
                                               an interrupted stage resumes after it

The stage's outputs: {"main": <source>, "sources": {<source>: dict(eval, train, search,
analysis)}} for every source including the main one (report/ablation.py shapes them).
"""

from __future__ import annotations

import os

from ttc_jax import config as config_lib
from ttc_jax import io_utils
from ttc_jax.compute_optimal import study, tables
from ttc_jax.pipeline import compute_optimal as co_stage
from ttc_jax.pipeline import verifiers
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.stage import StageMismatchError

EVAL_KEYS = ("step_auroc", "first_error_accuracy", "first_error_accuracy_fixed", "threshold")


def ablation_sections(cfg) -> dict:
  """Everything the ablation reads: the verifier sections, search, compute_optimal, and the
  ablation's sources."""
  out = dict(verifiers.verifiers_sections(cfg), ablation=list(config_lib.ablation_sources(cfg)))
  if "search" in cfg:
    out["search"] = config_lib.search_section(cfg.search)
  if "compute_optimal" in cfg:
    out["compute_optimal"] = cfg.compute_optimal.to_dict()
  return out


def prm_sections(cfg, source: str) -> dict:
  """The sections an ablation PRM is trained from (its checkpoint metadata's hash): the `prm`
  stage's, with the source's labels."""
  prm = dict(config_lib.prm_section(cfg.prm), label=config_lib.LABEL_SOURCES[source])
  return dict(verifiers.labels_sections(cfg), prm=prm)


def _summary(quality: dict, search: dict | None) -> dict:
  out = dict(eval={k: quality.get(k) for k in EVAL_KEYS})
  if search is not None:
    out["search"] = dict(
        curves=search["curves"], baselines=search["baselines"], questions=search["questions"]
    )
  return out


def _source(ctx: RunContext, source: str, inputs: dict, digest: str) -> dict:
  """Trains, evaluates and searches with the PRM of one ablation source (or reads it back when
  done before with the same stage hash)."""
  d = ctx.path("verifier_ablation", source)
  done = os.path.join(d, "done.json")
  if os.path.exists(done):
    rec = io_utils.read_json(done)
    if rec.get("hash") != digest:
      raise StageMismatchError(
          f"{done} was written by another config (hash {rec.get('hash')} != {digest}); use a "
          f"new --workdir or delete {d} and {ctx.path(f'prm_{source}')}"
      )
    print(f"[verifier_ablation] {source}: done before; skipped")
    return rec["summary"]
  prm_dir = ctx.path(f"prm_{source}")
  train = verifiers.fit_value_model(
      ctx, "prm", config_lib.LABEL_SOURCES[source], prm_dir, prm_sections(ctx.cfg, source)
  )
  model = verifiers.load_value_model(ctx, "prm", prm_dir)
  quality, flat = verifiers.evaluate_verifier(ctx, model, inputs)
  rows = verifiers.score_rows(inputs["records"], {"prm": flat})
  io_utils.atomic_write_jsonl(os.path.join(d, "scores.jsonl"), rows)
  io_utils.atomic_write_json(os.path.join(d, "eval.json"), dict(quality, train=train))
  search = None
  if "search" in ctx.cfg:
    results, search = verifiers.search_sweep(ctx, model, rows)
    io_utils.atomic_write_jsonl(os.path.join(d, "results.jsonl"), results)
  summary = dict(
      _summary(quality, search),
      train=dict(
          best_step=train["best_step"],
          best_eval_loss=train["best_eval_loss"],
          train_labels=train["train_labels"],
      ),
  )
  io_utils.atomic_write_json(done, dict(hash=digest, summary=summary))
  return summary


def verifier_ablation(ctx: RunContext) -> dict:
  cfg = ctx.cfg
  main = config_lib.label_source(cfg.prm)
  extra = config_lib.ablation_sources(cfg)
  digest = config_lib.config_hash(ablation_sections(cfg))
  inputs = verifiers.eval_inputs(ctx)
  sources: dict[str, dict] = {}
  main_eval = io_utils.read_json(ctx.path("verifiers", "eval.json"))["prm"]
  main_search = io_utils.read_json(ctx.path("search", "eval.json")) if "search" in cfg else None
  sources[main] = _summary(main_eval, main_search)
  for src in extra:
    sources[src] = _source(ctx, src, inputs, digest)
  if "search" in cfg and "compute_optimal" in cfg:
    for src, a in _analyses(ctx, main, extra).items():
      io_utils.atomic_write_json(ctx.path("verifier_ablation", src, "analysis.json"), a)
      sources[src]["analysis"] = _analysis_summary(a)
  return dict(main=main, sources=sources)


def _analyses(ctx: RunContext, main: str, extra: tuple[str, ...]) -> dict[str, dict]:
  """The search-family analysis of every source's PRM on the questions common to all."""
  samples = io_utils.read_jsonl(ctx.path("eval", "samples.jsonl"))
  scores = {main: io_utils.read_jsonl(ctx.path("verifiers", "scores.jsonl"))}
  results = {main: io_utils.read_jsonl(ctx.path("search", "results.jsonl"))}
  for src in extra:
    scores[src] = io_utils.read_jsonl(ctx.path("verifier_ablation", src, "scores.jsonl"))
    results[src] = io_utils.read_jsonl(ctx.path("verifier_ablation", src, "results.jsonl"))
  common = tables.common_questions(
      *(study.search_questions(samples, scores[src], results[src]) for src in scores)
  )
  settings = co_stage.study_settings(ctx.cfg, revisions=False, large=False)
  return {
      src: study.search_study(
          samples, scores[src], results[src], settings, ctx.equivalent, questions=common
      )
      for src in scores
  }


def _analysis_summary(a: dict) -> dict:
  """What the report needs of a search-family analysis (the rest is in analysis.json)."""
  s = a["search"]
  return dict(
      questions=a["questions"],
      baseline=s["baseline"],
      **{
          m: dict(
              curve=s[m]["curve"],
              efficiency_vs_baseline=s[m]["efficiency_vs_baseline"],
              strategies_by_bin=s[m]["strategies_by_bin"],
              bin_sizes=s[m]["bin_sizes"],
          )
          for m in ("oracle", "predicted")
      },
  )
