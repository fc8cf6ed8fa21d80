"""Smoke test: the sampler benchmark runs from the checkout and prints one JSON object."""

import importlib.util

import pytest

from bench_utils import run_benchmark

_HAVE_HF = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))

FIELDS = (
    "benchmark",
    "config",
    "ours_tokens_per_s",
    "hf_tokens_per_s",
    "speedup",
    "greedy_match",
    "ours_median_s",
    "hf_median_s",
    "compile_s",
    "machine",
)


@pytest.mark.skipif(not _HAVE_HF, reason="torch/transformers not importable")
def test_sampler_throughput_tiny_preset():
  res = run_benchmark(
      "sampler_throughput.py",
      ["--preset", "tiny", "--repeats", "1", "--warmup", "0", "--no-peak", "--host-devices", "2"],
      FIELDS,
      timeout=180,
  )
  assert res["benchmark"] == "sampler_throughput"
  cfg = res["config"]
  assert (cfg["batch"], cfg["prompt_len"], cfg["new_tokens"]) == (2, 4, 8)
  assert cfg["model"]["num_kv_heads"] < cfg["model"]["num_heads"]  # GQA is exercised
  # Identical float32 weights, greedy: every generated token agrees with HF's.
  assert res["greedy_match"] == 1.0, res.get("greedy_first_divergence")
  for f in ("ours_tokens_per_s", "hf_tokens_per_s", "speedup", "ours_median_s", "hf_median_s"):
    assert res[f] > 0, (f, res[f])
  assert res["compile_s"] >= 0
  assert res["machine"]["backend"] == "cpu"
  # The CPU split into 2 devices: our side runs data-parallel over both (the batch is
  # sharded, the tokens equal one device's), and is timed on one device in the same run.
  assert cfg["ours_devices"] == 2 and cfg["ours_mesh"]["data"] == 2
  for f in ("ours_one_device_tokens_per_s", "mesh_speedup", "speedup_one_device"):
    assert res[f] > 0, (f, res[f])
