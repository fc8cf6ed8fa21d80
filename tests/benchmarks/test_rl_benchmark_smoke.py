"""Smoke test: the RL-throughput benchmark runs from the checkout and prints one JSON object."""

from bench_utils import run_benchmark

FIELDS = (
    "benchmark",
    "config",
    "contexts",
    "per_setting",
    "base",
    "ratios",
    "max_rss_bytes",
    "machine",
)
ROW = (
    "step_median_s",
    "rollout_median_s",
    "update_median_s",
    "samples_per_s",
    "generated_tokens_per_s",
    "learner_tokens_per_s",
    "compile_s",
    "rows_n",
    "seq_t",
)


def test_rl_throughput_smoke():
  res = run_benchmark("rl_throughput.py", ["--smoke"], FIELDS, timeout=300)
  assert res["benchmark"] == "rl_throughput" and res["config"]["smoke"]
  assert set(res["per_setting"]) == {"g2_w64", "g4_w64"} and res["base"] == "g2_w64"
  assert res["contexts"]["count"] > 0 and res["contexts"]["prompt_tokens"]["max"] > 0
  for name, row in res["per_setting"].items():
    missing = [k for k in ROW if k not in row]
    assert not missing, (name, missing)
    assert row["rows_n"] == 2 * row["group_size"] and row["seq_t"] == 64 + 16 - 1
    assert row["step_median_s"] > 0 and row["samples_per_s"] > 0 and row["loss_finite"]
    assert row["learner_tokens_per_s"] >= row["generated_tokens_per_s"] > 0
    assert set(row["compile_s"]) == {"rollout", "update"}
    assert 0 < row["rollout_fraction"] < 1
  assert res["ratios"]["g2_w64"]["step_time"] == 1.0
  assert res["ratios"]["g4_w64"]["samples_per_s"] > 0
  assert "load_avg_1_5_15" in res["machine"] and "jax_version" in res["machine"]
