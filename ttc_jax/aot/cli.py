"""`python -m ttc_jax.aot`: compile a config's programs for a TPU topology, report what fits.

  python -m ttc_jax.aot --config configs/arith_paper.py --topology v5e-8 [--config.<f>=<v> ...]
      [--out FILE] [--programs GLOB,...] [--prompt-len P] [--find-max FIELD]

Prints one JSON object (docs/accelerators.md): topology, devices, hbm_bytes_per_device, mesh
and per program its memory (argument, output, temp, total per device, fits), cost (flops,
bytes accessed), collectives and roofline, plus `loops` with each loop body's figures and
`totals` with the bodies counted as often as they run. Exit status: 0 when every program fits,
1 when one does not (named on stderr with the shortfall), 2 on bad input.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time

from ttc_jax import io_utils
from ttc_jax.aot.chips import AotInputError


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m ttc_jax.aot",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--config", required=True, help="config file defining get_config()")
  p.add_argument("--topology", required=True, help="v4-8, v5e-8, v5p-8, v6e-8 or libtpu's v5e:2x4")
  p.add_argument("--out", default=None, help="also write the JSON report to this file")
  p.add_argument("--markdown", default=None, help="also write the report as a Markdown table")
  p.add_argument("--programs", default="*", help="comma-separated globs of program names")
  p.add_argument(
      "--prompt-len",
      type=int,
      default=None,
      help="prompt tokens of sampler and search calls (default: what max_len leaves)",
  )
  p.add_argument(
      "--compare-unshared",
      action="store_true",
      help="also compile each search kernel with unshared prompt caches (<name>.unshared), "
      "for the memory prefix sharing saves",
  )
  p.add_argument(
      "--find-max",
      default=None,
      metavar="FIELD",
      help="the largest value of an int config field (or a one-int tuple, e.g. "
      "search.budgets) at which every selected program fits",
  )
  args, rest = p.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    p.error(f"unrecognised arguments {bad} (overrides look like --config.search.max_beams=256)")
  return args, rest


def build_programs(cfg, mesh, globs: str, prompt_len, unshared: bool = False):
  from ttc_jax import config as config_lib
  from ttc_jax.aot import plan

  text = cfg.task.get("name") in config_lib.TEXT_TASKS
  progs = (plan.text_programs if text else plan.arith_programs)(cfg, mesh, prompt_len, unshared)
  pats = [g.strip() for g in globs.split(",") if g.strip()]
  return [q for q in progs if any(fnmatch.fnmatch(q.name, g) for g in pats)]


def compile_program(prog, chip) -> dict:
  """Figures of `prog` and its loop bodies; an out-of-memory compile gives fits=false with the
  compiler's required and available bytes."""
  from ttc_jax.aot import analysis

  t0 = time.perf_counter()
  try:
    compiled = prog.lower().compile()
  except Exception as e:  # XLA raises JaxRuntimeError; only RESOURCE_EXHAUSTED is a figure
    oom = analysis.oom_figures(str(e))
    if oom is None:
      raise
    return dict(
        shapes=prog.shapes,
        fits=False,
        out_of_memory=oom,
        total_bytes_per_device=oom["required_bytes"],
        compile_seconds=time.perf_counter() - t0,
    )
  rec = analysis.analyze(compiled, chip)
  rec["shapes"], rec["compile_seconds"] = prog.shapes, time.perf_counter() - t0
  if prog.parts:
    rec["parts"] = {part.name: compile_program(part, chip) for part in prog.parts}
    rec["fits"] = rec["fits"] and all(p["fits"] for p in rec["parts"].values())
  if prog.loops:
    rec["loops"], bodies = {}, []
    for body, iterations in prog.loops:
      b = rec["loops"][body.name] = compile_program(body, chip)
      b["iterations"] = iterations
      rec["fits"] = rec["fits"] and b["fits"]
      if "flops" in b:  # an out-of-memory body has no cost figures
        bodies.append((b, iterations))
    rec["totals"] = analysis.loop_totals(rec, bodies, chip)
  return rec


def check(
    cfg,
    topology: str,
    globs: str = "*",
    prompt_len=None,
    partial: str | None = None,
    unshared: bool = False,
) -> dict:
  """The report for `cfg` on `topology` (see the module docstring); `partial`: a file the
  report so far is written to after each program (a long check that is stopped keeps it)."""
  from ttc_jax.aot import chips

  topo, devices = chips.topology_devices(topology)
  chip = chips.chip_of(devices)
  mesh = chips.topology_mesh(devices, tuple(cfg.mesh.shape))
  progs = build_programs(cfg, mesh, globs, prompt_len, unshared)
  if not progs:
    raise AotInputError(f"no program matches --programs {globs!r}")
  report = dict(
      config=cfg.get("name", ""),
      topology=topology,
      libtpu_topology=topo,
      device_kind=devices[0].device_kind,
      devices=len(devices),
      hbm_bytes_per_device=chip.hbm_bytes_per_device,
      hbm_source="published chip figures (ttc_jax/aot/chips.py); libtpu exposes no memory size",
      peak_flops_per_device=chip.peak_flops_per_device,
      hbm_bandwidth_per_device=chip.bandwidth_per_device,
      mesh=chips.describe_mesh(mesh),
      programs={},
  )
  for prog in progs:
    rec = report["programs"][prog.name] = compile_program(prog, chip)
    print(
        f"{prog.name}: {rec['total_bytes_per_device'] / 2**30:.2f} GiB per device "
        f"({'fits' if rec['fits'] else 'does not fit'}), compiled in {rec['compile_seconds']:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    if partial:
      io_utils.atomic_write_json(partial, report)
  report["fits"] = all(p["fits"] for p in report["programs"].values())
  return report


def _set_field(cfg, field: str, value: int):
  node = cfg
  *parents, last = field.split(".")
  for k in parents:
    node = node[k]
  node[last] = (value,) if isinstance(node[last], (tuple, list)) else value


def _get_int(cfg, field: str) -> int:
  node = cfg
  for k in field.split("."):
    if k not in node:
      raise AotInputError(f"--find-max {field}: config has no field {k!r}")
    node = node[k]
  if isinstance(node, (tuple, list)) and len(node) == 1:
    node = node[0]
  if not isinstance(node, int) or isinstance(node, bool) or node < 1:
    raise AotInputError(
        f"--find-max {field} needs a positive int (or a one-int tuple), got {node!r}"
    )
  return node


def find_max(cfg, field: str, topology: str, globs: str, prompt_len) -> dict:
  """The largest value of `field` at which every selected program fits: doubling from the
  config's value (or halving when it does not fit), then bisection between powers of two."""
  import copy

  def fits(v):
    c = copy.deepcopy(cfg)
    _set_field(c, field, v)
    rep = check(c, topology, globs, prompt_len)
    tried[v] = rep["fits"]
    return rep

  tried: dict[int, bool] = {}
  v = _get_int(cfg, field)
  rep = fits(v)
  if rep["fits"]:
    lo, best = v, rep
    while True:
      r = fits(lo * 2)
      if not r["fits"]:
        hi = lo * 2
        break
      lo, best = lo * 2, r
  else:
    hi = v
    lo, best = v // 2, None
    while lo >= 1:
      r = fits(lo)
      if r["fits"]:
        best = r
        break
      hi, lo = lo, lo // 2
    if best is None:
      return dict(field=field, max_fitting=None, tried=tried, report=rep)
  while hi - lo > max(1, lo // 8):  # to within 1/8 of the value
    mid = (lo + hi) // 2
    r = fits(mid)
    lo, hi, best = (mid, hi, r) if r["fits"] else (lo, mid, best)
  return dict(
      field=field, max_fitting=lo, tried={str(k): b for k, b in sorted(tried.items())}, report=best
  )


def main(argv=None) -> int:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from ttc_jax import config as config_lib

  try:
    cfg = config_lib.load_config(args.config, overrides, shapes_only=True)
    if args.find_max:
      out = find_max(cfg, args.find_max, args.topology, args.programs, args.prompt_len)
      rep = out["report"] or {}
      ok = out["max_fitting"] is not None
    else:
      partial = f"{args.out}.partial" if args.out else None
      out = rep = check(
          cfg, args.topology, args.programs, args.prompt_len, partial, args.compare_unshared
      )
      if partial and os.path.exists(partial):
        os.remove(partial)
      ok = rep["fits"]
  except (config_lib.ConfigError, AotInputError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = json.dumps(out, indent=1, sort_keys=True)
  print(text)
  if args.out:
    io_utils.atomic_write_text(args.out, text + "\n")
  if args.markdown and rep:
    from ttc_jax.aot import table

    io_utils.atomic_write_text(args.markdown, table.markdown(rep))
  for name, p in rep.get("programs", {}).items():
    if not p["fits"]:
      need = p["total_bytes_per_device"] - rep["hbm_bytes_per_device"]
      print(
          f"does not fit: {name} needs {p['total_bytes_per_device'] / 2**30:.2f} GiB per device, "
          f"{need / 2**30:.2f} GiB over the {rep['hbm_bytes_per_device'] / 2**30:.2f} GiB of HBM",
          file=sys.stderr,
      )
  return 0 if ok else 1
