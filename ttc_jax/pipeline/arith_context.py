"""The run context of the embedded arithmetic task: the character tokenizer, the TFDS dataset
in <workdir>/tfds (built on first use), the held-out questions by level, the exact answer
functions, and loaders of the models the stages train (see `context.RunContext`)."""

from __future__ import annotations

import functools
import os

import ml_collections

from ttc_jax import parallel
from ttc_jax.models.config import ModelConfig
from ttc_jax.pipeline import compute_optimal, policy, verifiers
from ttc_jax.pipeline.context import RunContext
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer, check_compatible


def data_spec(cfg) -> dict:
  t = cfg.task
  return dict(
      levels=t.levels,
      train_per_level=t.train_per_level,
      test_per_level=t.test_per_level,
      seed=t.data_seed,
  )


def build_dataset(cfg, workdir: str):
  """The arith TFDS dataset in <workdir>/tfds (built on first use)."""
  from ttc_jax.data import arith_tfds  # tfds is only needed here

  return arith_tfds.build_arith_dataset(os.path.join(workdir, "tfds"), **data_spec(cfg))


def select_problems(
    builder, levels: list[str], split: str, per_level: int, skip: int = 0
) -> list[dict]:
  """Questions `skip .. skip + per_level - 1` of each level of `split`, easiest level first.

  Dicts: question, prompt, solution, answer, level (see data.pipeline).
  """
  from ttc_jax.data import arith_tfds

  src = arith_tfds.load_split(builder(), split)
  want = skip + per_level
  per: dict[str, list] = {k: [] for k in levels}
  for i in range(len(src)):
    q = arith_tfds.decode_record(src[i])
    bucket = per.get(q["level"])
    if bucket is not None and len(bucket) < want:
      bucket.append(q)
    if all(len(v) >= want for v in per.values()):
      break
  return [q for k in levels for q in per[k][skip:want]]


def make_context(cfg: ml_collections.ConfigDict, workdir: str, progress: bool) -> RunContext:
  """The arith run context: the character tokenizer, `cfg.mesh`, the TFDS dataset in
  <workdir>/tfds (built on first use) and the models the stages train."""
  tokenizer = CharTokenizer()
  model_cfg = ModelConfig.from_dict(cfg.model.to_dict())
  check_compatible(tokenizer, model_cfg.vocab_size)
  levels = [lv.name for lv in arith.parse_levels(cfg.task.levels)]
  workdir = os.path.abspath(workdir)

  builder = functools.partial(build_dataset, cfg, workdir)
  problems = functools.partial(select_problems, builder, levels)

  ctx = RunContext(
      cfg=cfg,
      workdir=workdir,
      tokenizer=tokenizer,
      model_cfg=model_cfg,
      mesh=parallel.make_mesh(tuple(cfg.mesh.shape)),
      levels=levels,
      progress=progress,
      builder=builder,
      problems=problems,
      test_problems=lambda section: problems("test", section.questions_per_level),
      extract_answer=arith.extract_answer,
      equivalent=arith.equivalent,
      load_policy=lambda: ctx.load_lm(ctx.path("policy", "model"), model_cfg),
      load_prm=lambda: verifiers.load_value_model(ctx, "prm"),
      large_cfg=lambda: compute_optimal.large_cfg(cfg),
      load_large=lambda: ctx.load_lm(
          ctx.path("large_policy", "model"), compute_optimal.large_cfg(cfg)
      ),
      load_lm=lambda directory, mc: policy.load_lm(ctx, directory, mc, cfg.seed),
  )
  return ctx
