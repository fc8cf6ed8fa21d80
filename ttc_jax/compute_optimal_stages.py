"""Pipeline stages of the compute-optimal study (mixed into pipeline.Pipeline).

  <workdir>/large_policy/      stage `large_policy`: a model `compute_optimal.large_model`
                               times the policy's width/depth, trained on the same data
                               for the same tokens (cfg.train)
  <workdir>/large_eval/        stage `eval_large`: its greedy pass@1 per held-out question
  <workdir>/compute_optimal/   stage `compute_optimal`: analysis.json (difficulty bins,
                               cross-validated choices, curves, FLOPs-matched comparison)
"""

from __future__ import annotations

import jax
import numpy as np

from ttc_jax import config as config_lib
from ttc_jax import evaluation, io_utils
from ttc_jax.models.config import ModelConfig
from ttc_jax.tasks import arith


class ComputeOptimalStages:
  """large_policy, eval_large, compute_optimal."""

  @property
  def large_cfg(self) -> ModelConfig:
    return ModelConfig.from_dict(dict(self.cfg.model.to_dict(),
                                      **self.cfg.compute_optimal.large_model.to_dict()))

  def _large_sections(self) -> dict:
    return dict(self._policy_sections(),
                model=dict(self.cfg.model.to_dict(),
                           **self.cfg.compute_optimal.large_model.to_dict()))

  def stage_large_policy(self) -> dict:
    sections = self._large_sections()
    return self._stage("large_policy", sections,
                       lambda: self._train_lm(self.large_cfg, "large_policy", sections))

  def stage_eval_large(self) -> dict:
    sections = dict(self._large_sections(), eval=self.cfg.eval.to_dict())

    def run():
      e = self.cfg.eval
      model = self.load_lm(self.path("large_policy", "model"), self.large_cfg)
      chosen = self.problems("test", e.questions_per_level)
      texts, stats = evaluation.sample_texts(
          model, self.tokenizer, [p["prompt"] for p in chosen], jax.random.key(self.cfg.seed),
          num_samples=1, max_new_tokens=e.max_new_tokens, temperature=0.0,
          max_batch=e.max_batch, mesh=self.mesh, progress=self.progress, desc="large greedy")
      recs = [dict(question=p["question"], level=p["level"], answer=str(p["answer"]),
                   greedy=t[0], greedy_answer=arith.extract_answer(t[0]),
                   greedy_correct=bool(arith.equivalent(arith.extract_answer(t[0]),
                                                        str(p["answer"]))))
              for p, t in zip(chosen, texts)]
      io_utils.atomic_write_jsonl(self.path("large_eval", "greedy.jsonl"), recs)
      by_level = {lv: float(np.mean([r["greedy_correct"] for r in recs if r["level"] == lv]))
                  for lv in self.levels if any(r["level"] == lv for r in recs)}
      return dict(pass_at_1=float(np.mean([r["greedy_correct"] for r in recs])),
                  pass_at_1_by_level=by_level, num_params=self.large_cfg.num_params,
                  sampling=stats)
    return self._stage("eval_large", sections, run)

  def stage_compute_optimal(self) -> dict:
    c = self.cfg
    sections = dict(self._large_sections(), eval=c.eval.to_dict(), labels=c.labels.to_dict(),
                    prm=c.prm.to_dict(), verify=c.verify.to_dict(),
                    search=config_lib.search_section(c.search),
                    revision=config_lib.revision_section(c.revision),
                    compute_optimal=c.compute_optimal.to_dict())
    return self._stage("compute_optimal", sections, self._compute_optimal)

  def _compute_optimal(self) -> dict:
    from ttc_jax.compute_optimal import study
    out = study.run_study(self.workdir, self.cfg, self.model_cfg, self.large_cfg,
                          self.tokenizer)
    io_utils.atomic_write_json(self.path("compute_optimal", "analysis.json"), out)
    return out

  def compute_optimal_policy(self, measure: str = "predicted", family: str = "search"):
    """A ComputeOptimalPolicy from this run's models and analysis (after the stages).

    family: "search" (best-of-N weighted and the search kernels), "revision" or
    "revision_rl" (C x L splits of the SFT / RL revision model, ORM selection).
    Difficulty is always predicted with the policy and the PRM, as in the analysis.
    """
    from ttc_jax.compute_optimal.policy import ComputeOptimalPolicy
    from ttc_jax.prm import train as prm_train
    analysis = io_utils.read_json(self.path("compute_optimal", "analysis.json"))
    prm = prm_train.load_value_model(self.path("prm", "model"), self.model_cfg, self.tokenizer,
                                     kind="prm", seed=self.cfg.seed, mesh=self.mesh)
    revise = None
    if family in ("revision", "revision_rl"):
      revise = self._revise_fn("rl" if family == "revision_rl" else "sft")
    sc, e = self.cfg.search, self.cfg.eval
    return ComputeOptimalPolicy.from_analysis(
        analysis, self.load_policy(), prm, self.tokenizer, measure=measure, family=family,
        extract_answer=arith.extract_answer, equivalent=arith.equivalent,
        difficulty_samples=int(e.num_samples), temperature=float(e.temperature),
        max_new_tokens=int(e.max_new_tokens), aggregation=self.cfg.verify.aggregation,
        max_batch=int(e.max_batch), mesh=self.mesh, revise=revise,
        search=dict(max_rounds=sc.max_rounds, max_step_tokens=sc.max_step_tokens,
                    max_new_tokens=sc.max_new_tokens, temperature=sc.temperature,
                    **{k: sc[k] for k in ("compact_levels",) if k in sc}))

  def _revise_fn(self, which: str):
    """(problems, C, L, rng) -> answers: C chains of L attempts, hierarchical ORM selection."""
    from ttc_jax.prm import train as prm_train
    from ttc_jax.revision import evaluate as revision_eval
    ev = self.cfg.revision.eval
    model = self.load_revision(which)
    orm = prm_train.load_value_model(self.path("revision_orm", "model"), self.revision_cfg,
                                     self.tokenizer, kind="orm", seed=self.cfg.seed,
                                     mesh=self.mesh)

    def revise(problems, c: int, l: int, rng):
      recs, _ = self._run_chains(model, list(problems), [l] * c, rng, ev.temperature)
      self._score_chains(orm, recs, ev.score_batch)
      return [revision_eval.select("orm", r["answers"], r["scores"], arith.equivalent)
              for r in recs]
    return revise
