"""One process of the multi-process CPU test (tests/parallel/test_multiprocess.py).

  python tests/mp_worker.py --out loss.json [--mesh 2,2,1]

Launched as N processes with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID set (what scripts/launch_gpu.sh exports), so the repo's own
`parallel.maybe_initialize_distributed()` joins them; each process gets its
local CPU devices from XLA_FLAGS=--xla_force_host_platform_device_count.
A global (data, fsdp, tensor) mesh spans every process's devices; each
process feeds only its rows of one fixed batch; two Trainer steps run and
process 0 writes the two losses. `run_steps(mesh=None)` is the single-process
reference the test calls in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))  # the repository root


def tiny_model_config():
  from ttc_jax.models.config import ModelConfig
  # tests/conftest.py tiny_config, with head counts that a tensor axis of 2 divides
  return ModelConfig(
      vocab_size=32,
      embed_dim=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=8,
      mlp_dim=64,
      max_len=48,
  )


def fixed_batch(b: int = 8, t: int = 16, seed: int = 0) -> dict:
  """The same packed LM batch in every process (two segments per row)."""
  rng = np.random.default_rng(seed)
  x = rng.integers(3, 32, (b, t)).astype(np.int32)
  seg = np.ones((b, t), np.int32)
  seg[:, t // 2 :] = 2
  pos = np.concatenate([np.arange(t // 2), np.arange(t - t // 2)])[None].repeat(b, 0)
  return dict(
      inputs=x,
      targets=np.roll(x, -1, 1),
      positions=pos.astype(np.int32),
      segment_ids=seg,
      loss_mask=(rng.random((b, t)) > 0.3).astype(np.float32),
  )


def local_rows(mesh, global_batch: int) -> slice:
  """The rows of the global batch held by this process's devices (batch over data, fsdp)."""
  from ttc_jax import parallel

  sharding = parallel.data_sharding(mesh, ndim=1)
  idx = sharding.addressable_devices_indices_map((global_batch,)).values()
  starts = sorted({(s[0].start or 0) for s in idx})
  stops = sorted({(s[0].stop if s[0].stop is not None else global_batch) for s in idx})
  lo, hi = starts[0], stops[-1]
  # make_array_from_process_local_data needs one contiguous block per process
  rows = sum(b - a for a, b in {((s[0].start or 0), s[0].stop or global_batch) for s in idx})
  assert rows == hi - lo, f"process rows are not contiguous: {sorted(idx, key=str)}"
  return slice(lo, hi)


def run_steps(mesh=None, steps: int = 2) -> list[float]:
  """`steps` Trainer steps of the tiny model on the fixed batch; returns the losses."""
  import jax
  from ttc_jax import parallel
  from ttc_jax.models.transformer import create_model
  from ttc_jax.train.optim import make_optimizer
  from ttc_jax.train.trainer import Trainer

  batch = fixed_batch()
  if mesh is not None and jax.process_count() > 1:
    rows = local_rows(mesh, len(batch["inputs"]))
    batch = {k: v[rows] for k, v in batch.items()}  # this process's slice only
  with parallel.use_mesh(mesh):
    model = create_model(tiny_model_config(), 0, mesh)
  tr = Trainer(model, make_optimizer(1e-2, 10, 0), mesh=mesh)
  losses = []
  for _ in range(steps):
    loss = tr.train_step(batch)["loss"]
    # a replicated scalar: every process holds the full value
    losses.append(float(np.asarray(loss.addressable_data(0))))
  return losses


def main() -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--out", required=True)
  p.add_argument("--mesh", default="2,2,1")
  p.add_argument("--cache_dir", default=None)
  args = p.parse_args()
  import jax

  jax.config.update("jax_platforms", "cpu")
  if args.cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  from ttc_jax import parallel

  initialised = parallel.maybe_initialize_distributed()
  mesh = parallel.make_mesh(tuple(int(s) for s in args.mesh.split(",")))
  info = dict(
      initialised=initialised,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      device_count=jax.device_count(),
      local_device_count=jax.local_device_count(),
      mesh=dict(mesh.shape),
  )
  print(json.dumps(info), flush=True)
  losses = run_steps(mesh)
  info["losses"] = losses
  with open(f"{args.out}.{jax.process_index()}", "w") as f:
    json.dump(info, f)
  print(json.dumps(info), flush=True)
  if jax.process_count() > 1:
    jax.distributed.shutdown()
  return 0


if __name__ == "__main__":
  sys.exit(main())
