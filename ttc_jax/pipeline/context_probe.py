"""What a revision model's context does to its next attempt: a diagnostic over a finished run.

  python -m ttc_jax.pipeline.context_probe --workdir RUN [--config CONFIG] [--pairs 300]
      [--which sft|rl] [--samples 4] [--temperature 0.7] [--out FILE] [--config.FIELD=V ...]

Takes (question, chain, step t) triples of the run's SFT chains on training
questions (`revision_chains/train_chains.jsonl`) whose attempt t-1 is wrong,
and samples the revision model's next attempt under five prompts:

  actual   the chain's own context (the `context_attempts` most recent attempts)
  foreign  as many attempts, but from a chain of another question of the same level
  last1    only the wrong attempt t-1
  fresh    no context (the revision model's plain first attempt)
  policy   the policy model on the plain prompt

Prints one JSON object: per condition the accuracy, the fraction of samples that
copy attempt t-1, accuracy by level, and seconds. `fresh` against `policy`
measures what fine-tuning cost the first attempt; `foreign` against `fresh`
what a long context costs regardless of its content; `actual` against
`foreign` what the attempts themselves add.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from typing import Sequence

import jax
import numpy as np

from ttc_jax import config as config_lib
from ttc_jax import evaluation, io_utils, parallel
from ttc_jax.pipeline.arith import Pipeline
from ttc_jax.revision import format as fmt
from ttc_jax.tasks import arith

CONDITIONS = ("actual", "foreign", "last1", "fresh", "policy")


def probe_prompts(
    records: Sequence[dict],
    n_pairs: int,
    *,
    seed: int = 0,
    context: int = 4,
    question_position: str = "first",
) -> tuple[list[tuple], dict[str, list]]:
  """(question, chain, step) triples after a wrong attempt and each condition's prompts.

  records: chain records (`question`, `level`, `attempts` [C][T], `correct` [C][T]).
  Returns the first `n_pairs` triples of a seeded shuffle and prompts per condition
  ("policy" uses the "fresh" prompts).
  """
  rng = random.Random(seed)
  pairs = [
      (qi, ci, t)
      for qi, r in enumerate(records)
      for ci, chain in enumerate(r["attempts"])
      for t in range(1, len(chain))
      if not r["correct"][ci][t - 1]
  ]
  rng.shuffle(pairs)
  pairs = pairs[:n_pairs]
  by_level = collections.defaultdict(list)
  for qi, r in enumerate(records):
    by_level[r["level"]].append(qi)
  prompts: dict[str, list] = {c: [] for c in CONDITIONS if c != "policy"}
  for qi, ci, t in pairs:
    r = records[qi]
    ctx = fmt.truncate(r["attempts"][ci][:t], context)
    others = [q for q in by_level[r["level"]] if q != qi] or [
        q for q in range(len(records)) if q != qi
    ]
    if not others:
      raise ValueError("the foreign condition needs chains of at least two questions")
    other = records[rng.choice(others)]["attempts"]
    chain = other[rng.randrange(len(other))]
    foreign = (list(chain) * len(ctx))[: len(ctx)]
    for cond, c in (("actual", ctx), ("foreign", foreign), ("last1", ctx[-1:]), ("fresh", [])):
      prompts[cond].append(fmt.revision_prompt(r["question"], c, question_position))
  prompts["policy"] = prompts["fresh"]
  return pairs, prompts


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m ttc_jax.pipeline.context_probe", description=__doc__.split("\n")[0]
  )
  p.add_argument("--workdir", required=True)
  p.add_argument("--config", default="configs/arith_quick.py")
  p.add_argument("--pairs", type=int, default=300)
  p.add_argument("--which", default="sft", choices=("sft", "rl"))
  p.add_argument("--samples", type=int, default=4)
  p.add_argument("--temperature", type=float, default=0.7)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None)
  args, overrides = p.parse_known_args(argv)
  parallel.setup_jax_cache()
  cfg = config_lib.load_config(args.config, overrides)
  pipe = Pipeline(cfg, args.workdir, progress=False)
  with open(pipe.path("revision_chains", "train_chains.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  pairs, prompts = probe_prompts(
      records,
      args.pairs,
      seed=args.seed,
      context=int(cfg.revision.context_attempts),
      question_position=pipe.question_position,
  )
  if not pairs:
    raise ValueError(f"no attempt follows a wrong one in {args.workdir}'s training chains")
  models = {"revision": pipe.load_revision(args.which), "policy": pipe.load_policy()}
  out = dict(
      workdir=args.workdir,
      which=args.which,
      pairs=len(pairs),
      samples=args.samples,
      temperature=args.temperature,
      conditions={},
  )
  for cond in CONDITIONS:
    texts, st = evaluation.sample_texts(
        models["policy" if cond == "policy" else "revision"],
        pipe.tokenizer,
        prompts[cond],
        jax.random.key(args.seed + 7),
        num_samples=args.samples,
        max_new_tokens=int(cfg.revision.max_new_tokens),
        temperature=args.temperature,
        max_batch=int(cfg.revision.max_rows),
    )
    acc, copies, levels = [], [], collections.defaultdict(list)
    for (qi, ci, t), ts in zip(pairs, texts):
      r = records[qi]
      prev = fmt.clean_attempt(r["attempts"][ci][t - 1])
      for x in ts:
        ok = arith.is_correct(x, r["target"])
        acc.append(ok)
        levels[r["level"]].append(ok)
        copies.append(fmt.clean_attempt(x) == prev)
    out["conditions"][cond] = dict(
        accuracy=float(np.mean(acc)),
        copies_previous=float(np.mean(copies)),
        accuracy_by_level={k: float(np.mean(v)) for k, v in sorted(levels.items())},
        seconds=st["seconds"],
    )
  text = json.dumps(out, indent=1)
  if args.out:
    io_utils.atomic_write_json(args.out, out)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
