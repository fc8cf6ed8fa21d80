"""Smoke test: the labelling-throughput benchmark runs from the checkout, one JSON object."""

from bench_utils import run_benchmark

FIELDS = ("benchmark", "config", "batched", "naive", "speedup", "machine")


def test_label_throughput_tiny_preset():
  res = run_benchmark(
      "label_throughput.py",
      ["--preset", "tiny", "--repeats", "1", "--warmup", "0"],
      FIELDS,
      timeout=240,
  )
  assert res["benchmark"] == "label_throughput"
  assert res["config"]["prefixes"] == 8 and res["config"]["rollouts"] == 4
  for k in ("batched", "naive"):
    assert res[k]["prefix_rollouts_per_s"] > 0 and res[k]["generated_tokens"] > 0
  assert res["speedup"] > 0
