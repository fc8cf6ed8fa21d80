"""Resumable stage bookkeeping shared by the pipelines (arith `Pipeline`, HF `TextPipeline`).

A stage is a function whose outputs (a JSON dict) are recorded in
`<workdir>/stages/<name>.json` together with a hash of the config sections it
depends on and its wall time. Running it again with the same hash returns the
recorded outputs without running it; a different hash raises
`StageMismatchError` naming the stage and the marker (use a new --workdir):
finished work is never silently mixed with a new config.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from ttc_jax import config as config_lib
from ttc_jax import io_utils


class StageMismatchError(RuntimeError):
  """A finished stage in the work directory was produced by another config."""


class Stages:
  """Mixin: `path` and `_stage` over `self.workdir` (absolute) and `self.wall`
  ({stage: wall seconds}), which the subclass sets (see `_init_stages`)."""

  workdir: str
  wall: dict[str, float]

  def _init_stages(self, workdir: str) -> None:
    self.workdir = os.path.abspath(workdir)
    self.wall = {}
    os.makedirs(self.workdir, exist_ok=True)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def _stage(self, name: str, sections: dict, fn: Callable[[], dict]) -> dict:
    """Runs `fn` unless the stage finished before with the same config hash."""
    marker = self.path("stages", f"{name}.json")
    h = config_lib.config_hash(sections)
    if os.path.exists(marker):
      done = io_utils.read_json(marker)
      if done.get("hash") == h:
        self.wall[name] = done.get("wall_seconds", 0.0)
        print(f"[{name}] done before ({done.get('wall_seconds', 0):.1f}s); skipped")
        return done["outputs"]
      raise StageMismatchError(
          f"stage {name!r} in {self.workdir} was run with another config "
          f"(hash {done.get('hash')} != {h}); use a new --workdir or delete {marker}")
    t0 = time.perf_counter()
    print(f"[{name}] running")
    outputs = fn()
    dt = time.perf_counter() - t0
    self.wall[name] = dt
    io_utils.atomic_write_json(marker, dict(hash=h, wall_seconds=dt, outputs=outputs))
    print(f"[{name}] finished in {dt:.1f}s")
    return outputs
