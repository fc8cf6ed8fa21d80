"""`python -m ttc_jax.aot`: topology names, the figures read from compiled programs, the fitting
search of --find-max, bad input, and a tiny config compiled for a TPU topology (skipped when
libtpu is absent: it is in the test extras)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

from ttc_jax.aot import analysis, chips, cli
from ttc_jax.aot.chips import AotInputError, resolve_topology

SMOKE = "configs/arith_smoke.py"


def _aot(*args):
  """`python -m ttc_jax.aot ARGS` in its own process: libtpu stays out of the test workers
  (loaded next to XLA:CPU's persistent-cache reads it crashed them) -> (rc, stdout, stderr)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "ttc_jax.aot", *args],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  return out.returncode, out.stdout, out.stderr


def test_cloud_slice_names_resolve_to_libtpu_grids():
  assert resolve_topology("v5e-8") == "v5e:2x4"
  assert resolve_topology("v5litepod-4") == "v5e:2x2"
  assert resolve_topology("v6e-8") == "v6e:2x4"
  assert resolve_topology("v4-8") == "v4:2x2x1"  # 8 TensorCores = 4 chips
  assert resolve_topology("v5p-8") == "v5p:2x2x1"
  assert resolve_topology("v5p-16") == "v5p:2x2x2"
  assert resolve_topology("v5e:2x2") == "v5e:2x2"  # libtpu's own names pass through
  with pytest.raises(AotInputError, match="no known chip grid"):
    resolve_topology("v5e-7")


def test_chip_figures_are_per_device():
  v4 = chips.CHIPS["TPU v4"]
  assert v4.hbm_bytes_per_device == 16 * chips.GiB  # one device per TensorCore
  assert v4.peak_flops_per_device == pytest.approx(137.5e12)
  assert chips.CHIPS["TPU v5 lite"].hbm_bytes_per_device == 16 * chips.GiB


def test_collectives_are_counted_once_per_op():
  hlo = """
  %ag = f32[8,4]{1,0} all-gather(f32[1,4]{1,0} %p), dimensions={0}
  %ars = f32[4]{0} all-reduce-start(f32[4]{0} %x), to_apply=%add
  %ard = f32[4]{0} all-reduce-done(f32[4]{0} %ars)
  %rs = f32[1]{0} reduce-scatter(f32[8]{0} %y), dimensions={0}
  %cp = f32[4]{0} collective-permute(f32[4]{0} %z), source_target_pairs={{0,1}}
  """
  assert analysis.count_collectives(hlo) == {
      "all-gather": 1,
      "all-reduce": 1,
      "reduce-scatter": 1,
      "all-to-all": 0,
      "collective-permute": 1,
  }


def test_out_of_memory_message_gives_figures():
  msg = (
      "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
      "temporaries (18.00G) exceeds available HBM (15.75G)."
  )
  got = analysis.oom_figures(msg)
  assert got == dict(
      required_bytes=18 * 2**30, available_bytes=int(15.75 * 2**30), what="HLO temporaries"
  )
  assert analysis.oom_figures("INVALID_ARGUMENT: something else") is None


def test_roofline_is_the_slower_of_compute_and_memory():
  chip = chips.CHIPS["TPU v5 lite"]
  assert analysis.roofline_seconds(197e12, 0.0, chip) == pytest.approx(1.0)
  assert analysis.roofline_seconds(0.0, 819e9 * 2, chip) == pytest.approx(2.0)


def test_find_max_bisects_to_the_largest_fitting_value(monkeypatch):
  from ttc_jax import config as config_lib

  cfg = config_lib.load_config(SMOKE)
  seen = []

  def fake_check(c, topology, globs, prompt_len):
    v = c.search.budgets[0]
    seen.append(v)
    return dict(fits=v <= 37, programs={}, hbm_bytes_per_device=1)

  monkeypatch.setattr(cli, "check", fake_check)
  cfg.search.budgets = (4,)
  out = cli.find_max(cfg, "search.budgets", "v5e:2x2", "*", None)
  assert 37 - 37 // 8 <= out["max_fitting"] <= 37 and out["report"]["fits"]
  assert max(seen) == 64  # doubled past the limit, then bisected
  cfg.search.budgets = (256,)  # starts above: halves until it fits
  assert cli.find_max(cfg, "search.budgets", "v5e:2x2", "*", None)["max_fitting"] <= 37
  with pytest.raises(AotInputError, match="no field"):
    cli.find_max(cfg, "search.nope", "v5e:2x2", "*", None)


def test_bad_input_exits_2(capsys):
  assert cli.main(["--config", "configs/does_not_exist.py", "--topology", "v5e:2x2"]) == 2
  assert "error" in capsys.readouterr().err


def test_unknown_topology_exits_2():
  pytest.importorskip("libtpu")
  rc, _, err = _aot("--config", SMOKE, "--topology", "v9z-8x8")
  assert rc == 2
  assert "unknown TPU topology 'v9z-8x8'" in err


def test_smoke_programs_compile_for_a_tpu_topology(tmp_path):
  pytest.importorskip("libtpu")
  out = tmp_path / "aot.json"
  rc, stdout, _ = _aot(
      *[
          "--config",
          SMOKE,
          "--topology",
          "v5e:2x2",
          "--programs",
          "policy_train,search.beam_m4.*,eval_sampler",
          "--compare-unshared",
          "--out",
          str(out),
      ]
  )
  assert rc == 0
  rep = json.loads(out.read_text())
  assert rep["devices"] == 4 and rep["device_kind"] == "TPU v5 lite"
  assert rep["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1, "devices": 4}
  assert sorted(rep["programs"]) == [
      "eval_sampler",
      "policy_train",
      "search.beam_m4.4",
      "search.beam_m4.4.unshared",
  ]
  shared, plain = rep["programs"]["search.beam_m4.4"], rep["programs"]["search.beam_m4.4.unshared"]
  assert shared["shapes"]["share_prefix"] and not plain["shapes"]["share_prefix"]
  assert shared["argument_bytes"] == plain["argument_bytes"]  # the same weights and prompts
  sampler = rep["programs"]["eval_sampler"]
  assert sampler["parts"]["eval_sampler.prefill"]["flops"] > 0
  assert (
      sampler["loops"]["eval_sampler.decode_step"]["iterations"]
      == sampler["shapes"]["max_new_tokens"]
  )
  train = rep["programs"]["policy_train"]
  for key in ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes_per_device", "flops"):
    assert train[key] > 0, key
  assert train["fits"] and train["collectives"]["all-reduce"] >= 1  # data-parallel gradients
  assert train["pallas_kernels"] >= 2  # attention "auto" is splash on TPU: forward + backward
  search = rep["programs"]["search.beam_m4.4"]
  loops = search["loops"]
  decode = loops["search.beam_m4.4.policy_decode_step"]
  assert decode["iterations"] == 4 * 16  # max_rounds x max_step_tokens (arith_smoke)
  extra = sum((b["iterations"] - 1) * b["flops"] for b in loops.values())
  assert search["totals"]["flops"] == pytest.approx(search["flops"] + extra)
  assert 0 < search["totals"]["flop_fraction"] <= 1
  assert json.loads(stdout) == rep
  from ttc_jax.aot import table

  md = table.markdown(rep)
  row = next(line for line in md.splitlines() if line.startswith("| policy_train |"))
  assert "rows=16" in row and "seq_len=64" in row and "| yes |" in row
  assert md.count("\n| ") == 1 + 4  # the header, then one row per program


def test_a_program_over_hbm_exits_1():
  pytest.importorskip("libtpu")
  rc, stdout, stderr = _aot(
      *[
          "--config",
          SMOKE,
          "--topology",
          "v5e:2x2",
          "--programs",
          "prm_score",
          "--config.verify.score_batch=4000000",
      ]
  )
  assert rc == 1
  rep = json.loads(stdout)
  prog = rep["programs"]["prm_score"]
  assert not prog["fits"] and prog["total_bytes_per_device"] > rep["hbm_bytes_per_device"]
  assert "does not fit: prm_score needs" in stderr


def test_hf_configs_need_only_config_json_for_aot():
  from ttc_jax import config as config_lib

  over = [
      "--config.hf.policy=configs/hf_shapes/Qwen2.5-Math-1.5B-Instruct",
      "--config.hf.prm=configs/hf_shapes/Qwen2.5-Math-PRM-7B",
  ]
  cfg = config_lib.load_config("configs/math_hf.py", over, shapes_only=True)
  assert cfg.hf.prm.endswith("Qwen2.5-Math-PRM-7B")
  with pytest.raises(config_lib.ConfigError, match="data.manual_dir"):
    config_lib.load_config("configs/math_hf.py", over)  # a run needs its data
  with pytest.raises(config_lib.ConfigError, match="hf.policy"):
    config_lib.load_config("configs/math_hf.py", over[1:], shapes_only=True)


def test_hf_shapes_give_the_published_parameter_counts():
  from ttc_jax import io_utils
  from ttc_jax.models.hf_config import config_from_hf

  expect = {  # billions, from the model cards
      "Qwen2.5-Math-1.5B-Instruct": 1.54,
      "Qwen2.5-Math-7B-Instruct": 7.62,
      "Qwen2.5-Math-PRM-7B": 7.62,  # backbone and its (unused) LM head
      "Llama-3.2-1B-Instruct": 1.24,
      "Llama-3.1-8B-Instruct": 8.03,
  }
  for name, billions in expect.items():
    cfg = config_from_hf(io_utils.read_json(f"configs/hf_shapes/{name}/config.json"))
    assert cfg.num_params / 1e9 == pytest.approx(billions, abs=0.01), name


def test_missing_libtpu_exits_2_with_the_install_line(monkeypatch, capsys):
  import sys

  monkeypatch.setitem(sys.modules, "libtpu", None)  # `import libtpu` raises ImportError
  assert cli.main(["--config", SMOKE, "--topology", "v5e-8"]) == 2
  assert 'pip install "jax[tpu]==0.10.2"' in capsys.readouterr().err
