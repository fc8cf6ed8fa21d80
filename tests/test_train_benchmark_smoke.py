"""Smoke test: the training-throughput benchmark runs from the checkout and prints one JSON object."""

from bench_utils import run_benchmark

FIELDS = ("benchmark", "config", "tokens_per_s", "achieved_flops_per_s",
          "matmul_peak_flops_per_s", "fraction_of_peak", "step_median_s", "compile_s",
          "machine")


def test_train_throughput_tiny_preset():
  res = run_benchmark("train_throughput.py",
                      ["--preset", "tiny", "--warmup", "1", "--repeats", "10",
                       "--peak-sizes", "256", "--peak-repeats", "3"], FIELDS, timeout=120)
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
