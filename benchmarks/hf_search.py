"""PRM beam search on an imported Hugging Face-format model: questions/s and memory.

Builds a random model from a Qwen2-style config, exports it in bfloat16 as a
Hugging Face checkpoint (config.json + safetensors, `ttc_jax.models.hf.save_model`),
imports it back with `hf.load_model` (each tensor straight onto its sharding)
and runs the beam-search kernel (N beams, width M) over a batch of random
prompts with a value model of the same architecture as the PRM:

  PYTHONPATH=. python benchmarks/hf_search.py --preset 0.5b --ns 64   # an accelerator
  PYTHONPATH=. python benchmarks/hf_search.py --preset tiny --ns 4 --repeats 1

The `0.5b` preset has Qwen2.5-0.5B's shapes with untied embeddings (630M
parameters): one policy and one PRM in bfloat16 take about 2.5 GB. Prints one
JSON object: per N the median seconds per call after a compiling call,
questions/s, generations/s, generated tokens/s, the device's peak memory in
use (where the backend reports it) and the compiled kernel's memory figures.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np

from benchmarks import common
from benchmarks.search_speed import _memory
from ttc_jax.models import hf
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.reward import create_value_model
from ttc_jax.models.transformer import create_model
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import beam

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        model=dict(
            vocab_size=64,
            embed_dim=32,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=8,
            mlp_dim=64,
            max_len=96,
            qkv_bias=True,
        ),
        questions=2,
        prompt_len=16,
        max_new_tokens=32,
        rounds=4,
    ),
    "0.5b": dict(
        model=dict(
            vocab_size=151936,
            embed_dim=896,
            num_layers=24,
            num_heads=14,
            num_kv_heads=2,
            head_dim=64,
            mlp_dim=4864,
            max_len=1024,
            qkv_bias=True,
            tie_embeddings=False,
            rope_theta=1000000.0,
        ),
        questions=16,
        prompt_len=128,
        max_new_tokens=512,
        rounds=16,
    ),
}


def _peak_bytes() -> int | None:
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def run(
    preset: str = "tiny",
    *,
    ns=(64,),
    m: int = 4,
    questions: int | None = None,
    max_step_tokens: int = 64,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> dict:
  pr = PRESETS[preset]
  base = ModelConfig(**pr["model"], param_dtype="float32", dtype="float32")
  with tempfile.TemporaryDirectory() as d:
    t0 = time.perf_counter()
    hf.save_model(create_model(base, seed), os.path.join(d, "policy"), dtype="bfloat16")
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    policy = hf.load_model(os.path.join(d, "policy"), param_dtype="bfloat16", max_len=base.max_len)
    import_s = time.perf_counter() - t0
  prm = create_value_model(policy.cfg, seed + 1)
  b = questions or pr["questions"]
  rng = np.random.default_rng(seed)
  prompts = rng.integers(3, base.vocab_size, (b, pr["prompt_len"])).astype(np.int32)
  lens = np.full((b,), pr["prompt_len"], np.int32)
  kw = dict(
      max_rounds=pr["rounds"],
      max_step_tokens=max_step_tokens,
      max_new_tokens=pr["max_new_tokens"],
      eos_id=2,
      delimiter_id=base.vocab_size - 1,
  )
  params = SamplingParams.make(1.0)
  key = jax.random.key(seed)
  out: dict[str, Any] = dict(
      benchmark="hf_search",
      config=dict(preset=preset, questions=b, m=m, **kw, prompt_len=pr["prompt_len"]),
      num_params=policy.cfg.num_params,
      param_dtype="bfloat16",
      export_s=export_s,
      import_s=import_s,
      per_n={},
  )
  for n in ns:
    common.log(f"[hf_search] N={n}, M={m}, {b} questions, {policy.cfg.num_params:,} params")
    res: dict[str, Any] = {}

    def kernel():
      res["r"] = beam.beam_search(policy, prm, prompts, lens, key, n=n, m=m, params=params, **kw)
      return res["r"].scores

    compile_s, _ = common.time_first_call(kernel)
    t = common.time_fn(kernel, warmup=warmup, repeats=repeats)
    r, med = res["r"], t["median_s"]
    gens = float(np.sum(jax.device_get(r.generations)))
    toks = float(np.sum(jax.device_get(r.generated_tokens)))
    out["per_n"][str(n)] = dict(
        median_s=med,
        min_s=t["min_s"],
        compile_s=compile_s,
        questions_per_s=b / med,
        generations_per_s=gens / med,
        generated_tokens_per_s=toks / med,
        rounds=int(jax.device_get(r.rounds)),
        peak_device_bytes=_peak_bytes(),
        kernel_memory=_memory(
            beam._search.lower(
                *_lower_args(policy, prm, prompts, lens, key, params),
                n=n,
                groups=1,
                keep=n // m,
                evaluate=None,
                **kw,
            ).compile()
        ),
    )
  return common.finish(out)


def _lower_args(policy, prm, prompts, lens, key, params):
  import jax.numpy as jnp
  from flax import nnx

  (gp, sp), (gr, sr) = nnx.split(policy), nnx.split(prm)
  return (gp, gr), (sp, sr), jnp.asarray(prompts), jnp.asarray(lens), key, params, jnp.int32(0)


def main(argv=None) -> dict:
  parser = common.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
  parser.add_argument("--ns", type=int, nargs="+", default=[64])
  parser.add_argument("--m", type=int, default=4)
  parser.add_argument("--questions", type=int, default=None)
  parser.add_argument("--max-step-tokens", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  res = run(
      args.preset,
      ns=args.ns,
      m=args.m,
      questions=args.questions,
      max_step_tokens=args.max_step_tokens,
      warmup=args.warmup,
      repeats=args.repeats,
      seed=args.seed,
  )
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
