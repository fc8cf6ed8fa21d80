"""Runs a benchmark script as a subprocess from the checkout and parses its one JSON object."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_benchmark(script: str, args, fields, timeout: int = 180) -> dict:
  """Runs `benchmarks/<script>` with PYTHONPATH=. and returns its JSON (checking `fields`)."""
  env = dict(os.environ, PYTHONPATH=".", JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)            # conftest's 8 fake devices: not for a benchmark
  # Reuse the tests' persistent compile cache (see conftest.py) across runs.
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get(
      "TTC_JAX_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ttc_jax", "xla_tests")))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  proc = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{proc.stdout}"
  res = json.loads(lines[0])
  missing = [f for f in fields if f not in res]
  assert not missing, missing
  return res
