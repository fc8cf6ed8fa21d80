"""Smoke test: the search-speed benchmark runs from the checkout and prints one JSON object."""

from bench_utils import run_benchmark

FIELDS = ("benchmark", "config", "per_n", "max_rss_bytes", "machine")


def test_search_speed_tiny_preset():
  res = run_benchmark("search_speed.py", ["--preset", "tiny", "--ns", "4", "--repeats", "1",
                                          "--warmup", "0", "--no-peak"], FIELDS, timeout=300)
  row = res["per_n"]["4"]
  assert row["same_scores"] and row["speedup"] > 0 and row["generations"] == 2 * 4
  assert row["kernel_median_s"] > 0 and row["flops_per_s"] > 0
