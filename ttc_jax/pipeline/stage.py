"""Stage records and the resumable bookkeeping shared by the pipelines (`arith`, `text`).

A `Stage` names one step of a pipeline: the config sections it hashes (a
function of the config alone, so a hash never depends on models or devices),
the stages whose artifacts it reads, the paths it writes under the run
directory, and its run function over a `context.RunContext`. A pipeline is a
tuple of stages (`arith.STAGES`, `text.STAGES`); stages whose work is the same
in both (eval_policy, eval_search, eval_large, compute_optimal) share one run
function and differ only in their sections and in what the context supplies.

A finished stage's outputs (a JSON dict) are recorded in
`<workdir>/stages/<name>.json` together with the hash of its sections and its
wall time. Running it again with the same hash returns the recorded outputs
without running it; a different hash raises `StageMismatchError` naming the
stage and the marker (use a new --workdir): finished work is never silently
mixed with a new config.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

from ttc_jax import config as config_lib
from ttc_jax import io_utils


class StageMismatchError(RuntimeError):
  """A finished stage in the work directory was produced by another config."""


@dataclasses.dataclass(frozen=True)
class Stage:
  """One resumable step: `sections(cfg)` is hashed, `run(ctx)` returns the outputs.

  inputs: names of the stages whose artifacts `run` reads; outputs: the files or
  directories (relative to the run directory) it writes.
  """

  name: str
  sections: Callable[[Any], dict]
  run: Callable[[Any], dict]
  inputs: tuple[str, ...] = ()
  outputs: tuple[str, ...] = ()


def by_name(stages: tuple[Stage, ...]) -> dict[str, Stage]:
  """{name: stage}; checks that names are unique and inputs name earlier stages."""
  out: dict[str, Stage] = {}
  for st in stages:
    if st.name in out:
      raise ValueError(f"stage {st.name!r} is defined twice")
    missing = [i for i in st.inputs if i not in out]
    if missing:
      raise ValueError(f"stage {st.name!r} reads {missing}, which no earlier stage writes")
    out[st.name] = st
  return out


def run_stage(
    workdir: str, wall: dict[str, float], name: str, sections: dict, fn: Callable[[], dict]
) -> dict:
  """Runs `fn` unless the stage finished before in `workdir` with the same config hash;
  records the stage's wall seconds in `wall`."""
  marker = os.path.join(workdir, "stages", f"{name}.json")
  h = config_lib.config_hash(sections)
  if os.path.exists(marker):
    done = io_utils.read_json(marker)
    if done.get("hash") == h:
      wall[name] = done.get("wall_seconds", 0.0)
      print(f"[{name}] done before ({done.get('wall_seconds', 0):.1f}s); skipped")
      return done["outputs"]
    raise StageMismatchError(
        f"stage {name!r} in {workdir} was run with another config "
        f"(hash {done.get('hash')} != {h}); use a new --workdir or delete {marker}"
    )
  t0 = time.perf_counter()
  print(f"[{name}] running")
  outputs = fn()
  dt = time.perf_counter() - t0
  wall[name] = dt
  io_utils.atomic_write_json(marker, dict(hash=h, wall_seconds=dt, outputs=outputs))
  print(f"[{name}] finished in {dt:.1f}s")
  return outputs


class StagedRun:
  """What the facades (`arith.Pipeline`, `text.TextPipeline`) share: `path`, `_stage`
  (the bookkeeping above over `self.workdir`, `self.wall`) and `_run(stage)`, which
  hashes `stage.sections(self.cfg)` and runs `stage.run(self.ctx)` when needed."""

  cfg: Any
  ctx: Any
  workdir: str
  wall: dict[str, float]

  def _init_run(self, workdir: str) -> None:
    self.workdir = os.path.abspath(workdir)
    self.wall = {}
    os.makedirs(self.workdir, exist_ok=True)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def _stage(self, name: str, sections: dict, fn: Callable[[], dict]) -> dict:
    return run_stage(self.workdir, self.wall, name, sections, fn)

  def _run(self, st: Stage) -> dict:
    return self._stage(st.name, st.sections(self.cfg), lambda: st.run(self.ctx))
