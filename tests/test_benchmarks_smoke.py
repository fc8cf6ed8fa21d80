"""Smoke test: the sampler benchmark runs from the checkout and prints one JSON object."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_HAVE_HF = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))

FIELDS = ("benchmark", "config", "ours_tokens_per_s", "hf_tokens_per_s", "speedup",
          "greedy_match", "ours_median_s", "hf_median_s", "compile_s", "machine")


@pytest.mark.skipif(not _HAVE_HF, reason="torch/transformers not importable")
def test_sampler_throughput_tiny_preset():
  env = dict(os.environ, PYTHONPATH=".", JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)            # conftest's 8 fake devices: not for a benchmark
  # Reuse the tests' persistent compile cache (see conftest.py) across runs.
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get(
      "TTC_JAX_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ttc_jax", "xla_tests")))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  proc = subprocess.run(
      [sys.executable, "benchmarks/sampler_throughput.py", "--preset", "tiny",
       "--repeats", "1", "--warmup", "0", "--no-peak"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{proc.stdout}"
  res = json.loads(lines[0])
  missing = [f for f in FIELDS if f not in res]
  assert not missing, missing
  assert res["benchmark"] == "sampler_throughput"
  cfg = res["config"]
  assert (cfg["batch"], cfg["prompt_len"], cfg["new_tokens"]) == (2, 4, 8)
  assert cfg["model"]["num_kv_heads"] < cfg["model"]["num_heads"]   # GQA is exercised
  # Identical float32 weights, greedy: every generated token agrees with HF's.
  assert res["greedy_match"] == 1.0, res.get("greedy_first_divergence")
  for f in ("ours_tokens_per_s", "hf_tokens_per_s", "speedup", "ours_median_s",
            "hf_median_s"):
    assert res[f] > 0, (f, res[f])
  assert res["compile_s"] >= 0
  assert res["machine"]["backend"] == "cpu"
