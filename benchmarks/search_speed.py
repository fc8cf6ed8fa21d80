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

  PYTHONPATH=. python benchmarks/search_speed.py --workdir runs/arith_quick  # trained models

Random-init models (the presets): steps end at a sampled newline/EOS or after
`--max-step-tokens`; most beams write 16 tokens without a newline in the first
round and are cut off, so later rounds decode mostly finished rows. With
`--workdir` (a finished main job) the benchmark searches with that run's trained
policy and PRM on its held-out questions, spread over the difficulty levels,
with the run's own search settings (`config.search`: rounds, step and solution
lengths, temperature), i.e. what the `eval_search` stage does. Either way both
implementations do the same work (same RNG stream). The kernel is also timed
without row compaction (`compact_levels=0`: every round on all B*N rows,
finished or not): `compaction_speedup`. Prints one JSON object: per N the
kernel and reference medians, `speedup`, seconds per generation (question x
beam), achieved FLOP/s (policy + PRM forward FLOPs from the kernel's own budget
count) and its fraction of a matmul peak measured in this run, and the compiled
kernel's memory figures.
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
from ttc_jax.search import beam, reference, sweep
from ttc_jax.search import state as search_state

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
            max_len=64,
        ),
        questions=2,
        ns=(4, 8),
        prompt_len=8,
        max_new_tokens=24,
        rounds=3,
    ),
    # The quick-config policy and PRM sizes (configs/arith_quick.py).
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
        questions=8,
        ns=(16, 64, 256),
        prompt_len=16,
        max_new_tokens=64,
        rounds=6,
    ),
}


def _memory(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend reports it
    return {}
  if m is None:
    return {}
  return {
      k: int(getattr(m, k))
      for k in (
          "argument_size_in_bytes",
          "output_size_in_bytes",
          "temp_size_in_bytes",
          "generated_code_size_in_bytes",
      )
      if hasattr(m, k)
  }


def _random_setup(preset: str, questions: int | None, max_step_tokens: int, seed: int):
  """Random-init policy and PRM of a preset, random prompts, temperature 1."""
  pr = PRESETS[preset]
  cfg = ModelConfig(**pr["model"])
  b = questions or pr["questions"]
  rng = np.random.default_rng(seed)
  prompts = rng.integers(3, cfg.vocab_size, (b, pr["prompt_len"])).astype(np.int32)
  prompts[:, 0] = 1
  kw = dict(
      max_rounds=pr["rounds"],
      max_step_tokens=max_step_tokens,
      max_new_tokens=pr["max_new_tokens"],
      eos_id=2,
      delimiter_id=27,
      params=SamplingParams.make(1.0),
  )
  return (
      create_model(cfg, seed),
      create_value_model(cfg, seed + 1),
      prompts,
      np.full((b,), pr["prompt_len"], np.int32),
      kw,
      dict(preset=preset, trained=False),
  )


def _trained_setup(workdir: str, questions: int | None):
  """A finished run's policy and PRM, its held-out questions round-robin over levels
  (easiest first), prompts and search settings as its `eval_search` stage uses them."""
  from ttc_jax.prm import train as prm_train

  pipe = common.load_run(workdir)
  sc, tok = pipe.cfg.search, pipe.tokenizer
  b = questions or 8
  per_level = -(-b // len(pipe.levels))
  probs = pipe.problems("test", per_level)
  by_level = [probs[i::per_level] for i in range(per_level)]  # one of each level per row
  chosen = [p for row in by_level for p in row][:b]
  policy = pipe.load_policy()
  prm = prm_train.load_value_model(
      pipe.path("prm", "model"), pipe.model_cfg, tok, kind="prm", seed=pipe.cfg.seed
  )
  texts = [p["prompt"] for p in chosen]
  plen, kw = sweep.kernel_args(
      policy,
      tok,
      texts,
      max_rounds=int(sc.max_rounds),
      max_step_tokens=int(sc.max_step_tokens),
      max_new_tokens=int(sc.max_new_tokens),
      temperature=float(sc.temperature),
      top_k=int(sc.top_k),
      top_p=float(sc.top_p),
  )
  kw.pop("compact_levels")  # the benchmark times both settings itself
  prompts, lens = tok.encode_batch(texts, plen, add_bos=True)
  return (
      policy,
      prm,
      np.asarray(prompts),
      np.asarray(lens),
      kw,
      dict(
          workdir=workdir,
          trained=True,
          levels=[p["level"] for p in chosen],
          temperature=float(sc.temperature),
      ),
  )


def run(
    preset: str = "quick",
    *,
    ns=None,
    questions: int | None = None,
    m: int = 4,
    max_step_tokens: int = 16,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    peak: bool = True,
    peak_n: int | None = None,
    skip_reference_above: int = 1 << 30,
    workdir: str | None = None,
    compare_compaction: bool = True,
) -> dict:
  if workdir:
    policy, prm, prompts, lens, kw, desc = _trained_setup(workdir, questions)
  else:
    policy, prm, prompts, lens, kw, desc = _random_setup(preset, questions, max_step_tokens, seed)
  params = kw.pop("params")
  # the host-loop reference holds no KV caches: their layout and dtype are the kernel's alone
  ref_kw = {k: v for k, v in kw.items() if k not in ("share_prefix", "cache_dtype")}
  b = prompts.shape[0]
  key = jax.random.key(seed)
  out: dict[str, Any] = dict(
      benchmark="search_speed",
      config=dict(
          desc,
          questions=b,
          m=m,
          prompt_len=int(prompts.shape[1]),
          **kw,
          model=dataclasses.asdict(policy.cfg),
      ),
      per_n={},
  )
  pr = PRESETS[preset]
  pk = common.matmul_peak_flops("float32", n=peak_n) if peak else None
  for n in ns or pr["ns"]:
    common.log(f"[search_speed] N={n}, M={m}, {b} questions")
    res: dict[str, Any] = {}

    def kernel():
      r = beam.beam_search(policy, prm, prompts, lens, key, n=n, m=m, params=params, **kw)
      res["kernel"] = r
      return r.scores

    def ref():
      r = reference.reference_search(
          policy, prm, prompts, lens, key, n=n, groups=1, keep=n // m, params=params, **ref_kw
      )
      res["ref"] = r
      return r

    def uncompacted():  # every round on all rows (compact_levels=0)
      return beam.search(
          policy,
          prm,
          prompts,
          lens,
          key,
          n=n,
          groups=1,
          keep=n // m,
          params=params,
          compact_levels=0,
          **kw,
      ).scores

    fns = {"kernel": kernel}
    if compare_compaction:
      fns["uncompacted"] = uncompacted
    if n <= skip_reference_above:
      fns["reference"] = ref
    compile_s, _ = common.time_first_call(kernel)
    t = common.time_interleaved(fns, warmup=warmup, repeats=repeats)
    r = res["kernel"]
    flops = float(np.sum(jax.device_get(r.policy_flops)) + np.sum(jax.device_get(r.prm_flops)))
    gens = float(np.sum(jax.device_get(r.generations)))
    med = t["kernel"]["median_s"]
    row = dict(
        kernel_median_s=med,
        kernel_min_s=t["kernel"]["min_s"],
        kernel_compile_s=compile_s,
        seconds_per_generation=med / gens,
        generations=gens,
        rounds=int(jax.device_get(r.rounds)),
        generated_tokens=float(np.sum(jax.device_get(r.generated_tokens))),
        flops=flops,
        flops_per_s=flops / med,
    )
    if "reference" in t:
      row.update(
          reference_median_s=t["reference"]["median_s"],
          speedup=t["reference"]["median_s"] / med,
          same_scores=bool(
              np.allclose(
                  np.asarray(res["ref"]["scores"]), np.asarray(jax.device_get(r.scores)), atol=1e-4
              )
          ),
      )
    if "uncompacted" in t:
      row.update(
          uncompacted_median_s=t["uncompacted"]["median_s"],
          compaction_speedup=t["uncompacted"]["median_s"] / med,
      )
    if pk:
      row["fraction_of_peak"] = row["flops_per_s"] / pk["flops_per_s"]
    (gp, sp), (gr, sr) = nnx.split(policy), nnx.split(prm)
    # the jitted kernel takes the storage dtype resolved, as beam.search passes it
    storage = search_state.cache_storage_dtype(kw.get("cache_dtype"), policy.cfg, prm.cfg)
    kernel_kw = dict(kw, cache_dtype=storage)
    compiled = beam._search.lower(
        (gp, gr),
        (sp, sr),
        jnp.asarray(prompts),
        jnp.asarray(lens),
        key,
        params,
        jnp.int32(0),
        n=n,
        groups=1,
        keep=n // m,
        evaluate=None,
        compact_levels=beam.COMPACT_LEVELS,
        **kernel_kw,
    ).compile()
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
  parser.add_argument(
      "--no-compaction-comparison",
      dest="compare_compaction",
      action="store_false",
      help="skip timing the kernel without row compaction (compact_levels=0)",
  )
  parser.add_argument(
      "--workdir",
      default=None,
      help="a finished main job: its trained policy, PRM, held-out questions "
      "and search settings instead of a random-init preset",
  )
  parser.add_argument(
      "--skip-reference-above",
      type=int,
      default=1 << 30,
      help="time only the kernel for larger N (the reference is slow)",
  )
  args = parser.parse_args(argv)
  res = run(
      args.preset,
      ns=args.ns,
      questions=args.questions,
      m=args.m,
      max_step_tokens=args.max_step_tokens,
      warmup=args.warmup,
      repeats=args.repeats,
      seed=args.seed,
      peak=args.peak,
      peak_n=args.peak_n,
      skip_reference_above=args.skip_reference_above,
      workdir=args.workdir,
      compare_compaction=args.compare_compaction,
  )
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
