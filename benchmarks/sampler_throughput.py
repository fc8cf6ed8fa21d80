"""Sampler throughput: ttc_jax `generate` vs Hugging Face `generate` on the same Llama.

Both sides run the SAME weights (our random init copied into
`transformers.LlamaForCausalLM`), the same prompts, batch size, prompt length
and number of new tokens, greedily, with EOS never produced, in one process:

  PYTHONPATH=. python benchmarks/sampler_throughput.py              # quick policy model
  PYTHONPATH=. python benchmarks/sampler_throughput.py --preset tiny --repeats 1

Prints one JSON object on stdout (progress goes to stderr). Tokens/s count
generated tokens only: batch * new_tokens / median wall time of one full
`generate` call (prefill included). Our compile time is reported separately
and excluded from the median. `greedy_match` is the fraction of generated
tokens that agree; with identical float32 weights it should be 1.0, and a
lower value points at a mismatch between the two implementations.

Both sides use every core: HF through torch's threads (`--hf-threads`, default
os.cpu_count()), ours as a data-parallel mesh over one XLA device per core
(`--host-devices`, default one per core; on an accelerator the CPU split does
nothing and ours runs on the accelerator's devices). Ours is also timed on one
device in the same run (`speedup_one_device`).

The two sides are timed call by call in alternation (`--no-interleave` to
time one after the other). Measure on an otherwise idle machine: when other
processes compete for the cores, torch's OpenMP threads slow down far more
than XLA's (seen on 2 cores: HF 8-80x slower, ours ~2x), so the JSON carries a
`warning` when the 1-minute load average exceeds half the CPU count.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from ttc_jax import parallel
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import Transformer
from ttc_jax.sampling import generate

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
        ),
        batch=2,
        prompt_len=4,
        new_tokens=8,
    ),
    "small": dict(
        model=dict(
            vocab_size=32,
            embed_dim=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            mlp_dim=256,
        ),
        batch=8,
        prompt_len=8,
        new_tokens=16,
    ),
    # The quick-config policy model (DESIGN.md §7): the default.
    "quick": dict(
        model=dict(
            vocab_size=32,
            embed_dim=128,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
            mlp_dim=512,
        ),
        batch=64,
        prompt_len=16,
        new_tokens=64,
    ),
    # A larger model with a real-sized vocabulary (matmul-bound rather than overhead-bound).
    "medium": dict(
        model=dict(
            vocab_size=4096,
            embed_dim=512,
            num_layers=8,
            num_heads=8,
            num_kv_heads=4,
            head_dim=64,
            mlp_dim=1536,
        ),
        batch=16,
        prompt_len=64,
        new_tokens=64,
    ),
}


# --------------------------------------------------------------------------- weights


def build_model(cfg: ModelConfig, seed: int) -> Transformer:
  """`create_model(cfg, seed)` built in one jit (eager init compiles every initializer:
  ~7 s on a 2-core CPU even for the tiny preset)."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(seed))))
  state = jax.jit(lambda: nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed))))()
  return nnx.merge(graphdef, state)


def _np(v) -> np.ndarray:
  return np.asarray(jax.device_get(v[...]), np.float32)


def perturb_norms(model: Transformer, seed: int = 1, scale: float = 0.1) -> None:
  """Sets every RMSNorm scale to 1 + scale * N(0,1), so the weight copy of norms is tested."""
  rng = np.random.default_rng(seed)
  norms = [model.final_norm] + [n for b in model.blocks for n in (b.attn_norm, b.mlp_norm)]
  for n in norms:
    shape = n.scale[...].shape
    n.scale[...] = jnp.asarray(1.0 + scale * rng.standard_normal(shape), n.scale[...].dtype)


def hf_llama_from_ours(model: Transformer):
  """A `transformers.LlamaForCausalLM` (float32, eval mode) holding our weights.

  Layouts: q/k/v [d, H, Dh] -> *_proj.weight [H*Dh, d] (head-major, as HF
  views the projection as [.., H, Dh]); o [H, Dh, d] -> o_proj.weight
  [d, H*Dh]; gate/up [d, F] -> [F, d]; down [F, d] -> [d, F]; embed [V, d]
  unchanged; RMSNorm scales unchanged; untied lm_head [d, V] -> [V, d].
  """
  import torch  # noqa: PLC0415
  from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

  cfg: ModelConfig = model.cfg
  if cfg.qkv_bias:
    raise ValueError("qkv_bias models are not Llama; use a Qwen2 config to compare")
  hf_cfg = LlamaConfig(
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.embed_dim,
      intermediate_size=cfg.mlp_dim,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim,
      hidden_act="silu",
      max_position_embeddings=cfg.max_len,
      rms_norm_eps=cfg.norm_eps,
      rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
      tie_word_embeddings=cfg.tie_embeddings,
      attention_bias=False,
      mlp_bias=False,
      bos_token_id=None,
      eos_token_id=None,
      pad_token_id=0,
      use_cache=True,
      dtype="float32",
  )
  hf = LlamaForCausalLM(hf_cfg).to(torch.float32).eval()

  d, h, kv, hd = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  sd = {
      "model.embed_tokens.weight": _np(model.embed),
      "model.norm.weight": _np(model.final_norm.scale),
  }
  for i, blk in enumerate(model.blocks):
    p = f"model.layers.{i}."
    a, m = blk.attn, blk.mlp
    sd[p + "self_attn.q_proj.weight"] = _np(a.q).reshape(d, h * hd).T
    sd[p + "self_attn.k_proj.weight"] = _np(a.k).reshape(d, kv * hd).T
    sd[p + "self_attn.v_proj.weight"] = _np(a.v).reshape(d, kv * hd).T
    sd[p + "self_attn.o_proj.weight"] = _np(a.o).reshape(h * hd, d).T
    sd[p + "mlp.gate_proj.weight"] = _np(m.gate).T
    sd[p + "mlp.up_proj.weight"] = _np(m.up).T
    sd[p + "mlp.down_proj.weight"] = _np(m.down).T
    sd[p + "input_layernorm.weight"] = _np(blk.attn_norm.scale)
    sd[p + "post_attention_layernorm.weight"] = _np(blk.mlp_norm.scale)
  if not cfg.tie_embeddings:
    sd["lm_head.weight"] = _np(model.lm_head).T
  tensors = {
      k: torch.from_numpy(np.array(v, np.float32, copy=True, order="C")) for k, v in sd.items()
  }
  missing, unexpected = hf.load_state_dict(tensors, strict=False)
  # With tied embeddings lm_head.weight is the embedding itself and may be listed as missing.
  missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
  if missing or unexpected:
    raise RuntimeError(f"weight copy: missing={missing} unexpected={unexpected}")
  if cfg.tie_embeddings:
    hf.tie_weights()
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr() or torch.equal(
        hf.lm_head.weight, hf.model.embed_tokens.weight
    )
  # No EOS: generation always runs to max_new_tokens.
  gc = hf.generation_config
  gc.eos_token_id, gc.bos_token_id, gc.pad_token_id = None, None, 0
  return hf


# --------------------------------------------------------------------------- runs


def decode_flops(cfg: ModelConfig, batch: int, prompt_len: int, new_tokens: int) -> float:
  """Forward FLOPs of one generate call (prefill of P-1 tokens + new_tokens decode steps)."""
  prefill = sum(cfg.forward_flops_per_token(t + 1) for t in range(prompt_len - 1))
  decode = sum(cfg.forward_flops_per_token(prompt_len + t) for t in range(new_tokens))
  return batch * (prefill + decode)


def _loadavg() -> float | None:
  try:
    return round(os.getloadavg()[0], 2)
  except (AttributeError, OSError):
    return None


def run(
    preset: str = "quick",
    *,
    batch: int | None = None,
    prompt_len: int | None = None,
    new_tokens: int | None = None,
    warmup: int = 1,
    repeats: int = 5,
    seed: int = 0,
    hf_threads: int | None = None,
    peak: bool = True,
    peak_n: int | None = None,
    skip_hf: bool = False,
    interleave: bool = True,
    model_overrides: dict | None = None,
    devices: int | None = None,
) -> dict:
  """Runs both samplers and returns the result dict (see the module docstring).

  `devices`: how many of `jax.devices()` our sampler runs on (default: all, or the
  most that divide the batch), as a data-parallel (devices, 1, 1) mesh with the
  batch sharded and the weights replicated. With more than one, our sampler is
  also timed on one device in the same interleaved run (`ours_one_device_*`,
  `speedup_one_device`, `mesh_speedup`).
  """
  spec = PRESETS[preset]
  b = spec["batch"] if batch is None else batch
  p = spec["prompt_len"] if prompt_len is None else prompt_len
  m = spec["new_tokens"] if new_tokens is None else new_tokens
  mdims = dict(spec["model"], **(model_overrides or {}))
  cfg = ModelConfig(**dict(mdims, max_len=max(p + m, 16)))
  eos_id = cfg.vocab_size  # outside the vocabulary: never sampled

  n_dev = devices
  if n_dev is None:  # every device, or the most that divide the batch
    n_dev = max(n for n in range(1, len(jax.devices()) + 1) if b % n == 0)
  if not 1 <= n_dev <= len(jax.devices()) or b % n_dev:
    raise ValueError(
        f"devices={n_dev}: needs 1..{len(jax.devices())} devices dividing " f"batch {b}"
    )
  model = build_model(cfg, seed)
  perturb_norms(model, seed=seed + 1)
  prompts_np = np.random.default_rng(seed).integers(0, cfg.vocab_size, (b, p), dtype=np.int64)
  key = jax.random.key(seed)

  def sampler(mesh):
    """Our generate call on `mesh` (None: the default device)."""
    m_ = model
    prompts = jnp.asarray(prompts_np, jnp.int32)
    lengths = jnp.full((b,), p, jnp.int32)
    if mesh is not None:
      m_ = nnx.merge(*nnx.split(model))
      parallel.shard_module(m_, mesh)
      prompts = jax.device_put(prompts, parallel.data_sharding(mesh, 2))
      lengths = jax.device_put(lengths, parallel.data_sharding(mesh, 1))

    def call():
      with parallel.use_mesh(mesh):
        return generate(
            m_,
            prompts,
            lengths,
            key,
            num_samples=1,
            max_new_tokens=m,
            eos_id=eos_id,
            temperature=0.0,
        )

    return call

  mesh = parallel.make_mesh((n_dev, 1, 1), jax.devices()[:n_dev]) if n_dev > 1 else None
  ours = sampler(mesh)
  common.log(f"[ours] compiling ({preset}: B={b} P={p} M={m}, {n_dev} device(s))")
  load_before = _loadavg()
  first_s, out = common.time_first_call(ours)
  ours_tokens = np.asarray(out.tokens[:, 0])  # [B, M]
  if not (np.asarray(out.lengths) == m).all():
    raise RuntimeError(f"our sampler stopped early: lengths {np.asarray(out.lengths)}")
  fns = {"ours": ours}
  blocks = {}
  if n_dev > 1:
    one = sampler(None)
    one_tokens = np.asarray(one().tokens[:, 0])
    if not np.array_equal(one_tokens, ours_tokens):
      raise RuntimeError("our sampler differs between one device and the mesh")
    fns["ours_one_device"] = one

  hf = threads = None
  if not skip_hf:
    import torch  # noqa: PLC0415

    threads = hf_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    hf = hf_llama_from_ours(model)
    ids = torch.from_numpy(prompts_np)
    attn = torch.ones_like(ids)

    def hf_gen():
      with torch.inference_mode():
        return hf.generate(
            input_ids=ids,
            attention_mask=attn,
            do_sample=False,
            max_new_tokens=m,
            min_new_tokens=m,
            eos_token_id=None,
            pad_token_id=0,
            use_cache=True,
            num_beams=1,
        )

    common.log(
        f"[hf] torch threads={threads}, attn_implementation=" f"{hf.config._attn_implementation}"
    )
    fns["hf"] = hf_gen
    blocks["hf"] = lambda x: x  # torch CPU ops are synchronous

  # Alternate ours/HF call by call, so background load on a shared machine
  # hits both sides alike.
  common.log(
      f"[timing] warmup={warmup} repeats={repeats}, "
      f"{'interleaved' if interleave else 'one side after the other'}"
  )
  if interleave:
    tm = common.time_interleaved(fns, warmup=warmup, repeats=repeats, blocks=blocks)
  else:
    tm = {
        k: common.time_fn(fn, warmup=warmup, repeats=repeats, block=blocks.get(k))
        for k, fn in fns.items()
    }
  ours_t = tm["ours"]
  ours_tps = b * m / ours_t["median_s"]
  common.log(
      f"[ours] first call {first_s:.2f}s, median {ours_t['median_s']*1e3:.1f} ms, "
      f"{ours_tps:,.0f} tok/s"
  )

  result = {
      "benchmark": "sampler_throughput",
      "preset": preset,
      "config": {
          "model": dataclasses.asdict(cfg),
          "batch": b,
          "prompt_len": p,
          "new_tokens": m,
          "greedy": True,
          "dtype": "float32",
          "warmup": warmup,
          "repeats": repeats,
          "seed": seed,
          "interleaved": interleave,
          "norm_scales_perturbed": True,
          "ours_devices": n_dev,
          "ours_mesh": None if mesh is None else dict(mesh.shape),
          "backend": jax.default_backend(),
      },
      "ours_tokens_per_s": ours_tps,
      "ours_median_s": ours_t["median_s"],
      "ours_min_s": ours_t["min_s"],
      "ours_times_s": ours_t["times"],
      "compile_s": max(first_s - ours_t["median_s"], 0.0),
      "first_call_s": first_s,
  }
  flops = decode_flops(cfg, b, p, m)
  result["ours_flops_per_s"] = flops / ours_t["median_s"]
  if "ours_one_device" in tm:
    one_t = tm["ours_one_device"]
    result.update(
        {
            "ours_one_device_tokens_per_s": b * m / one_t["median_s"],
            "ours_one_device_median_s": one_t["median_s"],
            "ours_one_device_times_s": one_t["times"],
            "mesh_speedup": one_t["median_s"] / ours_t["median_s"],
        }
    )
    common.log(f"[ours, one device] median {one_t['median_s']*1e3:.1f} ms")

  if hf is not None:
    hf_t = tm["hf"]
    hf_out = fns["hf"]().numpy()
    if hf_out.shape != (b, p + m):
      raise RuntimeError(f"HF generated shape {hf_out.shape}, expected {(b, p + m)}")
    hf_tokens = hf_out[:, p:]
    hf_tps = b * m / hf_t["median_s"]
    common.log(f"[hf] median {hf_t['median_s']*1e3:.1f} ms, {hf_tps:,.0f} tok/s")
    match = float((hf_tokens == ours_tokens).mean())
    first_div = [int(np.argmax(r)) if r.any() else -1 for r in hf_tokens != ours_tokens]
    result.update(
        {
            "hf_tokens_per_s": hf_tps,
            "hf_median_s": hf_t["median_s"],
            "hf_min_s": hf_t["min_s"],
            "hf_times_s": hf_t["times"],
            "speedup": ours_tps / hf_tps,
            **(
                {"speedup_one_device": result["ours_one_device_tokens_per_s"] / hf_tps}
                if "ours_one_device_tokens_per_s" in result
                else {}
            ),
            # Ratio of best-case times: less sensitive to background load.
            "speedup_min_times": hf_t["min_s"] / ours_t["min_s"],
            "greedy_match": match,
            # Per-row first disagreeing position (-1: identical): a divergence
            # early and everywhere means a mapping bug, late and rare means fp noise.
            "greedy_first_divergence": first_div,
            "hf_attn_implementation": hf.config._attn_implementation,
            "hf_torch_threads": threads,
        }
    )
  result["load_avg_1min_before_after"] = [load_before, _loadavg()]
  ncpu = os.cpu_count() or 1
  if any(l is not None and l > 0.5 * ncpu for l in result["load_avg_1min_before_after"]):
    # Other processes competed for the cores: torch's OpenMP threads degrade
    # far more than XLA's under oversubscription (seen: HF 10x slower, ours 2x),
    # so the ratio is not a fair comparison.
    result["warning"] = (
        f"machine busy (1-min load {result['load_avg_1min_before_after']} "
        f"on {ncpu} cpus): timings, and the speedup especially, are unreliable"
    )
    common.log("[warning] " + result["warning"])

  if peak:
    pk = common.matmul_peak_flops("float32", n=peak_n)
    result["matmul_peak"] = pk
    result["ours_fraction_of_peak"] = result["ours_flops_per_s"] / pk["flops_per_s"]
  result["machine"] = common.machine_info()
  return result


def main(argv=None) -> dict:
  parser = common.base_parser(__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--prompt-len", type=int, default=None)
  parser.add_argument("--new-tokens", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--hf-threads", type=int, default=None, help="torch threads (default: os.cpu_count())"
  )
  parser.add_argument("--skip-hf", action="store_true", help="time our sampler only")
  parser.add_argument(
      "--host-devices",
      type=int,
      default=None,
      help="split the CPU into this many XLA devices (default: one per "
      "core; 1 = one device using every core)",
  )
  parser.add_argument(
      "--devices",
      type=int,
      default=None,
      help="devices our sampler runs on (default: all, or the most " "that divide the batch)",
  )
  parser.add_argument(
      "--no-interleave",
      dest="interleave",
      action="store_false",
      help="time all of ours, then all of HF (default: alternate calls)",
  )
  args = parser.parse_args(argv)
  parallel.split_host_cpu(args.host_devices)
  res = run(
      args.preset,
      batch=args.batch,
      prompt_len=args.prompt_len,
      new_tokens=args.new_tokens,
      warmup=args.warmup,
      repeats=args.repeats,
      seed=args.seed,
      hf_threads=args.hf_threads,
      peak=args.peak,
      peak_n=args.peak_n,
      skip_hf=args.skip_hf,
      interleave=args.interleave,
      devices=args.devices,
  )
  common.emit(res, args.out)
  return res


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
