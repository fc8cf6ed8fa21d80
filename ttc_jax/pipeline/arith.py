"""The main job on the embedded arithmetic task: its stages and the `Pipeline` facade.

  <workdir>/config.json              the resolved config
  <workdir>/tfds/                    stage `data`: the arith TFDS dataset (array_record)
  <workdir>/policy/                  stage `policy`: checkpoints/, model/, metrics.jsonl
  <workdir>/eval/                    stage `eval_policy`: policy_eval.json, samples.jsonl
  <workdir>/prm_labels/              stage `prm_labels`: labels-*.array_record (+ .json stats)
  <workdir>/prm/, <workdir>/orm/     stages `prm`, `orm`: checkpoints/, best/, model/, metrics.jsonl
  <workdir>/verifiers/               stage `eval_verifiers`: eval.json, scores.jsonl
  <workdir>/search/                  stage `eval_search`: eval.json, results.jsonl
  <workdir>/prm_<source>/, verifier_ablation/  stage `verifier_ablation` (verify.ablation:
                                     PRMs on other step labels; pipeline/ablation.py)
  <workdir>/revision_*/              revision stages (ttc_jax/pipeline/revision*.py)
  <workdir>/large_*/, compute_optimal/  the compute-optimal study (pipeline/compute_optimal.py)
  <workdir>/stages/<name>.json       a finished stage: config hash, wall seconds, outputs
  <workdir>/report.json, report.md, plots/*.png

A stage whose marker exists with the same config hash is skipped; one with a
different hash stops the run with an error naming the stage and directory
(use a new --workdir): finished work is never silently mixed with a new
config. An interrupted `policy` stage resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import time

import ml_collections

from ttc_jax import config as config_lib
from ttc_jax import io_utils, report
from ttc_jax.models.config import ModelConfig
from ttc_jax.pipeline import ablation, compute_optimal, policy, revision, revision_data, verifiers
from ttc_jax.pipeline.arith_context import make_context
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.stage import Stage, StagedRun, by_name


def _data(ctx: RunContext) -> dict:
  b = ctx.builder()
  return dict(
      data_dir=os.fspath(b.data_dir),
      num_train=int(b.info.splits["train"].num_examples),
      num_test=int(b.info.splits["test"].num_examples),
  )


def _rev(*parts):
  return revision.revision_sections(*parts)


STAGES: tuple[Stage, ...] = (
    Stage("data", lambda c: dict(task=c.task.to_dict()), _data, (), ("tfds",)),
    Stage(
        "policy",
        policy.policy_sections,
        lambda ctx: policy.train_lm(ctx, ctx.model_cfg, "policy", policy.policy_sections(ctx.cfg)),
        ("data",),
        ("policy",),
    ),
    Stage(
        "eval_policy",
        lambda c: dict(policy.policy_sections(c), eval=c.eval.to_dict()),
        policy.eval_policy,
        ("policy",),
        ("eval",),
    ),
    Stage(
        "prm_labels", verifiers.labels_sections, verifiers.label_steps, ("policy",), ("prm_labels",)
    ),
    Stage(
        "prm",
        verifiers.value_sections("prm"),
        verifiers.train_value_model("prm"),
        ("prm_labels",),
        ("prm",),
    ),
    Stage(
        "orm",
        verifiers.value_sections("orm"),
        verifiers.train_value_model("orm"),
        ("prm_labels",),
        ("orm",),
    ),
    Stage(
        "eval_verifiers",
        verifiers.verifiers_sections,
        verifiers.eval_verifiers,
        ("eval_policy", "prm", "orm"),
        ("verifiers",),
    ),
    Stage(
        "eval_search",
        verifiers.search_sections,
        verifiers.eval_search,
        ("eval_verifiers",),
        ("search",),
    ),
    Stage(
        "verifier_ablation",
        ablation.ablation_sections,
        ablation.verifier_ablation,
        ("eval_verifiers", "eval_search"),
        ("verifier_ablation",),
    ),
    Stage("revision_data", _rev(), revision_data.revision_data, ("policy",), ("revision_data",)),
    Stage(
        "revision_sft",
        _rev("sft"),
        revision_data.revision_sft,
        ("revision_data",),
        ("revision_sft",),
    ),
    Stage(
        "revision_chains",
        _rev("sft", "chains"),
        revision.revision_chains,
        ("revision_sft",),
        ("revision_chains",),
    ),
    Stage(
        "revision_orm",
        _rev("sft", "chains", "orm"),
        revision.revision_orm,
        ("revision_chains",),
        ("revision_orm",),
    ),
    Stage(
        "revision_rl",
        _rev("sft", "chains", "rl"),
        revision.revision_rl,
        ("revision_chains",),
        ("revision_rl",),
    ),
    Stage(
        "eval_revision",
        _rev("sft", "chains", "orm", "rl", "eval"),
        revision.eval_revision,
        ("revision_orm", "revision_rl"),
        ("revision_eval",),
    ),
    Stage(
        "large_policy",
        compute_optimal.large_sections,
        lambda ctx: policy.train_lm(
            ctx,
            compute_optimal.large_cfg(ctx.cfg),
            "large_policy",
            compute_optimal.large_sections(ctx.cfg),
        ),
        ("data",),
        ("large_policy",),
    ),
    Stage(
        "eval_large",
        lambda c: dict(compute_optimal.large_sections(c), eval=c.eval.to_dict()),
        policy.eval_large,
        ("large_policy",),
        ("large_eval",),
    ),
    Stage(
        "compute_optimal",
        compute_optimal.analysis_sections,
        compute_optimal.analysis,
        ("eval_search", "eval_revision", "eval_large"),
        ("compute_optimal",),
    ),
)
STAGE = by_name(STAGES)


class Pipeline(StagedRun):
  """Runs `STAGES` for `cfg` in `workdir`; see the module docstring. The `stage_*`
  methods run one stage each (skipped when done with the same config hash)."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str, progress: bool = True):
    config_lib.validate(cfg)
    self.cfg, self.progress = cfg, progress
    self.ctx = make_context(cfg, workdir, progress)
    self.tokenizer, self.model_cfg, self.mesh = (
        self.ctx.tokenizer,
        self.ctx.model_cfg,
        self.ctx.mesh,
    )
    self.levels = self.ctx.levels
    self._init_run(workdir)

  # --- stages -----------------------------------------------------------------------

  def stage_data(self) -> dict:
    return self._run(STAGE["data"])

  def stage_policy(self) -> dict:
    return self._run(STAGE["policy"])

  def stage_eval_policy(self) -> dict:
    return self._run(STAGE["eval_policy"])

  def stage_prm_labels(self) -> dict:
    return self._run(STAGE["prm_labels"])

  def _value_stage(self, kind: str) -> dict:
    return self._run(STAGE[kind])

  def stage_eval_verifiers(self) -> dict:
    return self._run(STAGE["eval_verifiers"])

  def stage_eval_search(self) -> dict:
    return self._run(STAGE["eval_search"])

  def stage_verifier_ablation(self) -> dict:
    return self._run(STAGE["verifier_ablation"])

  def stage_revision_data(self) -> dict:
    return self._run(STAGE["revision_data"])

  def stage_revision_sft(self) -> dict:
    return self._run(STAGE["revision_sft"])

  def stage_revision_chains(self) -> dict:
    return self._run(STAGE["revision_chains"])

  def stage_revision_orm(self) -> dict:
    return self._run(STAGE["revision_orm"])

  def stage_revision_rl(self) -> dict:
    return self._run(STAGE["revision_rl"])

  def stage_eval_revision(self) -> dict:
    return self._run(STAGE["eval_revision"])

  def stage_large_policy(self) -> dict:
    return self._run(STAGE["large_policy"])

  def stage_eval_large(self) -> dict:
    return self._run(STAGE["eval_large"])

  def stage_compute_optimal(self) -> dict:
    return self._run(STAGE["compute_optimal"])

  # --- what tests, benchmarks and diagnostics use -----------------------------------

  def builder(self):
    return self.ctx.builder()

  def problems(self, split: str, per_level: int, skip: int = 0) -> list[dict]:
    """Questions `skip .. skip + per_level - 1` of each level of `split`, easiest level first."""
    return self.ctx.problems(split, per_level, skip)

  def load_policy(self):
    """The trained policy model, restored onto this run's mesh."""
    return self.ctx.load_policy()

  def load_lm(self, directory: str, model_cfg: ModelConfig):
    """A language model saved (model state only) in `directory`, on this run's mesh;
    the checkpoint's tokenizer must be this run's."""
    return self.ctx.load_lm(directory, model_cfg)

  def load_revision(self, which: str = "sft"):
    return revision.load_revision(self.ctx, which)

  def load_prm(self):
    """The trained PRM, restored onto this run's mesh."""
    return self.ctx.load_prm()

  @property
  def question_position(self) -> str:
    return revision.question_position(self.cfg)

  @property
  def revision_cfg(self) -> ModelConfig:
    return revision.revision_cfg(self.cfg)

  @property
  def large_cfg(self) -> ModelConfig:
    return compute_optimal.large_cfg(self.cfg)

  def _sft_replay(self, num_trajectories: int, trajectories: list[dict] = ()) -> list[dict]:
    return revision_data.sft_replay(self.ctx, num_trajectories, trajectories)

  def _trajectories(self) -> list[dict]:
    return revision_data.read_trajectories(self.ctx)

  def compute_optimal_policy(self, measure: str = "predicted", family: str = "search"):
    """A ComputeOptimalPolicy from this run's models and analysis (after the stages);
    see `pipeline.compute_optimal.compute_optimal_policy`."""
    return compute_optimal.compute_optimal_policy(self.ctx, measure, family)

  # --- everything -------------------------------------------------------------------

  def run(self) -> dict:
    t0 = time.perf_counter()
    data = self.stage_data()
    pol = self.stage_policy()
    ev = self.stage_eval_policy()
    verifiers_out = search = None
    if "labels" in self.cfg:
      verifiers_out = dict(
          labels=self.stage_prm_labels(),
          prm=self._value_stage("prm"),
          orm=self._value_stage("orm"),
          eval=self.stage_eval_verifiers(),
      )
    search = self.stage_eval_search() if "search" in self.cfg else None
    ablated = None
    if verifiers_out is not None and config_lib.ablation_sources(self.cfg):
      ablated = self.stage_verifier_ablation()
    rev = None
    if "revision" in self.cfg:
      rev = dict(
          data=self.stage_revision_data(),
          sft=self.stage_revision_sft(),
          chains=self.stage_revision_chains(),
          orm=self.stage_revision_orm(),
          rl=self.stage_revision_rl(),
          eval=self.stage_eval_revision(),
      )
    optimal = None
    if "compute_optimal" in self.cfg:
      optimal = dict(
          large=self.stage_large_policy(),
          large_eval=self.stage_eval_large(),
          analysis=self.stage_compute_optimal(),
      )
    rep = report.build_report(
        self.cfg,
        self.levels,
        data,
        pol,
        ev,
        dict(self.wall),
        time.perf_counter() - t0,
        verifiers=verifiers_out,
        search=search,
        revision=rev,
        compute_optimal=optimal,
        verifier_ablation=ablated,
    )
    io_utils.atomic_write_json(self.path("config.json"), self.cfg.to_dict())
    report.write_report(self.workdir, rep)
    return rep
