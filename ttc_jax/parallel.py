"""Device mesh, logical-axis sharding rules, multi-host initialisation, the compilation cache.

Every parameter carries a `logical_axes` tuple of names (`vocab`, `embed`,
`heads`, `kv_heads`, `head_dim`, `mlp`, `norm`) and key activations are
constrained with (`batch`, `length`, `act_embed`, ...). A rules table maps
logical names to mesh axes (`data`, `fsdp`, `tensor`); GSPMD partitions the
jitted computations from there. The same code runs on 1 CPU (no mesh: every
helper is the identity), 8 fake CPU devices, a GPU or a TPU pod slice.

A mesh axis is only used for a dimension it divides (e.g. a vocabulary that a
`tensor` axis does not divide stays replicated, logged), except for attention heads:
a `heads`, `kv_heads` or `act_heads` dimension that a `tensor` axis > 1 does not
divide is a ValueError naming the head count and the axis size (silently
replicating them would make tensor parallelism a no-op for attention);
`check_heads` says the same for a model's head counts before it is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis name(s) (None: replicated). First match wins.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
)

# Logical axes that must be split evenly by a tensor axis (see the module docstring).
HEAD_AXES = ("heads", "kv_heads", "act_heads")

_log = logging.getLogger(__name__)
_CURRENT: list[tuple[Mesh | None, tuple]] = [(None, DEFAULT_RULES)]


def make_mesh(shape: Sequence[int], devices: Sequence[Any] | None = None) -> Mesh:
  """Builds a (`data`, `fsdp`, `tensor`) mesh with Auto axis types.

  `shape` may contain one -1, filled in from the device count. Raises
  ValueError naming the shape and the device count when they disagree.
  """
  devices = list(devices) if devices is not None else jax.devices()
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f"mesh shape must have 3 entries (data, fsdp, tensor), got {shape}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape} has more than one -1")
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    if known <= 0 or len(devices) % known:
      raise ValueError(f"mesh shape {shape} does not fit {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if any(s <= 0 for s in shape) or int(np.prod(shape)) != len(devices):
    raise ValueError(
        f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, but "
        f"{len(devices)} are available ({jax.default_backend()})"
    )
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


@contextlib.contextmanager
def use_mesh(
    mesh: Mesh | None, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> Iterator[Mesh | None]:
  """Activates `mesh` (also as jax's current mesh) and the logical rules."""
  _CURRENT.append((mesh, tuple(rules)))
  try:
    if mesh is None:
      yield None
    else:
      with jax.set_mesh(mesh):
        yield mesh
  finally:
    _CURRENT.pop()


def current_mesh() -> Mesh | None:
  return _CURRENT[-1][0]


def batch_shards(mesh: Mesh | None = None) -> int:
  """How many devices the batch axis is split over on `mesh` (default: the current one; 1
  without a mesh): the product of the mesh axes the `batch` rule maps to."""
  mesh = current_mesh() if mesh is None else mesh
  if mesh is None:
    return 1
  return _axis_size(mesh, dict(current_rules()).get("batch"))


def current_rules() -> tuple:
  return _CURRENT[-1][1]


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return int(np.prod([mesh.shape[a] for a in axes]))


def logical_to_spec(
    logical_axes: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    rules: Sequence | None = None,
) -> P:
  """Maps logical axis names to a PartitionSpec under `rules`.

  A mesh axis is used at most once per spec, and (when `shape` and `mesh` are
  given) only for dimensions it divides; size-1 mesh axes are dropped. A `HEAD_AXES`
  dimension that a `tensor` axis > 1 does not divide raises ValueError instead.
  """
  rules = dict(current_rules() if rules is None else rules)
  used: set[str] = set()
  out = []
  for i, name in enumerate(logical_axes):
    axes = rules.get(name) if name is not None else None
    if axes is not None:
      axes = (axes,) if isinstance(axes, str) else tuple(axes)
      axes = tuple(a for a in axes if a not in used)
      if mesh is not None:
        axes = tuple(a for a in axes if mesh.shape[a] > 1)
        if shape is not None and axes and shape[i] % _axis_size(mesh, axes):
          if name in HEAD_AXES and "tensor" in axes:
            raise ValueError(_heads_message(name, shape[i], mesh.shape["tensor"]))
          _log.info(
              "dim %d (%s, size %d) not divisible by mesh axes %s: replicated",
              i,
              name,
              shape[i],
              axes,
          )
          axes = ()
      used.update(axes)
      axes = axes[0] if len(axes) == 1 else (axes or None)
    out.append(axes)
  return P(*out)


def _heads_message(name: str, size: int, tensor: int) -> str:
  what = "KV heads" if name == "kv_heads" else "attention heads"
  return (
      f"the model has {size} {what} ({name}), which a tensor axis of {tensor} does not "
      f"divide; choose a mesh whose tensor size divides the head counts (e.g. tensor=1 "
      f"and the devices on data/fsdp)"
  )


def check_heads(num_heads: int, num_kv_heads: int, mesh: Mesh | None, what: str = "") -> None:
  """ValueError naming both head counts (and `what`, e.g. a checkpoint path) when `mesh`'s
  `tensor` axis (> 1) does not divide them (the rule `logical_to_spec` applies to each head
  dimension)."""
  if mesh is None or "tensor" not in mesh.shape:
    return
  n = int(mesh.shape["tensor"])
  if n > 1 and (num_heads % n or num_kv_heads % n):
    raise ValueError(
        f"the model{' ' + what if what else ''} has {num_heads} attention heads and "
        f"{num_kv_heads} KV heads; a "
        f"tensor axis of {n} must divide both (mesh {dict(mesh.shape)}); choose a mesh "
        f"whose tensor size divides the head counts, e.g. tensor=1 and the devices on data/fsdp"
    )


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """`with_sharding_constraint` by logical names under the active mesh."""
  mesh = current_mesh()
  if mesh is None:
    return x
  spec = logical_to_spec(logical_axes, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def _var_logical_axes(v: Any) -> tuple | None:
  if isinstance(v, nnx.Variable):
    return v.get_metadata().get("logical_axes")
  return None


def state_shardings(state: Any, mesh: Mesh, rules: Sequence | None = None) -> Any:
  """NamedShardings for an nnx State (or pytree of Variables) from logical axes.

  Variables without `logical_axes` (e.g. optimizer step counters) are replicated.
  """

  def one(v):
    if isinstance(v, nnx.Variable):
      axes = _var_logical_axes(v)
      value = v.get_value() if hasattr(v, "get_value") else v[...]
      shape = getattr(value, "shape", ())
      spec = P() if axes is None else logical_to_spec(axes, shape, mesh, rules)
      return v.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, P())

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_state(state: Any, mesh: Mesh | None, rules: Sequence | None = None) -> Any:
  """Places every array of `state` according to its logical axes (no-op without a mesh)."""
  if mesh is None:
    return state
  shardings = state_shardings(state, mesh, rules)
  return jax.device_put(state, shardings)


def shard_module(module: nnx.Module, mesh: Mesh | None, rules: Sequence | None = None):
  """Shards an NNX module's state in place (params, optimizer moments, ...)."""
  if mesh is None:
    return module
  state = nnx.state(module)
  nnx.update(module, shard_state(state, mesh, rules))
  return module


def data_sharding(mesh: Mesh | None, ndim: int = 2) -> NamedSharding | None:
  """Sharding for a `[batch, ...]` host batch: batch over (`data`, `fsdp`)."""
  if mesh is None:
    return None
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1)))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh | None) -> dict:
  """Moves a host batch (dict of `[batch, ...]` arrays) onto the mesh.

  Single-process: a plain device_put. Multi-process: each host passes its
  local slice and a global array is assembled.
  """
  if mesh is None:
    return {k: jax.numpy.asarray(v) for k, v in batch.items()}
  out = {}
  for k, v in batch.items():
    sh = NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (v.ndim - 1), v.shape, mesh))
    if jax.process_count() == 1:
      out[k] = jax.device_put(v, sh)
    else:
      out[k] = jax.make_array_from_process_local_data(sh, v)
  return out


_HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def split_host_cpu(n: int | None = None) -> int | None:
  """Splits the CPU into `n` XLA devices (default: one per core), before JAX starts.

  On the CPU backend one device runs small ops on about one core (measured on 2
  cores: a batch-64 decode step takes as long pinned to one core as on both), so
  a data-parallel mesh over one device per core is how a CPU host uses all of its
  cores at small batches (large ones already spread over the cores: little gain).
  Sets `--xla_force_host_platform_device_count` in XLA_FLAGS; has no effect on
  accelerator backends. Leaves an explicit flag already in XLA_FLAGS alone (the
  tests' 8 fake devices) and returns the count in force; raises ValueError for
  n < 1 (with or without that flag) and RuntimeError when JAX's backends are
  already initialised (the flag would be ignored).
  """
  if n is not None and n < 1:
    raise ValueError(f"host device count must be >= 1, got {n}")
  flags = os.environ.get("XLA_FLAGS", "")
  for tok in flags.split():
    if tok.startswith(_HOST_DEVICES_FLAG + "="):
      return int(tok.split("=", 1)[1])
  if n is None:
    n = os.cpu_count() or 1
  from jax._src import xla_bridge  # noqa: PLC0415  (no public "backends started?" query)

  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        "split_host_cpu must run before JAX initialises its backends "
        "(before the first jax.devices() or computation)"
    )
  os.environ["XLA_FLAGS"] = f"{flags} {_HOST_DEVICES_FLAG}={n}".strip()
  return n


def setup_jax_cache(path: str | None = None) -> None:
  """Persistent XLA compilation cache (halves repeat compile time on CPU): `path`, else
  $TTC_JAX_CACHE_DIR, else ~/.cache/ttc_jax/xla."""
  path = path or os.environ.get(
      "TTC_JAX_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "ttc_jax", "xla")
  )
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` when launched as several processes.

  Triggered by TTC_JAX_DISTRIBUTED=1 (arguments auto-detected: TPU VM slices,
  SLURM, Open MPI) or by JAX_COORDINATOR_ADDRESS ("host:port" of process 0),
  with JAX_NUM_PROCESSES and JAX_PROCESS_ID passed on when set (both, or
  neither where a cluster environment supplies them); JAX_LOCAL_DEVICE_IDS is
  read by jax itself. scripts/launch_gpu.sh and scripts/launch_tpu_vm.sh set
  these. Idempotent; returns True when jax.distributed is initialised.
  """
  env = os.environ
  explicit = env.get("TTC_JAX_DISTRIBUTED", "") == "1"
  coord = env.get("JAX_COORDINATOR_ADDRESS", "")
  if not explicit and not coord:
    return False
  if jax.distributed.is_initialized():
    return True
  kwargs: dict[str, Any] = {}
  if coord:
    kwargs["coordinator_address"] = coord
  given = {
      k: env[v]
      for k, v in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
      if env.get(v, "") != ""
  }
  if len(given) == 1:
    raise ValueError(
        "set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (or neither, where the "
        f"cluster environment supplies them); got only {given}"
    )
  kwargs.update({k: int(v) for k, v in given.items()})
  jax.distributed.initialize(**kwargs)
  _log.info(
      "jax.distributed initialised: process %d of %d", jax.process_index(), jax.process_count()
  )
  return True
