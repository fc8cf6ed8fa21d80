"""Runs a benchmark script as a subprocess from the checkout and parses its one JSON object."""

import json
import os
import pathlib
import subprocess
import sys

from conftest import CHEAP_COMPILES, TEST_CACHE

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_benchmark(script: str, args, fields, timeout: int = 180) -> dict:
  """Runs `benchmarks/<script>` with PYTHONPATH=. and returns its JSON (checking `fields`)."""
  env = dict(os.environ, PYTHONPATH=".", JAX_PLATFORMS="cpu")
  # Not conftest's 8 fake devices (a benchmark splits the CPU itself with --host-devices),
  # but its cheap compiles: the smoke tests check what a benchmark prints, not its speed.
  env["XLA_FLAGS"] = CHEAP_COMPILES
  # Reuse the tests' persistent compile cache (see conftest.py) across runs.
  env.setdefault("JAX_COMPILATION_CACHE_DIR", TEST_CACHE)
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  proc = subprocess.run(
      [sys.executable, f"benchmarks/{script}", *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{proc.stdout}"
  res = json.loads(lines[0])
  missing = [f for f in fields if f not in res]
  assert not missing, missing
  return res
