"""PRM beam search speed: the on-device kernel against a host-loop reference, same run.

For each N in `--ns` (beam width M=4) over a batch of `--questions` prompts:
the jitted kernel (`ttc_jax.search.beam.beam_search`: one jit over rounds
and tokens, caches reordered on device) and the host-loop reference
(`ttc_jax.search.reference`: one Python iteration per round, every prefix
re-prefilled and the PRM re-reading full prefixes, like peers that drive an
inference server), timed call by call in alternation, medians after one
untimed compiling call:

  PYTHONPATH=. python benchmarks/search_speed.py                 # quick models, N=16,64,256
  PYTHONPATH=. python benchmarks/search_speed.py --preset tiny --ns 4 --repeats 1

Random-init models: steps end at a sampled newline/EOS or after
`--max-step-tokens`, and both implementations do the same work (same RNG
stream). Prints one JSON object: per N the kernel and reference medians,
`speedup`, seconds per generation (question x beam), achieved FLOP/s (policy +
PRM forward FLOPs from the kernel's own budget count) and its fraction of a
matmul peak measured in this run, and the compiled kernel's memory figures.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.reward import create_value_model
from ttc_jax.models.transformer import create_model
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import beam, reference

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(model=dict(vocab_size=32, embed_dim=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=64),
                 questions=2, ns=(4, 8), prompt_len=8, max_new_tokens=24, rounds=3),
    # The quick-config policy and PRM sizes (configs/arith_quick.py).
    "quick": dict(model=dict(vocab_size=32, embed_dim=128, num_layers=4, num_heads=4,
                             num_kv_heads=2, head_dim=32, mlp_dim=512, max_len=160),
                  questions=8, ns=(16, 64, 256), prompt_len=16, max_new_tokens=64, rounds=6),
}


def _memory(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend reports it
    return {}
  if m is None:
    return {}
  return {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                         "temp_size_in_bytes", "generated_code_size_in_bytes")
          if hasattr(m, k)}


def run(preset: str = "quick", *, ns=None, questions: int | None = None, m: int = 4,
        max_step_tokens: int = 16, warmup: int = 1, repeats: int = 3, seed: int = 0,
        peak: bool = True, peak_n: int | None = None, skip_reference_above: int = 1 << 30
        ) -> dict:
  pr = PRESETS[preset]
  cfg = ModelConfig(**pr["model"])
  policy = create_model(cfg, seed)
  prm = create_value_model(cfg, seed + 1)
  b = questions or pr["questions"]
  rng = np.random.default_rng(seed)
  prompts = rng.integers(3, cfg.vocab_size, (b, pr["prompt_len"])).astype(np.int32)
  prompts[:, 0] = 1
  lens = np.full((b,), pr["prompt_len"], np.int32)
  params = SamplingParams.make(1.0)
  kw = dict(max_rounds=pr["rounds"], max_step_tokens=max_step_tokens,
            max_new_tokens=pr["max_new_tokens"], eos_id=2, delimiter_id=27)
  key = jax.random.key(seed)
  out: dict[str, Any] = dict(benchmark="search_speed", config=dict(
      preset=preset, questions=b, m=m, prompt_len=pr["prompt_len"], **kw,
      model=dataclasses.asdict(cfg)), per_n={})
  pk = common.matmul_peak_flops("float32", n=peak_n) if peak else None
  for n in ns or pr["ns"]:
    common.log(f"[search_speed] N={n}, M={m}, {b} questions")
    res: dict[str, Any] = {}

    def kernel():
      r = beam.beam_search(policy, prm, prompts, lens, key, n=n, m=m, params=params, **kw)
      res["kernel"] = r
      return r.scores

    def ref():
      r = reference.reference_search(policy, prm, prompts, lens, key, n=n, groups=1,
                                     keep=n // m, params=params, **kw)
      res["ref"] = r
      return r

    fns = {"kernel": kernel}
    if n <= skip_reference_above:
      fns["reference"] = ref
    compile_s, _ = common.time_first_call(kernel)
    t = common.time_interleaved(fns, warmup=warmup, repeats=repeats)
    r = res["kernel"]
    flops = float(np.sum(jax.device_get(r.policy_flops)) + np.sum(jax.device_get(r.prm_flops)))
    gens = float(np.sum(jax.device_get(r.generations)))
    med = t["kernel"]["median_s"]
    row = dict(kernel_median_s=med, kernel_min_s=t["kernel"]["min_s"],
               kernel_compile_s=compile_s, seconds_per_generation=med / gens,
               generations=gens, rounds=int(jax.device_get(r.rounds)),
               generated_tokens=float(np.sum(jax.device_get(r.generated_tokens))),
               flops=flops, flops_per_s=flops / med)
    if "reference" in t:
      row.update(reference_median_s=t["reference"]["median_s"],
                 speedup=t["reference"]["median_s"] / med,
                 same_scores=bool(np.allclose(np.asarray(res["ref"]["scores"]),
                                              np.asarray(jax.device_get(r.scores)), atol=1e-4)))
    if pk:
      row["fraction_of_peak"] = row["flops_per_s"] / pk["flops_per_s"]
    (gp, sp), (gr, sr) = nnx.split(policy), nnx.split(prm)
    compiled = beam._search.lower((gp, gr), (sp, sr), jnp.asarray(prompts), jnp.asarray(lens),
                                  key, params, jnp.int32(0), n=n, groups=1, keep=n // m,
                                  evaluate=None, **kw).compile()
    row["kernel_memory"] = _memory(compiled)
    out["per_n"][str(n)] = row
  if pk:
    out["matmul_peak"] = pk
  return common.finish(out)


def main(argv=None) -> dict:
  parser = common.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
  parser.add_argument("--ns", type=int, nargs="+", default=None)
  parser.add_argument("--questions", type=int, default=None)
  parser.add_argument("--m", type=int, default=4)
  parser.add_argument("--max-step-tokens", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--skip-reference-above", type=int, default=1 << 30,
                      help="time only the kernel for larger N (the reference is slow)")
  args = parser.parse_args(argv)
  res = run(args.preset, ns=args.ns, questions=args.questions, m=args.m,
            max_step_tokens=args.max_step_tokens, warmup=args.warmup, repeats=args.repeats,
            seed=args.seed, peak=args.peak, peak_n=args.peak_n,
            skip_reference_above=args.skip_reference_above)
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
