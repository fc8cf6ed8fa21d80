"""Policy stages: train a language model (arith), evaluate a policy, evaluate the larger model.

  <workdir>/policy/, large_policy/   `train_lm`: checkpoints/, model/, metrics.jsonl
  <workdir>/eval/                    `eval_policy`: policy_eval.json, samples.jsonl
  <workdir>/large_eval/              `eval_large`: greedy.jsonl

`eval_policy` and `eval_large` serve both pipelines: the questions, answer
functions and model loaders come from the run context.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx

from ttc_jax import config as config_lib
from ttc_jax import evaluation, io_utils, parallel
from ttc_jax.data import packing
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import create_model
from ttc_jax.pipeline.context import RunContext
from ttc_jax.selection import aggregate
from ttc_jax.train import loop, optim
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer


def policy_sections(cfg) -> dict:
  """What the arith policy depends on (and every stage after it)."""
  return dict(
      task=cfg.task.to_dict(),
      model=config_lib.model_section(cfg.model),
      train=config_lib.train_section(cfg.train),
      seed=cfg.seed,
  )


def train_lm(ctx: RunContext, model_cfg: ModelConfig, name: str, sections: dict) -> dict:
  """Trains a language model of `model_cfg` on the task's solutions (`cfg.train`) into
  <workdir>/<name>/ (checkpoints/, model/, metrics.jsonl); the policy and the larger
  model of the FLOPs-matched comparison both come from here."""
  from ttc_jax.data import pipeline as data_pipeline  # grain is only needed here

  c, t = ctx.cfg, ctx.cfg.train
  builder = ctx.builder()
  with parallel.use_mesh(ctx.mesh):
    model = create_model(model_cfg, c.seed, ctx.mesh)
  tx = optim.make_optimizer(
      t.lr, t.steps, t.warmup_steps, t.weight_decay, t.clip_norm, t.b1, t.b2, t.final_lr_fraction
  )
  trainer = Trainer(
      model,
      tx,
      mesh=ctx.mesh,
      skip_nonfinite=bool(t.get("skip_nonfinite", False)),
      microbatches=int(t.get("microbatches", 1)),
  )
  data = data_pipeline.make_train_iterator(
      builder,
      ctx.tokenizer,
      t.batch_size,
      t.seq_len,
      seed=c.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )
  test = data_pipeline.load_test_problems(builder)
  eval_examples = [
      packing.tokenize_example(ctx.tokenizer, p["prompt"], p["solution"]) for p in test
  ]
  eval_rows = packing.pack_examples(eval_examples, t.seq_len)
  n_rows = min(len(eval_rows["inputs"]) // t.batch_size, t.eval_batches) * t.batch_size
  if n_rows == 0:
    raise ValueError(f"test split has too few examples for one eval batch of {t.batch_size}")
  eval_batches = lambda: (
      {k: v[i : i + t.batch_size] for k, v in eval_rows.items()}  # noqa: E731
      for i in range(0, n_rows, t.batch_size)
  )
  tokens = t.batch_size * t.seq_len
  meta = ctx.meta(sections)
  ck = Checkpointer(ctx.path(name, "checkpoints"), max_to_keep=2)
  last = loop.fit(
      trainer,
      data,
      steps=t.steps,
      checkpointer=ck,
      checkpoint_every=t.checkpoint_every,
      eval_batches=eval_batches,
      eval_every=t.eval_every,
      log_every=t.log_every,
      metrics_path=ctx.path(name, "metrics.jsonl"),
      flops_per_step=model_cfg.train_flops_per_token(t.seq_len) * tokens,
      tokens_per_step=tokens,
      lr_schedule=optim.make_schedule(t.lr, t.steps, t.warmup_steps, t.final_lr_fraction),
      meta=meta,
      desc=name,
      progress=ctx.progress,
  )
  ck.close()
  model_ck = Checkpointer(ctx.path(name, "model"), max_to_keep=1, async_save=False)
  model_ck.save(t.steps, nnx.state(trainer.model), meta, force=True)
  model_ck.close()
  return dict(
      final_metrics=last, num_params=model_cfg.num_params, train_tokens=int(t.steps) * tokens
  )


def load_lm(ctx: RunContext, directory: str, model_cfg: ModelConfig, seed: int):
  """A language model saved (model state only) in `directory`, on the context's mesh;
  the checkpoint's tokenizer must be the context's."""
  ck = Checkpointer(directory, async_save=False)
  with parallel.use_mesh(ctx.mesh):
    model = create_model(model_cfg, seed, ctx.mesh)
  state, meta = ck.restore(nnx.state(model))
  ck.close()
  if meta.get("tokenizer") != ctx.tokenizer.fingerprint():
    raise ValueError(
        f"checkpoint {ck.directory} was trained with tokenizer "
        f"{meta.get('tokenizer')}, this run uses {ctx.tokenizer.fingerprint()}"
    )
  nnx.update(model, state)
  return model


def eval_policy(ctx: RunContext) -> dict:
  """Greedy pass@1 and sampled majority@N of the policy on the `cfg.eval` questions."""
  e = ctx.cfg.eval
  model = ctx.load_policy()
  chosen = ctx.test_problems(e)
  summary, records = evaluate_policy(
      model,
      ctx.tokenizer,
      chosen,
      ctx.levels,
      jax.random.key(ctx.cfg.seed + 1),
      extract_answer=ctx.extract_answer,
      equivalent=ctx.equivalent,
      num_samples=e.num_samples,
      majority_ns=tuple(e.majority_ns),
      max_new_tokens=e.max_new_tokens,
      temperature=e.temperature,
      top_k=e.top_k,
      top_p=e.top_p,
      max_batch=e.max_batch,
      mesh=ctx.mesh,
      progress=ctx.progress,
  )
  io_utils.atomic_write_jsonl(ctx.path("eval", "samples.jsonl"), records)
  io_utils.atomic_write_json(ctx.path("eval", "policy_eval.json"), summary)
  return summary


def eval_large(ctx: RunContext) -> dict:
  """Greedy pass@1 of the larger model on the `cfg.eval` questions (large_eval/greedy.jsonl)."""
  e = ctx.cfg.eval
  model = ctx.load_large()
  chosen = ctx.test_problems(e)
  texts, stats = evaluation.sample_texts(
      model,
      ctx.tokenizer,
      [p["prompt"] for p in chosen],
      jax.random.key(ctx.cfg.seed),
      num_samples=1,
      max_new_tokens=e.max_new_tokens,
      temperature=0.0,
      max_batch=e.max_batch,
      mesh=ctx.mesh,
      progress=ctx.progress,
      desc="large greedy",
  )
  recs = [
      dict(
          question=p["question"],
          level=p["level"],
          answer=str(p["answer"]),
          greedy=t[0],
          greedy_answer=ctx.extract_answer(t[0]),
          greedy_correct=bool(ctx.equivalent(ctx.extract_answer(t[0]), str(p["answer"]))),
      )
      for p, t in zip(chosen, texts)
  ]
  io_utils.atomic_write_jsonl(ctx.path("large_eval", "greedy.jsonl"), recs)
  by_level = {
      lv: float(np.mean([r["greedy_correct"] for r in recs if r["level"] == lv]))
      for lv in ctx.levels
      if any(r["level"] == lv for r in recs)
  }
  return dict(
      pass_at_1=float(np.mean([r["greedy_correct"] for r in recs])),
      pass_at_1_by_level=by_level,
      num_params=ctx.large_cfg().num_params,
      sampling=stats,
  )


def evaluate_policy(
    model,
    tokenizer,
    problems: Sequence[dict],
    level_names: Sequence[str],
    rng: jax.Array,
    *,
    extract_answer: Callable[[str], str | None],
    equivalent: Callable[[Any, Any], bool],
    num_samples: int,
    majority_ns: Sequence[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    max_batch: int = 1024,
    mesh=None,
    progress: bool = True,
) -> tuple[dict, list[dict]]:
  """Greedy pass@1 and sampled majority@N, overall and per level.

  problems: dicts with `prompt`, `answer`, `level`. Returns (summary,
  per-question records). Levels appear in `level_names` order (easiest first).
  """
  prompts = [p["prompt"] for p in problems]
  targets = [str(p["answer"]) for p in problems]
  common = dict(max_new_tokens=max_new_tokens, max_batch=max_batch, mesh=mesh, progress=progress)
  greedy, g_stats = evaluation.sample_texts(
      model,
      tokenizer,
      prompts,
      jax.random.fold_in(rng, 0),
      num_samples=1,
      temperature=0.0,
      desc="greedy",
      **common,
  )
  samples, s_stats = evaluation.sample_texts(
      model,
      tokenizer,
      prompts,
      jax.random.fold_in(rng, 1),
      num_samples=num_samples,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      desc="sample",
      **common,
  )
  records = []
  for p, tgt, g, ss in zip(problems, targets, greedy, samples):
    answers = [extract_answer(t) for t in ss]
    records.append(
        dict(
            question=p.get("question", p["prompt"].strip()),
            prompt=p["prompt"],
            level=p["level"],
            answer=tgt,
            greedy=g[0],
            greedy_answer=extract_answer(g[0]),
            greedy_correct=bool(equivalent(extract_answer(g[0]), tgt)),
            samples=list(ss),
            sample_answers=answers,
            sample_correct=[bool(equivalent(a, tgt)) for a in answers],
        )
    )

  def summarize(recs):
    if not recs:
      return None
    ans = [r["sample_answers"] for r in recs]
    tg = [r["answer"] for r in recs]
    return dict(
        num_questions=len(recs),
        pass_at_1_greedy=float(np.mean([r["greedy_correct"] for r in recs])),
        pass_at_1_sampled=float(np.mean([np.mean(r["sample_correct"]) for r in recs])),
        pass_at_n=float(np.mean([any(r["sample_correct"]) for r in recs])),
        distinct_answers=float(np.mean([len(aggregate.group_answers(a, equivalent)) for a in ans])),
        unparsable_fraction=float(np.mean([np.mean([a is None for a in x]) for x in ans])),
        majority=aggregate.majority_curve(ans, tg, majority_ns, equivalent),
    )

  by_level = {name: summarize([r for r in records if r["level"] == name]) for name in level_names}
  by_level = {k: v for k, v in by_level.items() if v is not None}
  summary = dict(
      overall=summarize(records),
      by_level=by_level,
      sampling=dict(
          greedy=g_stats, sampled=s_stats, temperature=temperature, num_samples=num_samples
      ),
  )
  return summary, records
