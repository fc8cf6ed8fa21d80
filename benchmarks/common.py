"""Shared helpers for the benchmarks: timing, peak matmul FLOP/s, machine info, JSON output.

Benchmarks import and run from the checkout with `PYTHONPATH=.` alone: this
module imports jax and numpy only (torch lazily, for its version).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def time_fn(
    fn: Callable[[], Any],
    warmup: int = 1,
    repeats: int = 5,
    block: Callable[[Any], Any] | None = None,
) -> dict:
  """Times `fn()` after `warmup` untimed calls; returns median/min/all times in seconds.

  Results are passed to `block` (default `jax.block_until_ready`, which leaves
  non-JAX values alone) before the clock stops, so asynchronous dispatch is
  not mistaken for speed.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  block = jax.block_until_ready if block is None else block
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
  return {"median_s": statistics.median(times), "min_s": min(times), "times": times}


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    warmup: int = 1,
    repeats: int = 5,
    blocks: dict[str, Callable[[Any], Any]] | None = None,
) -> dict[str, dict]:
  """Like `time_fn` for several functions, alternating them call by call.

  On a shared machine a burst of background load then hits every contender
  alike instead of one of them. Returns {name: time_fn-style dict}.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  blocks = blocks or {}
  blk = {k: blocks.get(k, jax.block_until_ready) for k in fns}
  for _ in range(warmup):
    for k, fn in fns.items():
      blk[k](fn())
  times: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      blk[k](fn())
      times[k].append(time.perf_counter() - t0)
  return {
      k: {"median_s": statistics.median(v), "min_s": min(v), "times": v} for k, v in times.items()
  }


def time_first_call(fn: Callable[[], Any]) -> tuple[float, Any]:
  """Wall time of one blocking call (e.g. the one that compiles) and its result."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - t0, out


def default_matmul_n() -> int:
  """A square size that runs a few hundred ms per matmul on CPU, larger on accelerators."""
  return 3072 if jax.default_backend() == "cpu" else 8192


def matmul_peak_flops(dtype: str = "float32", n: int | None = None, repeats: int = 5) -> dict:
  """Measures a jitted [n,n]@[n,n] matmul in this process: FLOP/s = 2 n^3 / median time."""
  n = default_matmul_n() if n is None else n
  dt = jnp.dtype(dtype)
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dt)
  b = jax.random.normal(kb, (n, n), dt)
  f = jax.jit(lambda x, y: x @ y)
  t = time_fn(lambda: f(a, b), warmup=1, repeats=repeats)
  return {
      "dtype": dtype,
      "n": n,
      "median_s": t["median_s"],
      "flops_per_s": 2.0 * n**3 / t["median_s"],
  }


def machine_info() -> dict:
  """Versions and hardware this run saw (enough to compare numbers across machines)."""
  devs = jax.devices()
  info = {
      "python": platform.python_version(),
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "device_kinds": sorted({d.device_kind for d in devs}),
      "device_count": len(devs),
      "os_cpu_count": os.cpu_count(),
  }
  try:
    info["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
  except (AttributeError, OSError):
    pass
  try:
    info["sched_cpu_count"] = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    pass
  try:
    import torch  # noqa: PLC0415  (optional)

    info["torch_version"] = torch.__version__
    info["torch_num_threads"] = torch.get_num_threads()
  except ImportError:
    pass
  try:
    import transformers  # noqa: PLC0415  (optional)

    info["transformers_version"] = transformers.__version__
  except ImportError:
    pass
  return info


def load_warning() -> str | None:
  """A warning when the 1-minute load average exceeds half the CPU count, else None."""
  if not hasattr(os, "getloadavg"):
    return None
  load = os.getloadavg()[0]
  if load > (os.cpu_count() or 1) / 2:
    return f"machine loaded (1-min load {load:.2f}); figures are lower bounds"
  return None


def finish(out: dict, rss: bool = True) -> dict:
  """Adds what every benchmark reports last: peak host RSS (`max_rss_bytes`), the
  load warning when the machine was busy, and `machine`. Returns `out`."""
  if rss:
    import resource

    out["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  if (w := load_warning()) is not None:
    out["warning"] = w
  out["machine"] = machine_info()
  return out


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic, jax.Array)) and np.ndim(x) == 0:
    return np.asarray(x).item()
  if isinstance(x, (np.ndarray, jax.Array)):
    return np.asarray(x).tolist()
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def emit(obj: dict, out: str | None = None) -> str:
  """Prints `obj` as exactly one JSON line on stdout (and writes it to `out` if given)."""
  text = json.dumps(_jsonable(obj), sort_keys=False)
  if out:
    d = os.path.dirname(out)
    if d:
      os.makedirs(d, exist_ok=True)
    with open(out, "w") as f:
      f.write(text + "\n")
  sys.stdout.write(text + "\n")
  sys.stdout.flush()
  return text


def load_run(workdir: str):
  """The `Pipeline` of a finished main job in `workdir` (its saved config.json)."""
  import ml_collections
  from ttc_jax.pipeline import Pipeline

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --workdir must be a finished run's directory")
  with open(path) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  return Pipeline(cfg, workdir, progress=False)


def log(*args) -> None:
  """Progress messages go to stderr, so stdout stays one JSON object."""
  print(*args, file=sys.stderr, flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
  """Parser with the options every benchmark shares."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--warmup", type=int, default=1, help="untimed calls after compilation")
  p.add_argument("--repeats", type=int, default=5, help="timed calls (median reported)")
  p.add_argument("--out", default=None, help="also write the JSON object to this path")
  p.add_argument(
      "--no-peak", dest="peak", action="store_false", help="skip the matmul peak measurement"
  )
  p.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak measurement")
  return p
