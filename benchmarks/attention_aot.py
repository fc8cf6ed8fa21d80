"""TPU ahead-of-time compile of a training step per attention implementation, from a CPU host.

Builds abstract TPU devices (`jax.experimental.topologies.get_topology_desc`, libtpu from
`jax[tpu]`), a (`data`, `fsdp`, `tensor`) mesh over them, and for each implementation the
loss + parameter gradients of a Transformer on [B,T] packed rows, jitted with shardings on
ShapeDtypeStructs, lowered and compiled (nothing runs; no TPU needed):

  PYTHONPATH=. python benchmarks/attention_aot.py [--impls reference,xla,splash]
      [--topology v5e:2x2 --mesh 1,-1,1 --batch 8 --seq 2048 --heads 16 --kv-heads 2
       --head-dim 128 --embed 2048 --mlp 5632 --layers 2 --dtype bfloat16]
      [--cache-len 8192 [--new-tokens 1]]   (instead: a step writing --new-tokens tokens
                                             into a cache of that many slots; 1: decode,
                                             more: prefill)

Prints one JSON object: the shapes, and per implementation `compile_s`, the compiled
program's memory per device (`temp_bytes`: XLA's scratch, the activations a step keeps
for its backward pass included; `argument_bytes`, `output_bytes`), `flops` from
`cost_analysis()` where the backend gives it, and `tpu_custom_calls` (Pallas kernels in
the compiled HLO: splash's forward and backward).
"""

from __future__ import annotations

import os
import sys
import time

# libtpu looks for TPU hosts and takes a machine-wide lock when it loads; an AOT compile
# needs neither (harmless values, set before jax loads libtpu).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import common  # noqa: E402
from ttc_jax import parallel  # noqa: E402
from ttc_jax.models.config import ModelConfig  # noqa: E402
from ttc_jax.models.transformer import Transformer, cache_shardings, init_cache  # noqa: E402


def topology_mesh(topology: str, shape):
  """A (`data`, `fsdp`, `tensor`) mesh over the abstract devices of a TPU `topology`."""
  from jax.experimental import topologies

  devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
  return parallel.make_mesh(shape, devices)


def compile_train_step(cfg: ModelConfig, mesh, batch: int, seq: int, packed: bool = True):
  """Compiled (loss, grads) of next-token cross-entropy on [batch, seq] rows for `mesh`."""
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, abs_state = nnx.split(abstract)
  shardings = parallel.state_shardings(abs_state, mesh)
  params = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abs_state, shardings
  )
  rows = parallel.data_sharding(mesh, 2)
  ints = jax.ShapeDtypeStruct((batch, seq), jnp.int32, sharding=rows)

  def step(params, tokens, segment_ids):
    def loss_fn(params):
      model = nnx.merge(graphdef, params)
      pos = jnp.broadcast_to(jnp.arange(seq), (batch, seq))
      logits, _ = model(tokens, pos, segment_ids=segment_ids if packed else None)
      lp = jax.nn.log_softmax(logits[:, :-1])
      nll = -jnp.take_along_axis(lp, tokens[:, 1:, None], -1)[..., 0]
      w = (segment_ids[:, 1:] > 0).astype(jnp.float32)
      return jnp.sum(nll * w) / jnp.maximum(w.sum(), 1.0)

    return jax.value_and_grad(loss_fn)(params)

  with parallel.use_mesh(mesh):
    t0 = time.perf_counter()
    lowered = jax.jit(step).lower(params, ints, ints)
    compiled = lowered.compile()
  return compiled, time.perf_counter() - t0


def compile_cached_step(cfg: ModelConfig, mesh, batch: int, cache_len: int, new_tokens: int = 1):
  """Compiled (logits, updated cache) of `new_tokens` tokens per sequence through a
  `cache_len`-slot cache: one-token decode, or prefill for new_tokens > 1."""
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, abs_state = nnx.split(abstract)
  shardings = parallel.state_shardings(abs_state, mesh)
  sds = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
  params = jax.tree.map(sds, abs_state, shardings)
  cache = jax.eval_shape(lambda: init_cache(cfg, batch, cache_len))
  cache = jax.tree.map(sds, cache, cache_shardings(cache, mesh))
  rows = parallel.data_sharding(mesh, 2)
  ints = jax.ShapeDtypeStruct((batch, new_tokens), jnp.int32, sharding=rows)

  def step(params, tokens, cache):
    pos = cache["index"][:, None] + jnp.arange(new_tokens)[None]
    return nnx.merge(graphdef, params)(tokens, pos, cache)

  with parallel.use_mesh(mesh):
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=2).lower(params, ints, cache).compile()
  return compiled, time.perf_counter() - t0


def describe(compiled, compile_s: float) -> dict:
  mem = compiled.memory_analysis()
  out = {
      "compile_s": round(compile_s, 2),
      "temp_bytes": int(mem.temp_size_in_bytes),
      "argument_bytes": int(mem.argument_size_in_bytes),
      "output_bytes": int(mem.output_size_in_bytes),
      "tpu_custom_calls": compiled.as_text().count("tpu_custom_call"),
  }
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["flops"] = float(cost.get("flops", float("nan")))
  except Exception:  # noqa: BLE001  (not every backend reports costs)
    pass
  return out


def main(argv=None) -> dict:
  import argparse

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--impls", default="reference,xla,splash")
  p.add_argument("--topology", default="v5e:2x2")
  p.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor (one -1 allowed)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=2048)
  p.add_argument("--heads", type=int, default=16)
  p.add_argument("--kv-heads", type=int, default=2)
  p.add_argument("--head-dim", type=int, default=128)
  p.add_argument("--embed", type=int, default=2048)
  p.add_argument("--mlp", type=int, default=5632)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--vocab", type=int, default=32768)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--no-packed", dest="packed", action="store_false")
  p.add_argument(
      "--cache-len",
      type=int,
      default=0,
      help="compile a step through a cache of this many slots (--batch sequences) "
      "instead of the training step",
  )
  p.add_argument("--new-tokens", type=int, default=1, help="tokens per cached step")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  mesh = topology_mesh(a.topology, [int(x) for x in a.mesh.split(",")])
  base = ModelConfig(
      vocab_size=a.vocab,
      embed_dim=a.embed,
      num_layers=a.layers,
      num_heads=a.heads,
      num_kv_heads=a.kv_heads,
      head_dim=a.head_dim,
      mlp_dim=a.mlp,
      max_len=a.cache_len or a.seq,
      param_dtype="float32",
      dtype=a.dtype,
  )
  out = {
      "benchmark": "attention_aot",
      "topology": a.topology,
      "mesh": dict(mesh.shape),
      "device_kind": mesh.devices.flat[0].device_kind,
      "config": dict(
          batch=a.batch,
          seq=a.seq,
          heads=a.heads,
          kv_heads=a.kv_heads,
          head_dim=a.head_dim,
          embed=a.embed,
          mlp=a.mlp,
          layers=a.layers,
          vocab=a.vocab,
          dtype=a.dtype,
          packed=a.packed,
          cache_len=a.cache_len,
          new_tokens=a.new_tokens,
      ),
      "impls": {},
  }
  for impl in a.impls.split(","):
    common.log(f"compiling {impl} ...")
    cfg = base.replace(attention=impl)
    if a.cache_len:
      compiled, secs = compile_cached_step(cfg, mesh, a.batch, a.cache_len, a.new_tokens)
    else:
      compiled, secs = compile_train_step(cfg, mesh, a.batch, a.seq, a.packed)
    out["impls"][impl] = describe(compiled, secs)
  common.emit(out, a.out)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
