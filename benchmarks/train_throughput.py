"""Training throughput: tokens/s and achieved FLOP/s of one optimisation step.

Times `Trainer.train_step` (AdamW, the LM loss) of the quick policy model on
real packed rows of the arithmetic task, and compares the achieved FLOP/s with
a float32 matmul peak measured in the same process:

  PYTHONPATH=. python benchmarks/train_throughput.py                 # quick: 64 x 128
  PYTHONPATH=. python benchmarks/train_throughput.py --batch 128 --seq-len 64
  PYTHONPATH=. python benchmarks/train_throughput.py --preset tiny --repeats 3

Prints one JSON object on stdout (progress goes to stderr). Per step:

  tokens = batch * seq_len                                 (every row position)
  FLOPs  = cfg.train_flops_per_token(seq_len) * tokens     (3x forward; causal
           average context; the same accounting as ModelConfig)

`step_median_s` is the median wall time of `repeats` (>= 10 by default) steps
after `warmup` untimed steps; each timed step waits for the whole new state.
`compile_s` is the wall time of the first call (tracing + compilation + one
step). `fraction_of_peak` = achieved FLOP/s / the best float32 [n,n]@[n,n]
matmul FLOP/s over `--peak-sizes` (the machine's dense-matmul peak as jitted
JAX sees it here).
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import numpy as np
from flax import nnx

from benchmarks import common
from ttc_jax import parallel
from ttc_jax.data.packing import pack_examples, tokenize_example
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import Transformer, create_model
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer
from ttc_jax.train.optim import make_optimizer
from ttc_jax.train.trainer import Trainer

# Model dims of each preset (ModelConfig fields) and the run shape.
PRESETS: dict[str, dict[str, Any]] = {
    # For the smoke test: seconds end to end.
    "tiny": dict(
        model=dict(
            vocab_size=32,
            embed_dim=32,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=8,
            mlp_dim=64,
            max_len=64,
        ),
        batch=4,
        seq_len=64,
        levels="ops=1-3,digits=1",
        per_level=16,
        lr=3e-3,
    ),
    # The quick-config policy model and its training shape (configs/arith_quick.py):
    # the default.
    "quick": dict(
        model=dict(
            vocab_size=32,
            embed_dim=128,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
            mlp_dim=512,
            max_len=128,
        ),
        batch=64,
        seq_len=128,
        levels="ops=1-7,digits=1",
        per_level=200,
        lr=3e-3,
    ),
}
# Square matmul sizes tried for the peak (the best FLOP/s is the peak).
DEFAULT_PEAK_SIZES = (1024, 2048, 3072)


# --------------------------------------------------------------------------- peak


def peak_sizes_arg(arg: str | None, preset: str) -> tuple[int, ...]:
  """The --peak-sizes flag ("1024,2048") as sizes; the preset's default when unset."""
  if arg:
    return tuple(int(s) for s in arg.split(","))
  return (512,) if preset == "tiny" else DEFAULT_PEAK_SIZES


def matmul_peak(sizes, repeats: int = 5) -> dict:
  """Best float32 square-matmul FLOP/s over `sizes`; every size's result is kept."""
  runs = [common.matmul_peak_flops("float32", n=int(n), repeats=repeats) for n in sizes]
  best = max(runs, key=lambda r: r["flops_per_s"])
  return {
      "flops_per_s": best["flops_per_s"],
      "n": best["n"],
      "dtype": "float32",
      "median_s": best["median_s"],
      "by_n": {str(r["n"]): r["flops_per_s"] for r in runs},
  }


# --------------------------------------------------------------------------- data


def packed_batches(
    batch: int, seq_len: int, levels: str, per_level: int, num_batches: int, seed: int
) -> list[dict[str, np.ndarray]]:
  """`num_batches` distinct [batch, seq_len] rows of packed arithmetic examples.

  Problems of every level in `levels` (train split) are shuffled and packed
  first-fit (``pack_examples``); problems longer than `seq_len` are dropped.
  The example list is repeated if it packs into too few rows.
  """
  tok = CharTokenizer()
  problems = arith.generate("train", arith.parse_levels(levels), per_level, seed)
  examples = [tokenize_example(tok, p.prompt, p.solution) for p in problems]
  examples = [e for e in examples if e["inputs"].shape[0] <= seq_len]
  if not examples:
    raise ValueError(f"no {levels!r} problem fits in seq_len={seq_len}")
  rng = np.random.default_rng(seed)
  need = batch * num_batches
  pool: list = []
  rows = None
  while rows is None or rows["inputs"].shape[0] < need:
    pool += [examples[i] for i in rng.permutation(len(examples))]
    rows = pack_examples(pool, seq_len)
  return [{k: v[i * batch : (i + 1) * batch] for k, v in rows.items()} for i in range(num_batches)]


def build_model(cfg: ModelConfig, seed: int) -> Transformer:
  """`Transformer(cfg)` initialised in one jit (eager init compiles every initializer)."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(seed))))
  state = jax.jit(lambda: nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed))))()
  return nnx.merge(graphdef, state)


# --------------------------------------------------------------------------- run


def run(
    preset: str = "quick",
    *,
    batch: int | None = None,
    seq_len: int | None = None,
    levels: str | None = None,
    warmup: int = 2,
    repeats: int = 20,
    num_batches: int = 4,
    seed: int = 0,
    lr: float | None = None,
    peak: bool = True,
    peak_sizes=DEFAULT_PEAK_SIZES,
    peak_repeats: int = 5,
    model_overrides: dict | None = None,
    mesh_shape=None,
    microbatches: int = 1,
) -> dict:
  p = PRESETS[preset]
  b = p["batch"] if batch is None else batch
  t = p["seq_len"] if seq_len is None else seq_len
  levels = p["levels"] if levels is None else levels
  lr = p["lr"] if lr is None else lr
  mdict = dict(p["model"], **(model_overrides or {}))
  mdict["max_len"] = max(mdict.get("max_len", t), t)
  cfg = ModelConfig.from_dict(mdict)
  tok = CharTokenizer()
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"vocab_size={cfg.vocab_size} < tokenizer vocabulary {tok.vocab_size}")

  mesh = None if mesh_shape is None else parallel.make_mesh(tuple(mesh_shape))
  host_batches = packed_batches(b, t, levels, p["per_level"], max(1, num_batches), seed)
  batches = [parallel.shard_batch(hb, mesh) for hb in host_batches]
  real = float(np.mean([(hb["segment_ids"] > 0).mean() for hb in host_batches]))
  loss_frac = float(np.mean([hb["loss_mask"].mean() for hb in host_batches]))
  common.log(
      f"[train] preset={preset} batch={b} seq_len={t} levels={levels} "
      f"non-pad={real:.3f} loss-tokens={loss_frac:.3f} params={cfg.num_params:,}"
  )

  if mesh is None:
    model = build_model(cfg, seed)
  else:
    with parallel.use_mesh(mesh):
      model = create_model(cfg, seed, mesh)
  # AdamW + clipping as in training; a constant rate (no warm-up) so the timed
  # steps do real updates.
  trainer = Trainer(
      model, make_optimizer(lr, steps=10_000, warmup_steps=0), mesh=mesh, microbatches=microbatches
  )
  it = {"i": 0}

  def step():
    batch_ = batches[it["i"] % len(batches)]
    it["i"] += 1
    return trainer.train_step(batch_)

  def block(metrics):  # the loss and the whole new (donated) state
    jax.block_until_ready((metrics, trainer.state))

  first = common.time_fn(step, warmup=0, repeats=1, block=block)
  compile_s = first["median_s"]
  timing = common.time_fn(step, warmup=warmup, repeats=repeats, block=block)
  step_s = timing["median_s"]
  loss = float(step()["loss"])

  tokens = b * t
  flops_per_step = cfg.train_flops_per_token(t) * tokens
  result: dict[str, Any] = {
      "benchmark": "train_throughput",
      "config": {
          "preset": preset,
          "batch": b,
          "seq_len": t,
          "levels": levels,
          "model": dict(mdict),
          "optimizer": "adamw+clip (make_optimizer)",
          "warmup": warmup,
          "repeats": repeats,
          "num_batches": len(batches),
          "num_params": cfg.num_params,
          "dtype": cfg.dtype,
          "lr": lr,
          "mesh_shape": None if mesh is None else dict(mesh.shape),
          "microbatches": microbatches,
          "devices": len(jax.devices()),
      },
      "tokens_per_s": tokens / step_s,
      "non_pad_tokens_per_s": real * tokens / step_s,
      "non_pad_fraction": real,
      "loss_token_fraction": loss_frac,
      "flops_per_step": flops_per_step,
      "achieved_flops_per_s": flops_per_step / step_s,
      "matmul_peak_flops_per_s": None,
      "fraction_of_peak": None,
      "step_median_s": step_s,
      "step_min_s": timing["min_s"],
      "step_times_s": timing["times"],
      "compile_s": compile_s,
      "final_loss": loss,
  }
  common.log(
      f"[train] compile+first step {compile_s:.2f} s, median step {step_s*1e3:.1f} ms, "
      f"{tokens / step_s:,.0f} tok/s, {flops_per_step / step_s / 1e9:.2f} GFLOP/s"
  )
  if peak:
    pk = matmul_peak(peak_sizes, peak_repeats)
    result["matmul_peak_flops_per_s"] = pk["flops_per_s"]
    result["matmul_peak"] = pk
    result["fraction_of_peak"] = result["achieved_flops_per_s"] / pk["flops_per_s"]
    common.log(
        f"[peak] {pk['flops_per_s'] / 1e9:.1f} GFLOP/s at n={pk['n']} "
        f"(by n: { {k: round(v / 1e9, 1) for k, v in pk['by_n'].items()} }); "
        f"fraction {result['fraction_of_peak']:.3f}"
    )
  result["machine"] = common.machine_info()
  return result


def main(argv=None) -> dict:
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--seq-len", type=int, default=None)
  parser.add_argument("--levels", default=None, help="arith level spec, e.g. ops=1-7,digits=1")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
  parser.add_argument("--repeats", type=int, default=20, help="timed steps (median reported)")
  parser.add_argument("--num-batches", type=int, default=4, help="distinct batches cycled")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", default=None, help="compute dtype override (e.g. bfloat16)")
  parser.add_argument(
      "--no-peak", dest="peak", action="store_false", help="skip the matmul peak measurement"
  )
  parser.add_argument(
      "--peak-sizes",
      default=None,
      help="comma-separated matmul sizes; the best is the peak "
      f"(default {','.join(map(str, DEFAULT_PEAK_SIZES))}; tiny: 512)",
  )
  parser.add_argument("--peak-repeats", type=int, default=5)
  parser.add_argument(
      "--mesh",
      default=None,
      help="train on a (data,fsdp,tensor) mesh, e.g. -1,1,1 (default: no mesh)",
  )
  parser.add_argument(
      "--host-devices",
      type=int,
      default=None,
      help="split the CPU into this many XLA devices (sets "
      "--xla_force_host_platform_device_count; use with --mesh -1,1,1)",
  )
  parser.add_argument(
      "--microbatches",
      type=int,
      default=1,
      help="gradient-accumulation row groups per step (Trainer(microbatches=))",
  )
  parser.add_argument("--out", default=None, help="also write the JSON object to this path")
  args = parser.parse_args(argv)
  if args.host_devices:
    parallel.split_host_cpu(args.host_devices)
  sizes = peak_sizes_arg(args.peak_sizes, args.preset)
  overrides = {"dtype": args.dtype} if args.dtype else None
  res = run(
      args.preset,
      batch=args.batch,
      seq_len=args.seq_len,
      levels=args.levels,
      warmup=args.warmup,
      repeats=args.repeats,
      num_batches=args.num_batches,
      seed=args.seed,
      peak=args.peak,
      peak_sizes=sizes,
      peak_repeats=args.peak_repeats,
      model_overrides=overrides,
      mesh_shape=tuple(int(x) for x in args.mesh.split(",")) if args.mesh else None,
      microbatches=args.microbatches,
  )
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
