"""Monte Carlo labelling throughput: batched prefix rollouts vs one call per prefix.

Rolls out `--rollouts` continuations from each of `--prefixes` step prefixes
of embedded-task questions with `ttc_jax.prm.labels.rollout_values` (all
prefixes in a few device calls, the way the `prm_labels` stage runs), and,
side by side in the same process, the same work one prefix per call (the
per-prefix Python loop it replaces), on a subset of `--naive-prefixes`:

  PYTHONPATH=. python benchmarks/label_throughput.py                    # quick model, random init
  PYTHONPATH=. python benchmarks/label_throughput.py --workdir runs/arith_quick  # a trained policy

With a trained policy (`--workdir` of a finished main job) rollouts end when
the policy writes EOS, as in a real labelling run; a random-init model seldom
does, so its rollouts run to the token cap. Prints one JSON object:
prefix_rollouts_per_s and tokens_per_s for both ways, and their ratio
(`speedup`), from median times after one untimed compiling call.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import numpy as np

from benchmarks import common
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import create_model
from ttc_jax.prm import labels
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        model=dict(
            vocab_size=32,
            embed_dim=32,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=8,
            mlp_dim=64,
            max_len=96,
        ),
        levels="ops=1-3,digits=1",
        prefixes=8,
        rollouts=4,
        naive_prefixes=2,
        new_tokens=16,
    ),
    # The quick-config policy (configs/arith_quick.py) and its labelling settings.
    "quick": dict(
        model=dict(
            vocab_size=32,
            embed_dim=128,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
            mlp_dim=512,
            max_len=160,
        ),
        levels="ops=1-7,digits=1",
        prefixes=256,
        rollouts=8,
        naive_prefixes=16,
        new_tokens=48,
    ),
}


def _prefixes(levels: str, n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
  """n (prompt, step prefix, answer) triples from reference solutions, all depths."""
  lv = arith.parse_levels(levels)
  probs = arith.generate("train", lv, max(1, n // len(lv) + 1), seed)
  out = ([], [], [])
  for p in probs:
    lines = p.solution.split("\n")
    for k in range(len(lines) - 1):
      out[0].append(p.prompt)
      out[1].append(labels.prefix_text(lines, k))
      out[2].append(str(p.answer))
  idx = np.random.default_rng(seed).permutation(len(out[0]))[:n]
  return tuple([x[i] for i in idx] for x in out)


def run(
    preset: str = "quick",
    *,
    workdir: str | None = None,
    prefixes: int | None = None,
    rollouts: int | None = None,
    naive_prefixes: int | None = None,
    new_tokens: int | None = None,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    max_batch: int = 2048,
) -> dict:
  pr = PRESETS[preset]
  n = prefixes or pr["prefixes"]
  m = rollouts or pr["rollouts"]
  n_naive = min(naive_prefixes or pr["naive_prefixes"], n)
  tok = CharTokenizer()
  if workdir:
    pipe = common.load_run(workdir)
    model = pipe.load_policy()
    levels = pipe.cfg.task.levels
  else:
    model = create_model(ModelConfig(**pr["model"]), seed)
    levels = pr["levels"]
  prompts, pre, tgts = _prefixes(levels, n, seed)
  settings = labels.LabelSettings(
      rollouts=m,
      max_new_tokens=new_tokens or pr["new_tokens"],
      max_batch=max_batch,
      temperature=0.7,
  )
  kw = dict(extract_answer=arith.extract_answer, equivalent=arith.equivalent)
  stats: dict[str, dict] = {}

  def batched():
    _, st = labels.rollout_values(
        model, tok, prompts, pre, tgts, jax.random.key(seed), settings, **kw
    )
    stats["batched"] = st

  def naive():
    tokens = 0
    for i in range(n_naive):
      _, st = labels.rollout_values(
          model,
          tok,
          prompts[i : i + 1],
          pre[i : i + 1],
          tgts[i : i + 1],
          jax.random.key(i),
          settings,
          **kw,
      )
      tokens += st["generated_tokens"]
    stats["naive"] = dict(generated_tokens=tokens)

  common.log(f"[label_throughput] {n} prefixes x {m} rollouts (naive: {n_naive} prefixes)")
  t = common.time_interleaved({"batched": batched, "naive": naive}, warmup=warmup, repeats=repeats)
  res: dict[str, Any] = dict(
      benchmark="label_throughput",
      config=dict(
          preset=preset,
          prefixes=n,
          rollouts=m,
          naive_prefixes=n_naive,
          new_tokens=settings.max_new_tokens,
          max_batch=max_batch,
          trained=bool(workdir),
          model=dataclasses.asdict(model.cfg),
      ),
  )
  for k, count in (("batched", n), ("naive", n_naive)):
    med = t[k]["median_s"]
    res[k] = dict(
        median_s=med,
        prefix_rollouts_per_s=count * m / med,
        tokens_per_s=stats[k]["generated_tokens"] / med,
        generated_tokens=stats[k]["generated_tokens"],
    )
  res["speedup"] = res["batched"]["prefix_rollouts_per_s"] / res["naive"]["prefix_rollouts_per_s"]
  return common.finish(res, rss=False)


def main(argv=None) -> dict:
  parser = common.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
  parser.add_argument("--workdir", default=None, help="a finished run: use its trained policy")
  parser.add_argument("--prefixes", type=int, default=None)
  parser.add_argument("--rollouts", type=int, default=None)
  parser.add_argument("--naive-prefixes", type=int, default=None)
  parser.add_argument("--new-tokens", type=int, default=None)
  parser.add_argument("--max-batch", type=int, default=2048)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  res = run(
      args.preset,
      workdir=args.workdir,
      prefixes=args.prefixes,
      rollouts=args.rollouts,
      naive_prefixes=args.naive_prefixes,
      new_tokens=args.new_tokens,
      warmup=args.warmup,
      repeats=args.repeats,
      seed=args.seed,
      max_batch=args.max_batch,
  )
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
