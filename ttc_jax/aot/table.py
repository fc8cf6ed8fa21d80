"""The AOT report as a Markdown table (`python -m ttc_jax.aot ... --markdown FILE`)."""

from __future__ import annotations

GiB = 1 << 30


def _gib(x) -> str:
  return f"{x / GiB:.2f}"


def markdown(report: dict) -> str:
  """One row per program: memory per device, fits, FLOPs, collectives and roofline seconds
  (loop programs: with every loop body counted as often as it runs, and the share of that
  time the FLOPs alone would take)."""
  head = (
      f"{report['config']} on {report['topology']} ({report['libtpu_topology']}, "
      f"{report['devices']} x {report['device_kind']}, {_gib(report['hbm_bytes_per_device'])} "
      f"GiB HBM per device, mesh {report['mesh']})\n\n"
      "| program | shapes | args GiB | temp GiB | total GiB | fits | GFLOPs | collectives "
      "| roofline s | FLOP share |\n|---|---|---|---|---|---|---|---|---|---|\n"
  )
  rows = []
  for name, p in sorted(report["programs"].items()):
    shapes = ", ".join(
        f"{k}={v}" for k, v in p.get("shapes", {}).items() if k not in ("eos_id", "delimiter_id")
    )
    if "out_of_memory" in p:
      rows.append(
          f"| {name} | {shapes} | | | {_gib(p['total_bytes_per_device'])} (compiler: needs "
          f"{_gib(p['out_of_memory']['required_bytes'])} of {_gib(p['out_of_memory']['available_bytes'])}) "
          "| no | | | | |"
      )
      continue
    tot = p.get("totals", p)
    share = tot.get("flop_fraction")
    if share is None:
      peak = report["peak_flops_per_device"]
      share = p["flops"] / peak / max(p["roofline_seconds"], 1e-30)
    rows.append(
        f"| {name} | {shapes} | {_gib(p['argument_bytes'])} | {_gib(p['temp_bytes'])} "
        f"| {_gib(p['total_bytes_per_device'])} | {'yes' if p['fits'] else 'no'} "
        f"| {tot['flops'] / 1e9:,.0f} | {sum(p['collectives'].values())} "
        f"| {tot['roofline_seconds']:.3g} | {share:.2f} |"
    )
  return head + "\n".join(rows) + "\n"
