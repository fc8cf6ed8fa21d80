"""Smoke test: the search-speed benchmark runs from the checkout and prints one JSON object."""

import json
import os
import subprocess
import sys

import pytest
from bench_utils import ROOT, run_benchmark

FIELDS = ("benchmark", "config", "per_n", "max_rss_bytes", "machine")


def test_search_speed_tiny_preset():
  res = run_benchmark(
      "search_speed.py",
      ["--preset", "tiny", "--ns", "4", "--repeats", "1", "--warmup", "0", "--no-peak"],
      FIELDS,
      timeout=300,
  )
  row = res["per_n"]["4"]
  assert row["same_scores"] and row["speedup"] > 0 and row["generations"] == 2 * 4
  assert row["kernel_median_s"] > 0 and row["flops_per_s"] > 0


@pytest.mark.xdist_group("smoke_run")  # shares conftest.smoke_run's run
def test_search_speed_on_a_finished_run(smoke_run):
  """--workdir: the run's trained policy and PRM on its held-out questions, its search settings."""
  import ml_collections

  res = run_benchmark(
      "search_speed.py",
      [
          "--workdir",
          smoke_run,
          "--ns",
          "4",
          "--questions",
          "2",
          "--repeats",
          "1",
          "--warmup",
          "0",
          "--no-peak",
      ],
      FIELDS,
      timeout=300,
  )
  with open(os.path.join(smoke_run, "config.json")) as f:
    sc = ml_collections.ConfigDict(json.load(f)).search
  c = res["config"]
  assert c["trained"] and c["questions"] == 2 and len(set(c["levels"])) == 2
  assert (c["max_rounds"], c["max_step_tokens"], c["temperature"]) == (
      sc.max_rounds,
      sc.max_step_tokens,
      sc.temperature,
  )
  row = res["per_n"]["4"]
  assert row["same_scores"] and row["generations"] == 2 * 4 and row["speedup"] > 0


def test_search_speed_names_a_missing_run(tmp_path):
  env = dict(os.environ, PYTHONPATH=".", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [
          sys.executable,
          "benchmarks/search_speed.py",
          "--workdir",
          str(tmp_path / "nope"),
          "--no-peak",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode != 0 and "config.json not found" in proc.stderr
