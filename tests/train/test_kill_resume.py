"""Exact resume: a policy training run killed with SIGKILL and restarted with the same
command ends with the same parameters, optimiser state, data position and metrics as an
uninterrupted run (bit for bit); the loop's replay of plain iterators, in-process."""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

from conftest import CHEAP_COMPILES, REPO_ROOT, tiny_config
from ttc_jax import config as config_lib
from ttc_jax import io_utils
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.transformer import create_model
from ttc_jax.train import loop, optim
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer

REPO = REPO_ROOT
CONFIG = os.path.join(REPO, "configs", "arith_smoke.py")
STEPS = 40
OVERRIDES = [
    f"--config.train.steps={STEPS}",
    "--config.train.checkpoint_every=10",
    "--config.train.log_every=10",
    "--config.train.eval_every=20",
    "--config.train.warmup_steps=4",
    "--config.task.train_per_level=50",
    "--config.task.test_per_level=10",
]
# The main job's own code path, stopped after the policy stage (run.py runs every stage).
DRIVER = """
import sys
from ttc_jax import config as config_lib, run
from ttc_jax.pipeline import Pipeline
cfg = config_lib.load_config(sys.argv[2], sys.argv[3:])
run.setup_jax_cache()
import jax
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)   # cache every compile
pipe = Pipeline(cfg, sys.argv[1], progress=False)
pipe.stage_data()
pipe.stage_policy()
print("DRIVER DONE")
"""
# Values a rerun must reproduce exactly (timings excluded).
EXACT = (
    "step",
    "loss",
    "grad_norm",
    "token_accuracy",
    "loss_tokens",
    "lr",
    "nonfinite",
    "skipped_steps",
)


def _env():
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      PYTHONPATH=REPO,
      # a 2-way data mesh
      XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {CHEAP_COMPILES}",
      TTC_JAX_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
  )
  return env


def _cmd(driver, workdir):
  return [sys.executable, str(driver), str(workdir), CONFIG] + OVERRIDES


def _finalized_steps(ck_dir):
  if not os.path.isdir(ck_dir):
    return []
  return [int(d) for d in os.listdir(ck_dir) if re.fullmatch(r"\d+", d)]


def _run(driver, workdir):
  r = subprocess.run(_cmd(driver, workdir), env=_env(), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0 and "DRIVER DONE" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
  return r.stdout


def _assert_bit_identical(a, b):
  pa = jax.tree_util.tree_leaves_with_path(jax.device_get(a))
  pb = jax.tree_util.tree_leaves_with_path(jax.device_get(b))
  assert [p for p, _ in pa] == [p for p, _ in pb] and pa
  differ = [
      jax.tree_util.keystr(p)
      for (p, x), (_, y) in zip(pa, pb)
      if not (x.dtype == y.dtype and np.array_equal(x, y))
  ]
  assert not differ, f"{len(differ)} of {len(pa)} arrays differ, e.g. {differ[:3]}"
  return len(pa)


def _restored(workdir, cfg):
  """(policy model params, final train checkpoint state, its meta) of a run directory."""
  mcfg = ModelConfig.from_dict(cfg.model.to_dict())
  model = create_model(mcfg, cfg.seed)
  ck = Checkpointer(os.path.join(workdir, "policy", "model"), async_save=False)
  params, _ = ck.restore(nnx.state(model))
  ck.close()
  t = cfg.train
  tx = optim.make_optimizer(
      t.lr, t.steps, t.warmup_steps, t.weight_decay, t.clip_norm, t.b1, t.b2, t.final_lr_fraction
  )
  target = Trainer(create_model(mcfg, cfg.seed), tx).state
  ck = Checkpointer(os.path.join(workdir, "policy", "checkpoints"), async_save=False)
  assert ck.latest_step() == STEPS
  state, meta = ck.restore(target, step=STEPS)
  ck.close()
  return params, state, meta


def test_sigkill_mid_run_then_rerun_matches_uninterrupted(tmp_path):
  t0 = time.perf_counter()
  driver = tmp_path / "driver.py"
  driver.write_text(DRIVER)
  cfg = config_lib.load_config(CONFIG, OVERRIDES)
  ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
  _run(driver, ref_dir)

  # Start the same run, SIGKILL it as soon as a checkpoint past step 0 is finalised.
  ck_dir = kill_dir / "policy" / "checkpoints"
  log = open(tmp_path / "killed.log", "w")
  proc = subprocess.Popen(_cmd(driver, kill_dir), env=_env(), stdout=log, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 240
  while proc.poll() is None and not _finalized_steps(ck_dir) and time.monotonic() < deadline:
    time.sleep(0.005)
  steps_at_kill = _finalized_steps(ck_dir)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  log.close()
  out = (tmp_path / "killed.log").read_text()
  assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{out[-3000:]}"
  assert steps_at_kill and max(steps_at_kill) < STEPS, (steps_at_kill, out[-3000:])
  assert not (kill_dir / "stages" / "policy.json").exists()
  assert not (kill_dir / "policy" / "model").exists()

  # The same command again: it resumes from its last checkpoint and finishes.
  out = _run(driver, kill_dir)
  m = re.search(r"\[policy\] resuming from step (\d+)", out)
  assert m, out[-3000:]
  resumed = int(m.group(1))
  assert 0 < resumed < STEPS
  assert "[data] done before" in out

  # Bit-identical parameters, optimiser state, data iterator position and final metrics.
  ref_params, ref_state, ref_meta = _restored(str(ref_dir), cfg)
  params, state, meta = _restored(str(kill_dir), cfg)
  n_params = _assert_bit_identical(ref_params, params)
  assert _assert_bit_identical(ref_state, state) > n_params  # + optimiser state
  assert meta["data_state"] == ref_meta["data_state"]
  assert {k: meta["last"][k] for k in EXACT} == {k: ref_meta["last"][k] for k in EXACT}

  # The logged curve: one line per logged step, the same values as the uninterrupted run.
  ref_rows = io_utils.read_jsonl(str(ref_dir / "policy" / "metrics.jsonl"))
  rows = io_utils.read_jsonl(str(kill_dir / "policy" / "metrics.jsonl"))
  assert (
      [r["step"] for r in rows] == [r["step"] for r in ref_rows] == list(range(10, STEPS + 1, 10))
  )
  for r, ref in zip(rows, ref_rows):
    keys = [k for k in ref if k in EXACT or k.startswith("eval_") or k.startswith("best_")]
    assert {k: r[k] for k in keys} == {k: ref[k] for k in keys}, r["step"]
  assert any(r["step"] > resumed for r in rows)
  ref_stage = io_utils.read_json(str(ref_dir / "stages" / "policy.json"))["outputs"]
  stage = io_utils.read_json(str(kill_dir / "stages" / "policy.json"))["outputs"]
  assert {k: stage["final_metrics"][k] for k in EXACT} == {
      k: ref_stage["final_metrics"][k] for k in EXACT
  }
  print(
      f"kill/resume test: resumed from step {resumed} (checkpoints at kill: "
      f"{sorted(steps_at_kill)}), {time.perf_counter() - t0:.1f}s"
  )


# --- in process: an iterator without get_state is replayed to the checkpoint ----------


def _batches(limit=None):
  rng = np.random.default_rng(0)
  for i in range(10**6):
    if limit is not None and i == limit:
      raise RuntimeError("simulated crash")
    x = rng.integers(3, 32, (4, 12)).astype(np.int32)
    yield dict(
        inputs=x,
        targets=np.roll(x, -1, 1),
        positions=np.tile(np.arange(12, dtype=np.int32), (4, 1)),
        segment_ids=np.ones((4, 12), np.int32),
        loss_mask=np.ones((4, 12), np.float32),
    )


def test_plain_iterator_is_replayed_and_metrics_are_not_duplicated(tmp_path):
  cfg = tiny_config()
  kw = dict(steps=8, checkpoint_every=3, log_every=1, progress=False)

  def trainer():
    return Trainer(create_model(cfg, 0), optax.adam(1e-2))

  ref = trainer()
  ref_last = loop.fit(ref, _batches(), metrics_path=str(tmp_path / "ref.jsonl"), **kw)

  ck = Checkpointer(str(tmp_path / "ck"))
  path = str(tmp_path / "m.jsonl")
  try:  # crashes fetching batch 5: checkpoint at step 3, metrics to step 4
    loop.fit(trainer(), _batches(limit=4), checkpointer=ck, metrics_path=path, **kw)
  except RuntimeError:
    pass
  ck.wait()
  assert ck.latest_step() == 3
  with open(path, "a") as f:
    f.write('{"step": 5, "loss": 1.')  # a line cut short by a kill
  again = trainer()
  last = loop.fit(again, _batches(), checkpointer=ck, metrics_path=path, **kw)
  ck.close()
  _assert_bit_identical(ref.state, again.state)
  rows, ref_rows = io_utils.read_jsonl(path), io_utils.read_jsonl(str(tmp_path / "ref.jsonl"))
  assert [r["step"] for r in rows] == list(range(1, 9))
  assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
  assert last["loss"] == ref_last["loss"]

  # A rerun after the last checkpoint trains nothing and returns the final metrics.
  ck = Checkpointer(str(tmp_path / "ck"))
  done = loop.fit(trainer(), _batches(), checkpointer=ck, metrics_path=path, **kw)
  ck.close()
  assert done["step"] == 8 and done["loss"] == last["loss"]
  assert len(io_utils.read_jsonl(path)) == 8
