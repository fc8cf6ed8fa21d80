"""Smoke test: the HF-checkpoint search benchmark exports, imports and searches a tiny model."""

from bench_utils import run_benchmark

FIELDS = ("benchmark", "config", "per_n", "num_params", "import_s", "machine")


def test_hf_search_tiny_preset():
  res = run_benchmark(
      "hf_search.py",
      ["--preset", "tiny", "--ns", "4", "--repeats", "1", "--warmup", "0"],
      FIELDS,
      timeout=300,
  )
  row = res["per_n"]["4"]
  assert res["param_dtype"] == "bfloat16" and res["num_params"] > 0
  assert row["questions_per_s"] > 0 and row["generations_per_s"] > 0 and row["median_s"] > 0
  assert row["kernel_memory"] == {} or row["kernel_memory"]["argument_size_in_bytes"] > 0
