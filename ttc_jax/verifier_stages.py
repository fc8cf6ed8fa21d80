"""Pipeline stages after the policy: PRM/ORM labels and training, verifier and search evaluation.

A mixin of `ttc_jax.pipeline.Pipeline` (it uses the pipeline's `cfg`, `path`,
`_stage`, `builder`, `load_policy`, `tokenizer`, `model_cfg`, `mesh`,
`levels`): each `stage_*` method is one resumable stage with its own config
sections (see the pipeline module docstring for the run directory layout).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from ttc_jax import config as config_lib
from ttc_jax import io_utils
from ttc_jax.tasks import arith


class VerifierStages:
  """prm_labels, prm, orm, eval_verifiers and eval_search."""

  # --- verifiers: Monte Carlo step labels, PRM, ORM, best-of-N ------------------

  def _labels_sections(self) -> dict:
    return dict(self._policy_sections(), labels=self.cfg.labels.to_dict())

  def stage_prm_labels(self) -> dict:
    return self._stage("prm_labels", self._labels_sections(), self._label_steps)

  def _label_steps(self) -> dict:
    from ttc_jax.prm import labels
    lb = self.cfg.labels
    problems = self.problems("train", lb.questions_per_level)
    settings = labels.LabelSettings(
        samples_per_question=lb.samples_per_question, rollouts=lb.rollouts,
        temperature=lb.temperature, top_k=lb.top_k, top_p=lb.top_p,
        max_new_tokens=lb.max_new_tokens, max_batch=lb.max_batch,
        shard_questions=lb.shard_questions, keep_rollouts=lb.keep_rollouts)
    stats = labels.label_dataset(
        self.load_policy(), self.tokenizer, problems, self.path("prm_labels"),
        jax.random.key(lb.seed), settings, extract_answer=arith.extract_answer,
        equivalent=arith.equivalent, check_solution=arith.check_solution, mesh=self.mesh,
        progress=self.progress)
    recs = labels.load_labels(self.path("prm_labels"))
    return dict(stats, **labels.label_quality(recs), records=len(recs))

  def _value_stage(self, kind: str) -> dict:
    sections = dict(self._labels_sections(), **{kind: self.cfg[kind].to_dict()})

    def run():
      from flax import nnx
      from ttc_jax.prm import labels, train as prm_train
      sec = self.cfg[kind]
      policy = self.load_policy()
      return prm_train.train_value_model(
          self.model_cfg, nnx.state(policy), self.tokenizer,
          labels.load_labels(self.path("prm_labels")), self.path(kind), sec, kind=kind,
          label=sec.get("label", "soft"), seed=self.cfg.seed, mesh=self.mesh,
          meta=dict(tokenizer=self.tokenizer.fingerprint(),
                    config_hash=config_lib.config_hash(sections)),
          progress=self.progress,
          outcome=(labels.outcome_fn(arith.extract_answer, arith.equivalent)
                   if sec.use_rollouts else None))
    return self._stage(kind, sections, run)

  def stage_eval_verifiers(self) -> dict:
    c = self.cfg
    sections = dict(self._labels_sections(), eval=c.eval.to_dict(), prm=c.prm.to_dict(),
                    orm=c.orm.to_dict(), verify=c.verify.to_dict())
    return self._stage("eval_verifiers", sections, self._eval_verifiers)

  def _eval_verifiers(self) -> dict:
    from ttc_jax.prm import evaluate, train as prm_train
    v, e = self.cfg.verify, self.cfg.eval
    records = io_utils.read_jsonl(self.path("eval", "samples.jsonl"))
    if records and "samples" not in records[0]:
      raise ValueError(f"{self.path('eval', 'samples.jsonl')} has no sample texts (written by an "
                       "older version); run in a new --workdir")
    prompts = [r["prompt"] for r in records for _ in r["samples"]]
    texts = [t for r in records for t in r["samples"]]
    exact = [evaluate.exact_step_labels(r["question"], t, arith.check_solution)
             for r in records for t in r["samples"]]
    from ttc_jax.prm import data as prm_data, labels
    _, held = prm_data.split_records(labels.load_labels(self.path("prm_labels")),
                                     self.cfg.prm.heldout_fraction)
    out: dict[str, Any] = {}
    scores = {}
    for kind in ("prm", "orm"):
      model = prm_train.load_value_model(self.path(kind, "model"), self.model_cfg,
                                         self.tokenizer, kind=kind, seed=self.cfg.seed,
                                         mesh=self.mesh)
      t0 = time.perf_counter()
      scores[kind] = evaluate.score_solutions(model, self.tokenizer, prompts, texts,
                                              batch_size=v.score_batch, mesh=self.mesh)
      dt = time.perf_counter() - t0
      held_scores = evaluate.score_solutions(
          model, self.tokenizer, [r["prompt"] for r in held], [r["solution"] for r in held],
          batch_size=v.score_batch, mesh=self.mesh)
      thr = evaluate.calibrate_threshold(held_scores, [r["exact"] for r in held])
      fixed = evaluate.verifier_quality(scores[kind], exact, v.threshold)
      out[kind] = dict(evaluate.verifier_quality(scores[kind], exact, thr),
                       scoring_seconds=dt, first_error_accuracy_fixed=fixed["first_error_accuracy"],
                       fixed_threshold=v.threshold)
    ns = tuple(e.majority_ns)
    curves = evaluate.selection_curves(records, scores, ns, arith.equivalent, v.aggregation)
    by_level = {k: evaluate.selection_curves([r for r in records if r["level"] == k],
                                             _subset(scores, records, k), ns,
                                             arith.equivalent, v.aggregation)
                for k in self.levels if any(r["level"] == k for r in records)}
    top = max(ns)
    out["aggregation"] = {
        agg: evaluate.selection_curves(records, {"prm": scores["prm"]}, (top,),
                                       arith.equivalent, agg)["prm_best_of_n_weighted"][top]
        for agg in ("last", "min", "prod")}
    out["curves"] = curves
    out["curves_by_level"] = by_level
    io_utils.atomic_write_jsonl(self.path("verifiers", "scores.jsonl"), [
        dict(question=r["question"], prm=scores["prm"][i:i + len(r["samples"])],
             orm=scores["orm"][i:i + len(r["samples"])])
        for r, i in zip(records, np.cumsum([0] + [len(r["samples"]) for r in records]))])
    io_utils.atomic_write_json(self.path("verifiers", "eval.json"), out)
    return out

  # --- search kernels: beam, lookahead, DVTS over generation budgets -------------

  def stage_eval_search(self) -> dict:
    c = self.cfg
    sections = dict(self._labels_sections(), eval=c.eval.to_dict(), prm=c.prm.to_dict(),
                    search=config_lib.search_section(c.search))
    return self._stage("eval_search", sections, self._eval_search)

  def _eval_search(self) -> dict:
    from ttc_jax.prm import train as prm_train
    from ttc_jax.search import sweep
    sc, e = self.cfg.search, self.cfg.eval
    chosen = self.problems("test", sc.questions_per_level)
    policy = self.load_policy()
    prm = prm_train.load_value_model(self.path("prm", "model"), self.model_cfg, self.tokenizer,
                                     kind="prm", seed=self.cfg.seed, mesh=self.mesh)
    records, out = sweep.evaluate_search(
        policy, prm, self.tokenizer, chosen, sc, self.levels,
        io_utils.read_jsonl(self.path("eval", "samples.jsonl")),
        io_utils.read_jsonl(self.path("verifiers", "scores.jsonl")),
        num_samples=e.num_samples, aggregation=self.cfg.verify.aggregation,
        extract_answer=arith.extract_answer, equivalent=arith.equivalent, mesh=self.mesh)
    io_utils.atomic_write_jsonl(self.path("search", "results.jsonl"), records)
    io_utils.atomic_write_json(self.path("search", "eval.json"), out)
    return out


def _subset(scores: dict[str, list], records: list[dict], level: str) -> dict[str, list]:
  """The flat per-sample score lists restricted to one level's questions."""
  out: dict[str, list] = {k: [] for k in scores}
  pos = 0
  for r in records:
    n = len(r["samples"])
    if r["level"] == level:
      for k in scores:
        out[k] += scores[k][pos:pos + n]
    pos += n
  return out
