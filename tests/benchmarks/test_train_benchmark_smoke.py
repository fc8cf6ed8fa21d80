"""Smoke test: the training-throughput benchmark runs from the checkout and prints one JSON object."""

from bench_utils import run_benchmark

FIELDS = (
    "benchmark",
    "config",
    "tokens_per_s",
    "achieved_flops_per_s",
    "matmul_peak_flops_per_s",
    "fraction_of_peak",
    "step_median_s",
    "compile_s",
    "machine",
)


def test_train_throughput_tiny_preset():
  res = run_benchmark(
      "train_throughput.py",
      [
          "--preset",
          "tiny",
          "--warmup",
          "1",
          "--repeats",
          "10",
          "--peak-sizes",
          "256",
          "--peak-repeats",
          "3",
      ],
      FIELDS,
      timeout=120,
  )
  assert res["benchmark"] == "train_throughput"
  cfg = res["config"]
  assert cfg["preset"] == "tiny"
  assert cfg["repeats"] >= 10
  assert cfg["model"]["num_kv_heads"] < cfg["model"]["num_heads"]  # GQA is exercised
  assert len(res["step_times_s"]) == cfg["repeats"]
  b, t = cfg["batch"], cfg["seq_len"]
  # Rows are real packed arithmetic examples: mostly non-padding, some loss targets.
  assert 0.5 < res["non_pad_fraction"] <= 1.0
  assert 0.0 < res["loss_token_fraction"] < res["non_pad_fraction"]
  for f in (
      "tokens_per_s",
      "achieved_flops_per_s",
      "matmul_peak_flops_per_s",
      "fraction_of_peak",
      "step_median_s",
  ):
    assert res[f] > 0, (f, res[f])
  assert abs(res["tokens_per_s"] * res["step_median_s"] - b * t) < 1e-6 * b * t
  assert (
      abs(res["fraction_of_peak"] - res["achieved_flops_per_s"] / res["matmul_peak_flops_per_s"])
      < 1e-9
  )
  assert res["compile_s"] >= 0
  assert res["final_loss"] == res["final_loss"]  # finite, not NaN
  assert res["machine"]["backend"] == "cpu"


def test_train_matmul_bound_tiny_preset():
  res = run_benchmark(
      "train_matmul_bound.py",
      [
          "--preset",
          "tiny",
          "--repeats",
          "10",
          "--microbatches",
          "2",
          "--peak-sizes",
          "256",
          "--peak-repeats",
          "3",
      ],
      FIELDS + ("matmul_bound",),
      timeout=120,
  )
  assert res["benchmark"] == "train_matmul_bound"
  mb, cfg = res["matmul_bound"], res["config"]
  m = cfg["model"]
  assert mb["calls_per_step"] == cfg["microbatches"] == 2
  assert mb["tokens_per_call"] * 2 == cfg["batch"] * cfg["seq_len"]
  # Forward, input and weight gradient of 7 projections per layer and the tied logits.
  d, hd, f = m["embed_dim"], m["head_dim"], m["mlp_dim"]
  per_layer = d * hd * (2 * m["num_heads"] + 2 * m["num_kv_heads"]) + 3 * d * f
  want = 3 * 2.0 * mb["tokens_per_call"] * (m["num_layers"] * per_layer + d * m["vocab_size"])
  assert abs(mb["flops_per_step"] - 2 * want) < 1e-6 * want
  assert abs(mb["seconds_per_step"] - 2 * mb["call_median_s"]) < 1e-12
  assert abs(mb["share_of_step"] - mb["seconds_per_step"] / res["step_median_s"]) < 1e-9
  peak = res["matmul_peak_flops_per_s"]
  assert abs(mb["fraction_of_peak"] - mb["flops_per_s"] / peak) < 1e-9
  assert (
      abs(mb["fraction_of_peak_bound"] - res["flops_per_step"] / mb["seconds_per_step"] / peak)
      < 1e-9
  )
