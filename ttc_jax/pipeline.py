"""The main job as resumable stages writing artifacts into one run directory.

  <workdir>/config.json              the resolved config
  <workdir>/tfds/                    stage `data`: the arith TFDS dataset (array_record)
  <workdir>/policy/                  stage `policy`: checkpoints/, model/, metrics.jsonl
  <workdir>/eval/                    stage `eval_policy`: policy_eval.json, samples.jsonl
  <workdir>/prm_labels/              stage `prm_labels`: labels-*.array_record (+ .json stats)
  <workdir>/prm/, <workdir>/orm/     stages `prm`, `orm`: checkpoints/, best/, model/, metrics.jsonl
  <workdir>/verifiers/               stage `eval_verifiers`: eval.json, scores.jsonl
  <workdir>/search/                  stage `eval_search`: eval.json, results.jsonl
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
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from ttc_jax import config as config_lib
from ttc_jax import evaluation, io_utils, parallel, report
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import create_model
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer, check_compatible
from ttc_jax.train import loop, optim
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer


class StageMismatchError(RuntimeError):
  """A finished stage in the work directory was produced by another config."""


class Pipeline:
  """Runs the stages for `cfg` in `workdir`; see the module docstring."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str, progress: bool = True):
    config_lib.validate(cfg)
    self.cfg, self.workdir, self.progress = cfg, os.path.abspath(workdir), progress
    self.tokenizer = CharTokenizer()
    self.model_cfg = ModelConfig.from_dict(cfg.model.to_dict())
    check_compatible(self.tokenizer, self.model_cfg.vocab_size)
    self.mesh = parallel.make_mesh(tuple(cfg.mesh.shape))
    self.levels = [lv.name for lv in arith.parse_levels(cfg.task.levels)]
    self.wall: dict[str, float] = {}
    os.makedirs(self.workdir, exist_ok=True)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  # --- stage bookkeeping ----------------------------------------------------

  def _stage(self, name: str, sections: dict, fn: Callable[[], dict]) -> dict:
    """Runs `fn` unless the stage finished before with the same config hash."""
    marker = self.path("stages", f"{name}.json")
    h = config_lib.config_hash(sections)
    if os.path.exists(marker):
      done = io_utils.read_json(marker)
      if done.get("hash") == h:
        self.wall[name] = done.get("wall_seconds", 0.0)
        print(f"[{name}] done before ({done.get('wall_seconds', 0):.1f}s); skipped")
        return done["outputs"]
      raise StageMismatchError(
          f"stage {name!r} in {self.workdir} was run with another config "
          f"(hash {done.get('hash')} != {h}); use a new --workdir or delete {marker}")
    t0 = time.perf_counter()
    print(f"[{name}] running")
    outputs = fn()
    dt = time.perf_counter() - t0
    self.wall[name] = dt
    io_utils.atomic_write_json(marker, dict(hash=h, wall_seconds=dt, outputs=outputs))
    print(f"[{name}] finished in {dt:.1f}s")
    return outputs

  # --- stages -----------------------------------------------------------------

  def data_spec(self) -> dict:
    t = self.cfg.task
    return dict(levels=t.levels, train_per_level=t.train_per_level,
                test_per_level=t.test_per_level, seed=t.data_seed)

  def builder(self):
    from ttc_jax.data import arith_tfds  # tfds is only needed here
    return arith_tfds.build_arith_dataset(self.path("tfds"), **self.data_spec())

  def stage_data(self) -> dict:
    def run():
      b = self.builder()
      return dict(data_dir=os.fspath(b.data_dir),
                  num_train=int(b.info.splits["train"].num_examples),
                  num_test=int(b.info.splits["test"].num_examples))
    return self._stage("data", dict(task=self.cfg.task.to_dict()), run)

  def _policy_sections(self) -> dict:
    c = self.cfg
    return dict(task=c.task.to_dict(), model=c.model.to_dict(), train=c.train.to_dict(),
                seed=c.seed)

  def stage_policy(self) -> dict:
    return self._stage("policy", self._policy_sections(), self._train_policy)

  def _train_policy(self) -> dict:
    from ttc_jax.data import packing, pipeline as data_pipeline
    c, t = self.cfg, self.cfg.train
    builder = self.builder()
    with parallel.use_mesh(self.mesh):
      model = create_model(self.model_cfg, c.seed, self.mesh)
    tx = optim.make_optimizer(t.lr, t.steps, t.warmup_steps, t.weight_decay, t.clip_norm,
                              t.b1, t.b2, t.final_lr_fraction)
    trainer = Trainer(model, tx, mesh=self.mesh)
    data = data_pipeline.make_train_iterator(
        builder, self.tokenizer, t.batch_size, t.seq_len, seed=c.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    test = data_pipeline.load_test_problems(builder)
    eval_examples = [packing.tokenize_example(self.tokenizer, p["prompt"], p["solution"])
                     for p in test]
    eval_rows = packing.pack_examples(eval_examples, t.seq_len)
    n_rows = min(len(eval_rows["inputs"]) // t.batch_size, t.eval_batches) * t.batch_size
    if n_rows == 0:
      raise ValueError(f"test split has too few examples for one eval batch of {t.batch_size}")
    eval_batches = lambda: ({k: v[i:i + t.batch_size] for k, v in eval_rows.items()}
                            for i in range(0, n_rows, t.batch_size))
    tokens = t.batch_size * t.seq_len
    meta = dict(tokenizer=self.tokenizer.fingerprint(),
                config_hash=config_lib.config_hash(self._policy_sections()))
    ck = Checkpointer(self.path("policy", "checkpoints"), max_to_keep=2)
    last = loop.fit(trainer, data, steps=t.steps, checkpointer=ck,
                    checkpoint_every=t.checkpoint_every, eval_batches=eval_batches,
                    eval_every=t.eval_every, log_every=t.log_every,
                    metrics_path=self.path("policy", "metrics.jsonl"),
                    flops_per_step=self.model_cfg.train_flops_per_token(t.seq_len) * tokens,
                    tokens_per_step=tokens,
                    lr_schedule=optim.make_schedule(t.lr, t.steps, t.warmup_steps,
                                                    t.final_lr_fraction),
                    meta=meta, desc="policy", progress=self.progress)
    ck.close()
    from flax import nnx
    model_ck = Checkpointer(self.path("policy", "model"), max_to_keep=1, async_save=False)
    model_ck.save(t.steps, nnx.state(trainer.model), meta, force=True)
    model_ck.close()
    return dict(final_metrics=last, num_params=self.model_cfg.num_params)

  def load_policy(self):
    """The trained policy model, restored onto this run's mesh."""
    from flax import nnx
    ck = Checkpointer(self.path("policy", "model"), async_save=False)
    with parallel.use_mesh(self.mesh):
      model = create_model(self.model_cfg, self.cfg.seed, self.mesh)
    state, meta = ck.restore(nnx.state(model))
    if meta.get("tokenizer") != self.tokenizer.fingerprint():
      raise ValueError(f"policy checkpoint {ck.directory} was trained with tokenizer "
                       f"{meta.get('tokenizer')}, this run uses {self.tokenizer.fingerprint()}")
    nnx.update(model, state)
    return model

  def stage_eval_policy(self) -> dict:
    sections = dict(self._policy_sections(), eval=self.cfg.eval.to_dict())
    return self._stage("eval_policy", sections, self._eval_policy)

  def _eval_policy(self) -> dict:
    from ttc_jax.data import pipeline as data_pipeline
    e = self.cfg.eval
    model = self.load_policy()
    test = data_pipeline.load_test_problems(self.builder())
    chosen = []
    for name in self.levels:
      chosen += [p for p in test if p["level"] == name][:e.questions_per_level]
    summary, records = evaluation.evaluate_policy(
        model, self.tokenizer, chosen, self.levels, jax.random.key(self.cfg.seed + 1),
        extract_answer=arith.extract_answer, equivalent=arith.equivalent,
        num_samples=e.num_samples, majority_ns=tuple(e.majority_ns),
        max_new_tokens=e.max_new_tokens, temperature=e.temperature, top_k=e.top_k,
        top_p=e.top_p, max_batch=e.max_batch, mesh=self.mesh, progress=self.progress)
    io_utils.atomic_write_jsonl(self.path("eval", "samples.jsonl"), records)
    io_utils.atomic_write_json(self.path("eval", "policy_eval.json"), summary)
    return summary

  # --- verifiers: Monte Carlo step labels, PRM, ORM, best-of-N ------------------

  def _labels_sections(self) -> dict:
    return dict(self._policy_sections(), labels=self.cfg.labels.to_dict())

  def stage_prm_labels(self) -> dict:
    return self._stage("prm_labels", self._labels_sections(), self._label_steps)

  def _label_steps(self) -> dict:
    from ttc_jax.data import arith_tfds
    from ttc_jax.prm import labels
    lb = self.cfg.labels
    src = arith_tfds.load_split(self.builder(), "train")
    per_level: dict[str, list] = {k: [] for k in self.levels}
    for i in range(len(src)):
      q = arith_tfds.decode_record(src[i])
      bucket = per_level.get(q["level"])
      if bucket is not None and len(bucket) < lb.questions_per_level:
        bucket.append(q)
      if all(len(v) >= lb.questions_per_level for v in per_level.values()):
        break
    problems = [q for k in self.levels for q in per_level[k]]
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
                    search=c.search.to_dict())
    return self._stage("eval_search", sections, self._eval_search)

  def _eval_search(self) -> dict:
    from ttc_jax.data import pipeline as data_pipeline
    from ttc_jax.prm import train as prm_train
    from ttc_jax.search import sweep
    sc, e = self.cfg.search, self.cfg.eval
    test = data_pipeline.load_test_problems(self.builder())
    chosen = []
    for name in self.levels:
      chosen += [p for p in test if p["level"] == name][:sc.questions_per_level]
    policy = self.load_policy()
    prm = prm_train.load_value_model(self.path("prm", "model"), self.model_cfg, self.tokenizer,
                                     kind="prm", seed=self.cfg.seed, mesh=self.mesh)
    records, stats = [], {}
    for method in sc.methods:
      for budget in sc.budgets:
        out = sweep.run_method(
            policy, prm, self.tokenizer, chosen, method, int(budget),
            jax.random.fold_in(jax.random.fold_in(jax.random.key(sc.seed),
                                                  sweep.METHODS.index(method)), int(budget)),
            extract_answer=arith.extract_answer, equivalent=arith.equivalent,
            max_rounds=sc.max_rounds, max_step_tokens=sc.max_step_tokens,
            max_new_tokens=sc.max_new_tokens, temperature=sc.temperature, top_k=sc.top_k,
            top_p=sc.top_p, max_beams=sc.max_beams, mesh=self.mesh)
        if out is None:
          print(f"[eval_search] {method} cannot spend a budget of {budget}; skipped")
          continue
        recs, st = out
        records += recs
        stats.setdefault(method, {})[str(budget)] = st
        acc = np.mean([r["correct"] for r in recs])
        print(f"[eval_search] {method} @ {budget}: accuracy {acc:.3f} in {st['seconds']:.1f}s")
    io_utils.atomic_write_jsonl(self.path("search", "results.jsonl"), records)
    curves, by_level = sweep.curves(records, self.levels)
    # Best-of-N baselines on the same questions, from the eval_policy samples.
    from ttc_jax.prm import evaluate
    wanted = {p["question"] for p in chosen}
    samples = [r for r in io_utils.read_jsonl(self.path("eval", "samples.jsonl"))
               if r["question"] in wanted]
    scores = [s for s in io_utils.read_jsonl(self.path("verifiers", "scores.jsonl"))
              if s["question"] in wanted]
    budgets = tuple(int(b) for b in sc.budgets if int(b) <= e.num_samples)
    flat = [v for s in scores for v in s["prm"]]
    base = evaluate.selection_curves(samples, {"prm": flat}, budgets, arith.equivalent,
                                     self.cfg.verify.aggregation)
    out = dict(curves=curves, curves_by_level=by_level, stats=stats,
               questions=len(chosen), baselines={k: base[k] for k in
                                                 ("majority", "prm_best_of_n_weighted")})
    io_utils.atomic_write_json(self.path("search", "eval.json"), out)
    return out

  # --- everything ---------------------------------------------------------------

  def run(self) -> dict:
    t0 = time.perf_counter()
    data = self.stage_data()
    policy = self.stage_policy()
    ev = self.stage_eval_policy()
    verifiers = search = None
    if "labels" in self.cfg:
      verifiers = dict(labels=self.stage_prm_labels(), prm=self._value_stage("prm"),
                       orm=self._value_stage("orm"), eval=self.stage_eval_verifiers())
    search = self.stage_eval_search() if "search" in self.cfg else None
    rep = report.build_report(self.cfg, self.levels, data, policy, ev, dict(self.wall),
                              time.perf_counter() - t0, verifiers=verifiers, search=search)
    io_utils.atomic_write_json(self.path("config.json"), self.cfg.to_dict())
    report.write_report(self.workdir, rep)
    return rep


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
