"""How much of the training step its own matmuls explain: an upper bound on fraction_of_peak.

Runs `train_throughput.run` (the step, its counted FLOPs and the matmul peak)
and then, in the same process, the step's projection matmuls alone: for every
layer, the forward product, input gradient and weight gradient of the q, k, v,
o, gate, up and down projections, plus those of the tied vocabulary logits, at
the shapes one microbatch of the step has (tokens = batch * seq_len /
microbatches), in one jitted call (the same contractions `ops.dense` runs,
each on its own random operands so XLA cannot merge them), times the
microbatch count:

  PYTHONPATH=. python benchmarks/train_matmul_bound.py [--microbatches 8]

Prints one JSON object: train_throughput's fields plus `matmul_bound`:

  seconds_per_step     median time of the projection matmuls of one step
  flops_per_step       their FLOPs (2 * tokens * d_in * d_out per product)
  fraction_of_peak     their FLOP/s over the matmul peak of the run
  share_of_step        seconds_per_step / the step's median time
  fraction_of_peak_bound
                       the step's counted FLOPs (attention included) over
                       seconds_per_step, over the peak: the fraction_of_peak
                       the step would reach if attention, the elementwise
                       passes and the optimizer took no time at all.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import common, train_throughput
from ttc_jax.models.config import ModelConfig


def projection_shapes(cfg: ModelConfig) -> list[tuple[str, int, int]]:
  """(name, d_in, d_out) of every projection matmul of one forward pass."""
  d, hd = cfg.embed_dim, cfg.head_dim
  layer = [
      ("q", d, cfg.num_heads * hd),
      ("k", d, cfg.num_kv_heads * hd),
      ("v", d, cfg.num_kv_heads * hd),
      ("o", cfg.num_heads * hd, d),
      ("gate", d, cfg.mlp_dim),
      ("up", d, cfg.mlp_dim),
      ("down", cfg.mlp_dim, d),
  ]
  out = [(f"l{i}.{n}", a, b) for i in range(cfg.num_layers) for n, a, b in layer]
  return out + [("logits", d, cfg.vocab_size)]


def projection_matmuls(cfg: ModelConfig, tokens: int, seed: int = 0):
  """A jitted fn(operands) computing forward, input- and weight-gradient products of
  every projection at `tokens` rows, its operands, and its FLOPs."""
  shapes = projection_shapes(cfg)
  keys = jax.random.split(jax.random.key(seed), 3 * len(shapes))
  dt = jnp.dtype(cfg.dtype)
  operands = []
  for i, (_, a, b) in enumerate(shapes):
    x = jax.random.normal(keys[3 * i], (tokens, a), dt)  # activations [N, d_in]
    w = jax.random.normal(keys[3 * i + 1], (a, b), dt)  # weight [d_in, d_out]
    dy = jax.random.normal(keys[3 * i + 2], (tokens, b), dt)  # output gradient [N, d_out]
    operands.append((x, w, dy))

  @jax.jit
  def run(ops):
    return [
        (
            jnp.tensordot(x, w, 1),  # forward
            jnp.tensordot(dy, w, axes=((1,), (1,))),  # input gradient
            jnp.tensordot(x, dy, axes=((0,), (0,))),
        )  # weight gradient
        for x, w, dy in ops
    ]

  flops = sum(3 * 2.0 * tokens * a * b for _, a, b in shapes)
  return run, operands, flops


def matmul_bound(result: dict, cfg: ModelConfig, repeats: int) -> dict:
  """`matmul_bound` fields (module doc) for a `train_throughput.run` result."""
  c = result["config"]
  k = int(c["microbatches"])
  tokens = c["batch"] * c["seq_len"] // k
  run, operands, flops = projection_matmuls(cfg, tokens)
  t = common.time_fn(lambda: run(operands), warmup=1, repeats=repeats)
  per_step = t["median_s"] * k
  out: dict[str, Any] = dict(
      tokens_per_call=tokens,
      calls_per_step=k,
      call_median_s=t["median_s"],
      call_times_s=t["times"],
      seconds_per_step=per_step,
      flops_per_step=flops * k,
      flops_per_s=flops / t["median_s"],
      share_of_step=per_step / result["step_median_s"],
      fraction_of_peak=None,
      fraction_of_peak_bound=None,
  )
  peak = result.get("matmul_peak_flops_per_s")
  if peak:
    out["fraction_of_peak"] = out["flops_per_s"] / peak
    out["fraction_of_peak_bound"] = result["flops_per_step"] / per_step / peak
  return out


def main(argv=None) -> dict:
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(train_throughput.PRESETS), default="quick")
  parser.add_argument("--microbatches", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=20, help="timed steps and matmul calls")
  parser.add_argument(
      "--peak-sizes",
      default=None,
      help="comma-separated matmul sizes (default as train_throughput)",
  )
  parser.add_argument("--peak-repeats", type=int, default=5)
  parser.add_argument("--out", default=None, help="also write the JSON object to this path")
  args = parser.parse_args(argv)
  sizes = train_throughput.peak_sizes_arg(args.peak_sizes, args.preset)
  res = train_throughput.run(
      args.preset,
      repeats=args.repeats,
      peak_sizes=sizes,
      peak_repeats=args.peak_repeats,
      microbatches=args.microbatches,
  )
  res["benchmark"] = "train_matmul_bound"
  cfg = ModelConfig.from_dict(res["config"]["model"])
  res["matmul_bound"] = mb = matmul_bound(res, cfg, args.repeats)
  common.log(
      f"[matmuls] {mb['seconds_per_step'] * 1e3:.1f} ms of a "
      f"{res['step_median_s'] * 1e3:.1f} ms step ({mb['share_of_step']:.2f}); "
      f"{mb['flops_per_s'] / 1e9:.1f} GFLOP/s; bound on fraction_of_peak "
      + (
          "n/a (no peak)"
          if mb["fraction_of_peak_bound"] is None
          else f"{mb['fraction_of_peak_bound']:.3f}"
      )
  )
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
