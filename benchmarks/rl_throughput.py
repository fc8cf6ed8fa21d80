"""RL step throughput of the revision policy's learner: rollout and update, side by side.

One RL step of `ttc_jax.revision.rl` is a jitted rollout (`rl_rollout.RolloutSource.batch_for`:
sample G attempts for each of B contexts, grade them on the device, group
advantages, assemble the sequences, reference log-probs) and an update
(`Trainer.train_step` on `rl.rl_loss`). This times both, step by step, for
several settings in one run (interleaved: step s of every setting before step
s+1 of any), after one untimed compiling step per setting:

  PYTHONPATH=. python benchmarks/rl_throughput.py                 # quick config, G=4,8,16
  PYTHONPATH=. python benchmarks/rl_throughput.py --smoke         # tiny model, 1 step

Model and RL settings come from `--config` (default configs/arith_quick.py:
its `model` section with `revision.max_len`, and `revision.rl`). Weights are
random-init: the work per step does not depend on the weights, except for how
long the sampled attempts are. A random-init model writes EOS seldom (about 1
token in `vocab_size`), so in nearly every step some attempt runs to
`max_new_tokens` and the decode loop (which runs until its longest row stops)
takes all `max_new_tokens` steps: rollout times are upper bounds for a trained
model whose attempts end earlier (`contexts.canonical_solution_tokens` gives
the lengths a right attempt has).

Contexts are real revision prompts (`revision.format.revision_prompt`) of
training questions of the config's levels with 0..`--max-attempts` previous
attempts (each the question's canonical solution), bucketed by length like
`RolloutSource`; a step draws its B contexts from one bucket width
(`--widths`; default the bucket of the median context). With several widths,
`mix_estimate` fits step time against width and evaluates the fit at the mean
width of the context mix.

Prints one JSON object: per setting the rollout, update and step medians;
compile times (`compile_s`: wall time of the first, compiling, call of each
half, its execution included; a cache load when a persistent compilation
cache is configured, `config.compilation_cache`); samples/s (B*G per step);
generated tokens/s (sum of the sampled lengths); learner tokens/s (N*T batch
rows, padding included); the update's FLOP/s
(`ModelConfig.train_flops_per_token(T)` x N*T); decode slots/s (N x decode
steps: every row is computed until the longest one stops); and ratios of
every setting against the first one (`ratios`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from benchmarks import common
from ttc_jax import config as config_lib
from ttc_jax.config import settings as config_settings
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import create_model
from ttc_jax.revision import format as fmt
from ttc_jax.revision import rl, rl_rollout
from ttc_jax.tasks import arith
from ttc_jax.tasks.arith import device as arith_device
from ttc_jax.tokenizers import CharTokenizer
from ttc_jax.train import optim
from ttc_jax.train.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "arith_quick.py")

# --smoke: a tiny model and a short attempt, so the whole run compiles and steps in seconds.
SMOKE = dict(
    model=dict(
        vocab_size=32,
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
        max_len=160,
    ),
    levels="ops=1-3,digits=1",
    prompts_per_step=2,
    group_sizes=(2, 4),
    max_new_tokens=16,
    max_attempts=2,
    steps=1,
    warmup=0,
    per_level=8,
)


def _stats(xs) -> dict:
  xs = np.asarray(xs, np.float64)
  return dict(
      mean=float(xs.mean()),
      median=float(np.median(xs)),
      p90=float(np.percentile(xs, 90)),
      max=int(xs.max()),
      min=int(xs.min()),
  )


def make_contexts(
    levels: str, per_level: int, max_attempts: int, seed: int
) -> tuple[list[dict], list[int]]:
  """Revision contexts: training questions of `levels`, question i with i % (max_attempts+1)
  previous attempts (its canonical solution each). Returns (contexts, solution lengths)."""
  probs = arith.generate("train", arith.parse_levels(levels), per_level, seed)
  out, sol = [], []
  for i, p in enumerate(probs):
    k = i % (max_attempts + 1)
    out.append(
        dict(
            prompt=fmt.revision_prompt(p.question, [p.solution] * k),
            answer=str(p.answer),
            attempts=k,
        )
    )
    sol.append(len(p.solution) + 1)  # + EOS
  return out, sol


def _copy(model):
  """A model with its own buffers (the trainer donates its state), without re-running the
  jitted initialiser (`create_model` compiles it anew on every call)."""
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(lambda x: jnp.asarray(np.array(x)), state))


class Setting:
  """One (group size, bucket width) setting: its own trainer, reference and source."""

  def __init__(self, model, rl_cfg, tok, contexts, group: int, width: int, seed: int):
    s = dataclasses.replace(config_settings.rl_settings(rl_cfg), group_size=group)
    self.s, self.width, self.group = s, width, group
    loss_fn = functools.partial(rl.rl_loss, loss=s.loss, clip_eps=s.clip_eps, kl_coef=s.kl_coef)
    tx = optim.make_optimizer(s.lr, s.steps, s.warmup_steps, 0.0, s.clip_norm, 0.9, 0.95, 1.0)
    self.trainer = Trainer(_copy(model), tx, loss_fn=loss_fn)
    self.source = rl_rollout.RolloutSource(
        self.trainer,
        _copy(model),
        tok,
        contexts,
        s,
        arith_device.DeviceGrader.from_tokenizer(tok),
        arith_device.encode_targets,
        seed=seed,
    )
    if width not in self.source.buckets:
      raise ValueError(f"no context in bucket {width}; buckets: {sorted(self.source.buckets)}")
    self.pool = self.source.buckets[width]
    self.rng = np.random.default_rng((seed, group, width))
    self.key = jax.random.key(seed)
    self.rows: list[dict] = []

  def step(self) -> dict:
    """One RL step, timed in two blocking halves; returns its row."""
    b = self.s.prompts_per_step
    idx = [
        self.pool[int(i)]
        for i in self.rng.choice(len(self.pool), size=b, replace=len(self.pool) < b)
    ]
    self.key, k = jax.random.split(self.key)
    t0 = time.perf_counter()
    batch = jax.block_until_ready(self.source.batch_for(idx, self.width, k))
    t1 = time.perf_counter()
    metrics = jax.block_until_ready(self.trainer.train_step(batch))
    t2 = time.perf_counter()
    glen = np.asarray(batch["gen_tokens"])
    n, t = batch["inputs"].shape
    return dict(
        rollout_s=t1 - t0,
        update_s=t2 - t1,
        step_s=t2 - t0,
        n=int(n),
        t=int(t),
        generated_tokens=int(glen.sum()),
        decode_steps=int(glen.max()),
        loss_finite=bool(np.isfinite(float(metrics["loss"]))),
        reward=float(metrics["reward"]),
    )


def summarize(
    rows: list[dict], compile_row: dict, prompts: int, group: int, width: int, cfg: ModelConfig
) -> dict:
  med = lambda k: statistics.median(r[k] for r in rows)
  step = med("step_s")
  n, t = rows[0]["n"], rows[0]["t"]
  gen = statistics.median(r["generated_tokens"] for r in rows)
  gen_per_s = statistics.median(r["generated_tokens"] / r["step_s"] for r in rows)
  return dict(
      group_size=group,
      prompts_per_step=prompts,
      width=width,
      rows_n=n,
      seq_t=t,
      step_median_s=step,
      step_min_s=min(r["step_s"] for r in rows),
      rollout_median_s=med("rollout_s"),
      update_median_s=med("update_s"),
      rollout_fraction=med("rollout_s") / step,
      samples_per_s=n / step,
      generated_tokens_per_s=gen_per_s,
      learner_tokens_per_s=n * t / step,
      rollout_generated_tokens_per_s=statistics.median(
          r["generated_tokens"] / r["rollout_s"] for r in rows
      ),
      update_tokens_per_s=n * t / med("update_s"),
      update_flops_per_s=cfg.train_flops_per_token(t) * n * t / med("update_s"),
      decode_slots_per_s=statistics.median(r["decode_steps"] * n / r["rollout_s"] for r in rows),
      generated_tokens_median=gen,
      mean_generated_len=gen / n,
      decode_steps_median=med("decode_steps"),
      compile_s=dict(rollout=compile_row["rollout_s"], update=compile_row["update_s"]),
      loss_finite=all(r["loss_finite"] for r in rows),
      times=dict(rollout=[r["rollout_s"] for r in rows], update=[r["update_s"] for r in rows]),
  )


def _median_bucket(lengths, width: int, cap: int) -> int:
  med = int(np.median(lengths))
  return min(-(-med // width) * width, cap)


def run(
    config: str = DEFAULT_CONFIG,
    *,
    smoke: bool = False,
    group_sizes=None,
    widths=None,
    prompts_per_step: int | None = None,
    max_new_tokens: int | None = None,
    max_attempts: int | None = None,
    per_level: int = 40,
    steps: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict:
  cfg_all = config_lib.load_config(config)
  rl_cfg = ml_collections.ConfigDict(cfg_all.revision.rl.to_dict())
  model_d = dict(cfg_all.model.to_dict(), max_len=int(cfg_all.revision.max_len))
  levels = cfg_all.task.levels
  max_att = int(cfg_all.revision.context_attempts)
  if smoke:
    model_d, levels = dict(SMOKE["model"]), SMOKE["levels"]
    rl_cfg.prompts_per_step, rl_cfg.max_new_tokens = (
        SMOKE["prompts_per_step"],
        SMOKE["max_new_tokens"],
    )
    max_att, per_level = SMOKE["max_attempts"], SMOKE["per_level"]
    group_sizes = group_sizes or SMOKE["group_sizes"]
    steps, warmup = min(steps, SMOKE["steps"]), min(warmup, SMOKE["warmup"])
  if prompts_per_step:
    rl_cfg.prompts_per_step = prompts_per_step
  if max_new_tokens:
    rl_cfg.max_new_tokens = max_new_tokens
  if max_attempts is not None:
    max_att = max_attempts
  group_sizes = tuple(group_sizes or (4, 8, 16))
  cfg = ModelConfig.from_dict(model_d)
  tok = CharTokenizer()
  contexts, sol_lens = make_contexts(levels, per_level, max_att, seed)
  cap = cfg.max_len - int(rl_cfg.max_new_tokens)
  plens = [len(tok.encode(c["prompt"], add_bos=True)) for c in contexts]
  keep = [i for i, n in enumerate(plens) if n <= cap]
  dropped = len(contexts) - len(keep)
  contexts, plens = [contexts[i] for i in keep], [plens[i] for i in keep]
  buckets = rl_rollout.length_buckets(plens, 32, cap=cap)
  widths = tuple(widths or (_median_bucket(plens, 32, cap),))
  g0 = int(rl_cfg.group_size) if int(rl_cfg.group_size) in group_sizes else group_sizes[0]
  # Settings: every group size at the first width, then the config's group size at the others.
  combos = [(g, widths[0]) for g in group_sizes] + [(g0, w) for w in widths[1:]]
  common.log(
      f"[rl_throughput] {len(contexts)} contexts ({dropped} too long dropped), "
      f"buckets {sorted(buckets)}; settings (G, width): {combos}"
  )
  model = create_model(cfg, seed)  # policy and reference start equal (as after SFT)
  settings = {f"g{g}_w{w}": Setting(model, rl_cfg, tok, contexts, g, w, seed) for g, w in combos}
  compile_rows = {}
  for name, st in settings.items():  # first step compiles rollout and update
    common.log(f"[rl_throughput] compiling {name}")
    compile_rows[name] = st.step()
  for _ in range(warmup):
    for st in settings.values():
      st.step()
  for i in range(steps):
    for name, st in settings.items():
      st.rows.append(st.step())
    common.log(
        f"[rl_throughput] step {i + 1}/{steps}: "
        + ", ".join(f"{k} {s.rows[-1]['step_s']:.2f}s" for k, s in settings.items())
    )
  per = {
      name: summarize(
          st.rows, compile_rows[name], int(rl_cfg.prompts_per_step), st.group, st.width, cfg
      )
      for name, st in settings.items()
  }
  base = next(iter(per))
  ratios = {
      name: dict(
          step_time=r["step_median_s"] / per[base]["step_median_s"],
          rollout_time=r["rollout_median_s"] / per[base]["rollout_median_s"],
          update_time=r["update_median_s"] / per[base]["update_median_s"],
          samples_per_s=r["samples_per_s"] / per[base]["samples_per_s"],
      )
      for name, r in per.items()
  }
  counts = {w: len(v) for w, v in buckets.items()}
  tot = sum(counts.values())
  out: dict[str, Any] = dict(
      benchmark="rl_throughput",
      config=dict(
          config=os.path.relpath(config, ROOT) if not smoke else "smoke",
          smoke=smoke,
          model=dataclasses.asdict(cfg),
          levels=levels,
          rl=dict(
              prompts_per_step=int(rl_cfg.prompts_per_step),
              max_new_tokens=int(rl_cfg.max_new_tokens),
              temperature=float(rl_cfg.temperature),
              advantage=rl_cfg.advantage,
              loss=rl_cfg.loss,
              kl_coef=float(rl_cfg.kl_coef),
          ),
          group_sizes=list(group_sizes),
          widths=list(widths),
          steps=steps,
          warmup=warmup,
          seed=seed,
          weights="random-init",
          compilation_cache=jax.config.jax_compilation_cache_dir or None,
          num_params=int(cfg.num_params),
      ),
      contexts=dict(
          count=len(contexts),
          dropped_too_long=dropped,
          max_attempts=max_att,
          prompt_tokens=_stats(plens),
          bucket_counts=counts,
          bucket_mean_width=sum(w * c for w, c in counts.items()) / tot,
          canonical_solution_tokens=_stats(sol_lens),
      ),
      per_setting=per,
      base=base,
      ratios=ratios,
  )
  same_g = [r for r in per.values() if r["group_size"] == g0]
  if len({r["width"] for r in same_g}) >= 2:
    # Step time is about linear in the bucket width (prefill, the decode cache and the update
    # rows all grow with it), so the mean over the context mix is the fit at the mean width.
    w = np.array([r["width"] for r in same_g], np.float64)
    fits = {
        k: np.polyfit(w, [r[k] for r in same_g], 1)
        for k in ("step_median_s", "rollout_median_s", "update_median_s")
    }
    mw = out["contexts"]["bucket_mean_width"]
    est = {k.replace("_median_s", "_s"): float(np.polyval(f, mw)) for k, f in fits.items()}
    out["mix_estimate"] = dict(
        group_size=g0,
        mean_width=mw,
        **est,
        samples_per_s=int(rl_cfg.prompts_per_step) * g0 / est["step_s"],
        per_width_s={
            k.replace("_median_s", ""): [float(f[0]), float(f[1])] for k, f in fits.items()
        },
        note="linear fit of time on width "
        "(slope s/token, intercept s) over the widths timed at this group size, at the "
        "bucket-size-weighted mean width of the contexts",
    )
  return common.finish(out)


def main(argv=None) -> dict:
  parser = common.base_parser(__doc__.splitlines()[0])
  parser.set_defaults(repeats=5, peak=False)
  parser.add_argument("--config", default=DEFAULT_CONFIG)
  parser.add_argument("--smoke", action="store_true", help="tiny model, 1 step, no warm-up")
  parser.add_argument("--group-sizes", type=int, nargs="+", default=None)
  parser.add_argument(
      "--widths",
      type=int,
      nargs="+",
      default=None,
      help="bucket widths (multiples of 32); the first one gets every group "
      "size, the others the config's group size",
  )
  parser.add_argument("--prompts-per-step", type=int, default=None)
  parser.add_argument("--max-new-tokens", type=int, default=None)
  parser.add_argument("--max-attempts", type=int, default=None)
  parser.add_argument("--per-level", type=int, default=40, help="questions per level")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  res = run(
      args.config,
      smoke=args.smoke,
      group_sizes=args.group_sizes,
      widths=args.widths,
      prompts_per_step=args.prompts_per_step,
      max_new_tokens=args.max_new_tokens,
      max_attempts=args.max_attempts,
      per_level=args.per_level,
      steps=args.repeats,
      warmup=args.warmup,
      seed=args.seed,
  )
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
