"""TPU topologies for ahead-of-time compilation, and the chips' published figures.

`topology_mesh(name, mesh_shape)` turns a topology name into a (`data`, `fsdp`, `tensor`) mesh of
libtpu's abstract devices, which `jax.jit(...).lower(...).compile()` compiles for without any
TPU (docs/accelerators.md). Names are libtpu's (`v5e:2x4`, `v5p:2x2x1`, ...) or Cloud TPU
slice names (`v5e-8`, `v5p-8`, ...), resolved by `resolve_topology`.

`CHIPS` holds each chip's published per-chip figures (Cloud TPU system architecture pages):
HBM capacity, dense bf16 peak FLOP/s and HBM bandwidth. libtpu's abstract devices expose no
memory size, so per-device HBM comes from this table; on v4 the topology has one device per
TensorCore (two per chip), so a device gets half of the chip's figures. The compiler's own
limit (a little below the capacity: 15.75 GiB of 16 on v5e) appears in its out-of-memory
message, which `analysis.oom_figures` reads.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

GiB = 1 << 30
INSTALL_HINT = 'pip install "jax[tpu]==0.10.2"  (libtpu compiles for TPU topologies on a CPU host)'


class AotInputError(ValueError):
  """Bad input to the AOT check (unknown topology, missing libtpu, bad mesh): exit status 2."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures; `cores_per_device`: TensorCores one JAX device stands for."""

  name: str
  hbm_bytes: int
  peak_flops: float  # dense bf16 FLOP/s
  hbm_bandwidth: float  # bytes/s
  devices_per_chip: int = 1

  @property
  def hbm_bytes_per_device(self) -> int:
    return self.hbm_bytes // self.devices_per_chip

  @property
  def peak_flops_per_device(self) -> float:
    return self.peak_flops / self.devices_per_chip

  @property
  def bandwidth_per_device(self) -> float:
    return self.hbm_bandwidth / self.devices_per_chip


# device_kind (as libtpu names it) -> chip. Sources: cloud.google.com/tpu/docs/v4, v5e, v5p, v6e.
CHIPS = {
    "TPU v4": Chip("v4", 32 * GiB, 275e12, 1200e9, devices_per_chip=2),
    "TPU v5 lite": Chip("v5e", 16 * GiB, 197e12, 819e9),
    "TPU v5": Chip("v5p", 95 * GiB, 459e12, 2765e9),
    "TPU v6 lite": Chip("v6e", 32 * GiB, 918e12, 1640e9),
}
_GENERATION = {"v4": "v4", "v5e": "v5e", "v5litepod": "v5e", "v5p": "v5p", "v6e": "v6e"}
# chips of a slice -> libtpu's chip grid (2D for v5e/v6e, 3D for v4/v5p)
_GRID_2D = {
    1: "1x1",
    4: "2x2",
    8: "2x4",
    16: "4x4",
    32: "4x8",
    64: "8x8",
    128: "8x16",
    256: "16x16",
}
_GRID_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8"}


def resolve_topology(name: str) -> str:
  """libtpu's topology string for `name`: `v5e-8` -> `v5e:2x4`, `v5p-8` -> `v5p:2x2x1`, ...

  Cloud slice names count TensorCores on v4 and v5p (two per chip) and chips on v5e and v6e.
  Any other string is passed to libtpu as it is (`v5e:2x2`, `v4:2x2x2`).
  """
  m = re.fullmatch(r"(v4|v5e|v5litepod|v5p|v6e)-(\d+)", name.strip())
  if not m:
    return name.strip()
  gen, count = _GENERATION[m.group(1)], int(m.group(2))
  if gen in ("v4", "v5p"):
    grid = _GRID_3D.get(count // 2) if count % 2 == 0 else None
  else:
    grid = _GRID_2D.get(count)
  if grid is None:
    raise AotInputError(
        f"no known chip grid for the slice {name!r}; pass libtpu's name, e.g. {gen}:2x2"
    )
  return f"{gen}:{grid}"


def _quiet_libtpu() -> None:
  """Harmless host settings, so libtpu does not probe a metadata server for a TPU VM, and
  compile-only processes do not take libtpu's one-process lock (/tmp/libtpu_lockfile)."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")


def topology_devices(name: str) -> tuple[str, list]:
  """(libtpu topology name, abstract devices) for `name`; AotInputError on an unknown name or
  a missing libtpu (with the line that installs it)."""
  _quiet_libtpu()
  topo = resolve_topology(name)
  try:
    import libtpu  # noqa: F401  (only to give the install line when it is missing)
  except ImportError as e:
    raise AotInputError(
        f"compiling for TPU needs libtpu, which is not installed: {INSTALL_HINT}"
    ) from e
  from jax.experimental import topologies

  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topo)
  except Exception as e:  # libtpu raises JaxRuntimeError (INVALID_ARGUMENT) with its regex
    raise AotInputError(
        f"unknown TPU topology {name!r} ({topo!r}): {str(e).splitlines()[0][:300]}; "
        "known forms: v4-8, v5e-8, v5p-8, v6e-8 or libtpu's <gen>:<grid> (v5e:2x4)"
    ) from e
  return topo, list(desc.devices)


def chip_of(devices) -> Chip:
  kind = devices[0].device_kind
  if kind not in CHIPS:
    raise AotInputError(f"no published figures for device kind {kind!r}; known: {sorted(CHIPS)}")
  return CHIPS[kind]


def topology_mesh(devices, shape):
  """The (`data`, `fsdp`, `tensor`) mesh of `shape` (one -1 allowed) over `devices`."""
  from ttc_jax import parallel

  try:
    return parallel.make_mesh(shape, devices)
  except ValueError as e:
    raise AotInputError(str(e)) from e


def describe_mesh(mesh) -> dict:
  return {k: int(v) for k, v in mesh.shape.items()} | {
      "devices": int(np.prod(list(mesh.shape.values())))
  }
