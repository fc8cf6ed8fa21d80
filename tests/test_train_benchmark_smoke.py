"""Smoke test: the training-throughput benchmark runs from the checkout and prints one JSON object."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

FIELDS = ("benchmark", "config", "tokens_per_s", "achieved_flops_per_s",
          "matmul_peak_flops_per_s", "fraction_of_peak", "step_median_s", "compile_s",
          "machine")


def test_train_throughput_tiny_preset():
  env = dict(os.environ, PYTHONPATH=".", JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)            # conftest's 8 fake devices: not for a benchmark
  # Reuse the tests' persistent compile cache (see conftest.py) across runs.
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get(
      "TTC_JAX_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ttc_jax", "xla_tests")))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  proc = subprocess.run(
      [sys.executable, "benchmarks/train_throughput.py", "--preset", "tiny",
       "--warmup", "1", "--repeats", "10", "--peak-sizes", "256", "--peak-repeats", "3"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{proc.stdout}"
  res = json.loads(lines[0])
  missing = [f for f in FIELDS if f not in res]
  assert not missing, missing
  assert res["benchmark"] == "train_throughput"
  cfg = res["config"]
  assert cfg["preset"] == "tiny"
  assert cfg["repeats"] >= 10
  assert cfg["model"]["num_kv_heads"] < cfg["model"]["num_heads"]   # GQA is exercised
  assert len(res["step_times_s"]) == cfg["repeats"]
  b, t = cfg["batch"], cfg["seq_len"]
  # Rows are real packed arithmetic examples: mostly non-padding, some loss targets.
  assert 0.5 < res["non_pad_fraction"] <= 1.0
  assert 0.0 < res["loss_token_fraction"] < res["non_pad_fraction"]
  for f in ("tokens_per_s", "achieved_flops_per_s", "matmul_peak_flops_per_s",
            "fraction_of_peak", "step_median_s"):
    assert res[f] > 0, (f, res[f])
  assert abs(res["tokens_per_s"] * res["step_median_s"] - b * t) < 1e-6 * b * t
  assert abs(res["fraction_of_peak"] - res["achieved_flops_per_s"]
             / res["matmul_peak_flops_per_s"]) < 1e-9
  assert res["compile_s"] >= 0
  assert res["final_loss"] == res["final_loss"]   # finite, not NaN
  assert res["machine"]["backend"] == "cpu"
