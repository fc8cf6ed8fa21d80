"""Compute-optimal stages: the larger model (arith) and the analysis (both pipelines).

  <workdir>/large_policy/      stage `large_policy` (arith): a model `compute_optimal.large_model`
                               times the policy's width/depth, trained on the same data
                               for the same tokens (cfg.train; `policy.train_lm`)
  <workdir>/large_eval/        stage `eval_large`: its greedy pass@1 (`policy.eval_large`)
  <workdir>/compute_optimal/   stage `compute_optimal`: analysis.json (difficulty bins,
                               cross-validated choices, curves, FLOPs-matched comparison)

`compute_optimal_policy` builds the deployable policy from a finished arith run.
"""

from __future__ import annotations

from ttc_jax import config as config_lib
from ttc_jax import io_utils
from ttc_jax.compute_optimal import study
from ttc_jax.compute_optimal.policy import ComputeOptimalPolicy, PolicySearchSettings
from ttc_jax.config import settings as config_settings
from ttc_jax.models.config import ModelConfig
from ttc_jax.pipeline import revision
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.policy import policy_sections
from ttc_jax.selection import chains


def large_cfg(cfg) -> ModelConfig:
  """The arith larger model: the policy's config with `compute_optimal.large_model` over it."""
  return ModelConfig.from_dict(
      dict(cfg.model.to_dict(), **cfg.compute_optimal.large_model.to_dict())
  )


def large_sections(cfg) -> dict:
  return dict(
      policy_sections(cfg),
      model=dict(config_lib.model_section(cfg.model), **cfg.compute_optimal.large_model.to_dict()),
  )


def analysis_sections(cfg) -> dict:
  """The arith analysis: everything it reads, from the policy to the revision stages."""
  return dict(
      large_sections(cfg),
      eval=cfg.eval.to_dict(),
      labels=cfg.labels.to_dict(),
      prm=config_lib.prm_section(cfg.prm),
      verify=config_lib.verify_section(cfg.verify),
      search=config_lib.search_section(cfg.search),
      revision=config_lib.revision_section(cfg.revision),
      compute_optimal=cfg.compute_optimal.to_dict(),
  )


def study_settings(cfg, revisions: bool, large: bool) -> study.StudySettings:
  """The study's settings from config sections compute_optimal, verify, eval and (with
  revisions) revision.eval. With a larger model (`large`), D_pretrain is
  compute_optimal.pretrain_tokens when set and nonzero, else cfg.train's tokens."""
  co = cfg.compute_optimal
  pretrain_tokens = None
  if large and co.get("pretrain_tokens"):  # e.g. an imported checkpoint's documented D_pretrain
    pretrain_tokens = float(co.pretrain_tokens)
  elif large:  # both models trained here on cfg.train's tokens
    pretrain_tokens = float(cfg.train.steps) * cfg.train.batch_size * cfg.train.seq_len
  return study.StudySettings(
      num_bins=int(co.num_bins),
      num_folds=int(co.num_folds),
      seed=int(co.seed),
      r_values=tuple(float(r) for r in co.r_values),
      aggregation=cfg.verify.aggregation,
      best_of_n_budgets=tuple(int(n) for n in cfg.eval.majority_ns),
      revision_budgets=(tuple(int(n) for n in cfg.revision.eval.budgets) if revisions else ()),
      pretrain_tokens=pretrain_tokens,
  )


def analysis(ctx: RunContext, revisions: bool = True) -> dict:
  """The study over the run directory's artifacts (`compute_optimal.study.run_study`);
  revisions=False leaves out the revision families (a run without revision stages)."""
  large = ctx.large_cfg()
  out = study.run_study(
      ctx.workdir,
      study_settings(ctx.cfg, revisions, large is not None),
      ctx.model_cfg,
      large,
      ctx.tokenizer,
      equivalent=ctx.equivalent,
      revisions=revisions,
  )
  io_utils.atomic_write_json(ctx.path("compute_optimal", "analysis.json"), out)
  return out


def compute_optimal_policy(
    ctx: RunContext, measure: str = "predicted", family: str = "search"
) -> ComputeOptimalPolicy:
  """A ComputeOptimalPolicy from an arith run's models and analysis (after the stages).

  family: "search" (best-of-N weighted and the search kernels), "revision" or
  "revision_rl" (C x L splits of the SFT / RL revision model, ORM selection).
  Difficulty is always predicted with the policy and the PRM, as in the analysis.
  """
  result = io_utils.read_json(ctx.path("compute_optimal", "analysis.json"))
  prm = ctx.load_prm()
  revise = None
  if family in ("revision", "revision_rl"):
    revise = revise_fn(ctx, "rl" if family == "revision_rl" else "sft")
  sc, e = config_settings.search_settings(ctx.cfg.search), ctx.cfg.eval
  return ComputeOptimalPolicy.from_analysis(
      result,
      ctx.load_policy(),
      prm,
      ctx.tokenizer,
      measure=measure,
      family=family,
      extract_answer=ctx.extract_answer,
      equivalent=ctx.equivalent,
      difficulty_samples=int(e.num_samples),
      temperature=float(e.temperature),
      max_new_tokens=int(e.max_new_tokens),
      aggregation=ctx.cfg.verify.aggregation,
      max_batch=int(e.max_batch),
      mesh=ctx.mesh,
      revise=revise,
      search=PolicySearchSettings(
          max_rounds=sc.max_rounds,
          max_step_tokens=sc.max_step_tokens,
          max_new_tokens=sc.max_new_tokens,
          temperature=sc.temperature,
          compact_levels=sc.compact_levels,
      ),
  )


def revise_fn(ctx: RunContext, which: str):
  """(problems, C, L, rng) -> answers: C chains of L attempts, hierarchical ORM selection."""
  ev = ctx.cfg.revision.eval
  model = revision.load_revision(ctx, which)
  orm = revision.load_revision_orm(ctx)

  def revise(problems, c: int, l: int, rng):
    recs, _ = revision.run_chains(ctx, model, list(problems), [l] * c, rng, ev.temperature)
    revision.score_chains(ctx, orm, recs, ev.score_batch)
    return [chains.select("orm", r["answers"], r["scores"], ctx.equivalent) for r in recs]

  return revise
