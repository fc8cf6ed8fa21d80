"""Figures of one compiled program: memory, cost, collectives and a roofline estimate.

All figures are per device, as the TPU compiler reports them: `memory_analysis()` (argument,
output, temporary and generated-code bytes; aliased (donated) bytes counted once) and
`cost_analysis()` (flops, bytes accessed). The compiler counts a `while` body once, so for a
loop the caller also compiles its body alone and `loop_totals` scales it by the iteration count.
"""

from __future__ import annotations

import re
from typing import Any

from ttc_jax.aot.chips import Chip

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_OOM = re.compile(
    r"required for ([\w ]+?) \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)"
)
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def count_collectives(hlo_text: str) -> dict[str, int]:
  """Collective ops in compiled HLO text, by kind (async pairs counted once, at their start)."""
  out = {}
  for op in COLLECTIVES:
    # `%x = f32[..] all-gather(...)`, or `all-gather-start(` for async ones (`-done` not counted)
    out[op] = len(re.findall(rf"\s{op}(?:-start)?\(", hlo_text))
  return out


def roofline_seconds(flops: float, bytes_accessed: float, chip: Chip) -> float:
  """max(flops / peak FLOP/s, bytes / HBM bandwidth) per device."""
  return max(flops / chip.peak_flops_per_device, bytes_accessed / chip.bandwidth_per_device)


def _cost(compiled) -> dict:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return dict(ca or {})


def analyze(compiled, chip: Chip) -> dict[str, Any]:
  """Per-device figures of a compiled executable for `chip`."""
  m = compiled.memory_analysis()
  arg, out = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
  alias, temp = int(m.alias_size_in_bytes), int(m.temp_size_in_bytes)
  code = int(m.generated_code_size_in_bytes)
  total = arg + out - alias + temp + code
  cost = _cost(compiled)
  hlo = compiled.as_text()
  flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  return dict(
      argument_bytes=arg,
      output_bytes=out,
      alias_bytes=alias,
      temp_bytes=temp,
      generated_code_bytes=code,
      total_bytes_per_device=total,
      fits=total <= chip.hbm_bytes_per_device,
      flops=flops,
      bytes_accessed=nbytes,
      collectives=count_collectives(hlo),
      pallas_kernels=hlo.count('custom_call_target="tpu_custom_call"'),
      roofline_seconds=roofline_seconds(flops, nbytes, chip),
  )


def oom_figures(message: str) -> dict[str, Any] | None:
  """The compiler's out-of-memory message as figures (None when it is not one):
  {"required_bytes", "available_bytes", "what"}."""
  m = _OOM.search(message)
  if not m:
    return None
  req = float(m.group(2)) * _UNIT[m.group(3)]
  avail = float(m.group(4)) * _UNIT[m.group(5)]
  return dict(required_bytes=int(req), available_bytes=int(avail), what=m.group(1))


def loop_totals(whole: dict, bodies: list[tuple[dict, int]], chip: Chip) -> dict[str, Any]:
  """Whole-program flops/bytes with each loop body counted as often as it runs: the
  compiler's figures count a body once, so (iterations - 1) more of each are added. Returns
  flops, bytes_accessed, roofline_seconds and flop_fraction (the share of the roofline time
  the FLOPs alone would take: 1 when compute-bound)."""
  flops, nbytes = whole["flops"], whole["bytes_accessed"]
  for body, iterations in bodies:
    flops += max(iterations - 1, 0) * body["flops"]
    nbytes += max(iterations - 1, 0) * body["bytes_accessed"]
  seconds = roofline_seconds(flops, nbytes, chip)
  return dict(
      flops=flops,
      bytes_accessed=nbytes,
      roofline_seconds=seconds,
      flop_fraction=flops / chip.peak_flops_per_device / max(seconds, 1e-30),
  )
