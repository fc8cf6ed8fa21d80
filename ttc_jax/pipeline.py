"""The main job as resumable stages writing artifacts into one run directory.

  <workdir>/config.json              the resolved config
  <workdir>/tfds/                    stage `data`: the arith TFDS dataset (array_record)
  <workdir>/policy/                  stage `policy`: checkpoints/, model/, metrics.jsonl
  <workdir>/eval/                    stage `eval_policy`: policy_eval.json, samples.jsonl
  <workdir>/prm_labels/              stage `prm_labels`: labels-*.array_record (+ .json stats)
  <workdir>/prm/, <workdir>/orm/     stages `prm`, `orm`: checkpoints/, best/, model/, metrics.jsonl
  <workdir>/verifiers/               stage `eval_verifiers`: eval.json, scores.jsonl
  <workdir>/search/                  stage `eval_search`: eval.json, results.jsonl
  <workdir>/revision_*/              revision stages (ttc_jax/revision_stages.py)
  <workdir>/large_*/, compute_optimal/  the compute-optimal study (compute_optimal_stages.py)
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

import jax
import ml_collections

from ttc_jax import config as config_lib
from ttc_jax import evaluation, io_utils, parallel, report
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import create_model
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer, check_compatible
from ttc_jax.train import loop, optim
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer
from ttc_jax.compute_optimal_stages import ComputeOptimalStages
from ttc_jax.revision_stages import RevisionStages
from ttc_jax.stages import Stages, StageMismatchError  # noqa: F401 (re-exported)
from ttc_jax.verifier_stages import VerifierStages


class Pipeline(Stages, VerifierStages, RevisionStages, ComputeOptimalStages):
  """Runs the stages for `cfg` in `workdir`; see the module docstring."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str, progress: bool = True):
    config_lib.validate(cfg)
    self.cfg, self.progress = cfg, progress
    self.tokenizer = CharTokenizer()
    self.model_cfg = ModelConfig.from_dict(cfg.model.to_dict())
    check_compatible(self.tokenizer, self.model_cfg.vocab_size)
    self.mesh = parallel.make_mesh(tuple(cfg.mesh.shape))
    self.levels = [lv.name for lv in arith.parse_levels(cfg.task.levels)]
    self._init_stages(workdir)

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

  def problems(self, split: str, per_level: int, skip: int = 0) -> list[dict]:
    """Questions `skip .. skip + per_level - 1` of each level of `split`, easiest level first.

    Dicts: question, prompt, solution, answer, level (see data.pipeline).
    """
    from ttc_jax.data import arith_tfds
    src = arith_tfds.load_split(self.builder(), split)
    want = skip + per_level
    per: dict[str, list] = {k: [] for k in self.levels}
    for i in range(len(src)):
      q = arith_tfds.decode_record(src[i])
      bucket = per.get(q["level"])
      if bucket is not None and len(bucket) < want:
        bucket.append(q)
      if all(len(v) >= want for v in per.values()):
        break
    return [q for k in self.levels for q in per[k][skip:want]]

  def _policy_sections(self) -> dict:
    c = self.cfg
    return dict(task=c.task.to_dict(), model=c.model.to_dict(),
                train=config_lib.train_section(c.train), seed=c.seed)

  def stage_policy(self) -> dict:
    return self._stage("policy", self._policy_sections(),
                       lambda: self._train_lm(self.model_cfg, "policy", self._policy_sections()))

  def _train_lm(self, model_cfg: ModelConfig, name: str, sections: dict) -> dict:
    """Trains a language model of `model_cfg` on the task's solutions (`cfg.train`) into
    <workdir>/<name>/ (checkpoints/, model/, metrics.jsonl); the policy and the larger
    model of the FLOPs-matched comparison both come from here."""
    from ttc_jax.data import packing, pipeline as data_pipeline
    c, t = self.cfg, self.cfg.train
    builder = self.builder()
    with parallel.use_mesh(self.mesh):
      model = create_model(model_cfg, c.seed, self.mesh)
    tx = optim.make_optimizer(t.lr, t.steps, t.warmup_steps, t.weight_decay, t.clip_norm,
                              t.b1, t.b2, t.final_lr_fraction)
    trainer = Trainer(model, tx, mesh=self.mesh,
                      skip_nonfinite=bool(t.get("skip_nonfinite", False)),
                      microbatches=int(t.get("microbatches", 1)))
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
                config_hash=config_lib.config_hash(sections))
    ck = Checkpointer(self.path(name, "checkpoints"), max_to_keep=2)
    last = loop.fit(trainer, data, steps=t.steps, checkpointer=ck,
                    checkpoint_every=t.checkpoint_every, eval_batches=eval_batches,
                    eval_every=t.eval_every, log_every=t.log_every,
                    metrics_path=self.path(name, "metrics.jsonl"),
                    flops_per_step=model_cfg.train_flops_per_token(t.seq_len) * tokens,
                    tokens_per_step=tokens,
                    lr_schedule=optim.make_schedule(t.lr, t.steps, t.warmup_steps,
                                                    t.final_lr_fraction),
                    meta=meta, desc=name, progress=self.progress)
    ck.close()
    from flax import nnx
    model_ck = Checkpointer(self.path(name, "model"), max_to_keep=1, async_save=False)
    model_ck.save(t.steps, nnx.state(trainer.model), meta, force=True)
    model_ck.close()
    return dict(final_metrics=last, num_params=model_cfg.num_params,
                train_tokens=int(t.steps) * tokens)

  def load_policy(self):
    """The trained policy model, restored onto this run's mesh."""
    return self.load_lm(self.path("policy", "model"), self.model_cfg)

  def load_lm(self, directory: str, model_cfg: ModelConfig):
    """A language model saved (model state only) in `directory`, on this run's mesh;
    the checkpoint's tokenizer must be this run's."""
    from flax import nnx
    ck = Checkpointer(directory, async_save=False)
    with parallel.use_mesh(self.mesh):
      model = create_model(model_cfg, self.cfg.seed, self.mesh)
    state, meta = ck.restore(nnx.state(model))
    ck.close()
    if meta.get("tokenizer") != self.tokenizer.fingerprint():
      raise ValueError(f"checkpoint {ck.directory} was trained with tokenizer "
                       f"{meta.get('tokenizer')}, this run uses {self.tokenizer.fingerprint()}")
    nnx.update(model, state)
    return model

  def stage_eval_policy(self) -> dict:
    sections = dict(self._policy_sections(), eval=self.cfg.eval.to_dict())
    return self._stage("eval_policy", sections, self._eval_policy)

  def _eval_policy(self) -> dict:
    e = self.cfg.eval
    model = self.load_policy()
    chosen = self.problems("test", e.questions_per_level)
    summary, records = evaluation.evaluate_policy(
        model, self.tokenizer, chosen, self.levels, jax.random.key(self.cfg.seed + 1),
        extract_answer=arith.extract_answer, equivalent=arith.equivalent,
        num_samples=e.num_samples, majority_ns=tuple(e.majority_ns),
        max_new_tokens=e.max_new_tokens, temperature=e.temperature, top_k=e.top_k,
        top_p=e.top_p, max_batch=e.max_batch, mesh=self.mesh, progress=self.progress)
    io_utils.atomic_write_jsonl(self.path("eval", "samples.jsonl"), records)
    io_utils.atomic_write_json(self.path("eval", "policy_eval.json"), summary)
    return summary

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
    revision = None
    if "revision" in self.cfg:
      revision = dict(data=self.stage_revision_data(), sft=self.stage_revision_sft(),
                      chains=self.stage_revision_chains(), orm=self.stage_revision_orm(),
                      rl=self.stage_revision_rl(), eval=self.stage_eval_revision())
    optimal = None
    if "compute_optimal" in self.cfg:
      optimal = dict(large=self.stage_large_policy(), large_eval=self.stage_eval_large(),
                     analysis=self.stage_compute_optimal())
    rep = report.build_report(self.cfg, self.levels, data, policy, ev, dict(self.wall),
                              time.perf_counter() - t0, verifiers=verifiers, search=search,
                              revision=revision, compute_optimal=optimal)
    io_utils.atomic_write_json(self.path("config.json"), self.cfg.to_dict())
    report.write_report(self.workdir, rep)
    return rep
