"""Exact resume of the other trainers: PRM/ORM, revision SFT and revision RL.

Each test runs a tiny training job uninterrupted in one directory, and in another
directory interrupts the same job (an exception) after a checkpoint exists, then reruns
the same call. The rerun must resume from that checkpoint ("resuming from step 2", the
metrics lines logged after it dropped) and end bit for bit where the uninterrupted run
ended: the saved model, the best-so-far checkpoint, the final training checkpoint
(parameters, optimiser state and meta), the returned model and summary, and every
metrics.jsonl line (timings excluded). Two interruptions:

* "batch": the batch source raises when asked for step 4's batch (checkpoint at 2,
  metrics logged to step 3), as in tests/train/test_kill_resume.py's in-process test;
* "save": the training checkpoint of step 4 raises as it is started, after step 4's
  eval improved and best/4 was saved: a kill in that window leaves best/4 beside
  checkpoints/2, and the rerun saves best/4 again (orbax refused an existing step
  before `Checkpointer.save(replace=True)` in `train.loop.fit`).

The policy's version, with a SIGKILLed subprocess, is tests/train/test_kill_resume.py.
"""

import dataclasses
import os
import re
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax import io_utils
from ttc_jax.config import settings as config_settings
from ttc_jax.data import packing
from ttc_jax.models.transformer import create_model
from ttc_jax.prm import train as prm_train
from ttc_jax.revision import format as fmt
from ttc_jax.revision import rl, sft
from ttc_jax.tasks.arith import device as arith_device
from ttc_jax.tokenizers import CharTokenizer
from ttc_jax.train.checkpoint import Checkpointer

TOK = CharTokenizer()
TIMING = ("step_time_s", "tokens_per_s", "flops_per_s")
STEPS = 4  # checkpoints (and evals) at 2 and 4


class Crash(RuntimeError):
  pass


def _untimed(x):
  if isinstance(x, dict):
    return {k: _untimed(v) for k, v in x.items() if k not in TIMING}
  return x


def _assert_bit_identical(a, b):
  pa = jax.tree_util.tree_leaves_with_path(jax.device_get(a))
  pb = jax.tree_util.tree_leaves_with_path(jax.device_get(b))
  assert [p for p, _ in pa] == [p for p, _ in pb] and pa
  differ = [
      jax.tree_util.keystr(p)
      for (p, x), (_, y) in zip(pa, pb)
      if not (np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y))
  ]
  assert not differ, f"{len(differ)} of {len(pa)} arrays differ, e.g. {differ[:3]}"
  return len(pa)


def _raw(ck_dir, step=None):
  """(state as saved, meta) of a checkpoint, restored without a target."""
  ck = Checkpointer(ck_dir, async_save=False)
  step = ck.latest_step() if step is None else step
  out = ck.manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
  )
  ck.close()
  return out["state"], dict(out["meta"])


def _steps(ck_dir):
  ck = Checkpointer(ck_dir, async_save=False)
  steps = ck.all_steps()
  ck.close()
  return sorted(steps)


def _crash_at_batch(mp, at=4):
  """Both batch sources raise when asked for step `at`'s batch (after checkpoint 2)."""
  orig = packing.iterate_batches

  def batches(*a, **k):  # PRM/ORM and SFT: a plain generator
    for i, b in enumerate(orig(*a, **k)):
      if i == at - 1:
        raise Crash(f"interrupted fetching batch {at}")
      yield b

  mp.setattr(packing, "iterate_batches", batches)
  orig_next, calls = rl._repeat_updates.__next__, []

  def rollouts(self):  # RL: loop.fit's data in train_rl
    calls.append(1)
    if len(calls) == at:
      raise Crash(f"interrupted drawing batch {at}")
    return orig_next(self)

  mp.setattr(rl._repeat_updates, "__next__", rollouts)


def _crash_at_checkpoint_save(mp, step=4):
  orig = Checkpointer.save

  def save(self, s, *a, **k):
    if os.path.basename(self.directory) == "checkpoints" and s == step:
      raise Crash(f"interrupted before checkpoint {step} was written")
    return orig(self, s, *a, **k)

  mp.setattr(Checkpointer, "save", save)


def _check_exact_resume(run, tmp_path, monkeypatch, capsys, crash):
  """run(dir)() -> (returned model state or None, returned dict); see the module doc."""
  ref_dir, dir_ = str(tmp_path / "ref"), str(tmp_path / "interrupted")
  ref_state, ref = run(ref_dir)()
  with monkeypatch.context() as mp:
    (_crash_at_batch if crash == "batch" else _crash_at_checkpoint_save)(mp)
    with pytest.raises(Crash):
      run(dir_)()
  # The interrupted run's async checkpoint 2 (its Checkpointer was never closed).
  ck_dir = os.path.join(dir_, "checkpoints")
  deadline = time.monotonic() + 60
  while 2 not in _steps(ck_dir) and time.monotonic() < deadline:
    time.sleep(0.01)
  assert _steps(ck_dir) == [2]
  logged = [r["step"] for r in io_utils.read_jsonl(os.path.join(dir_, "metrics.jsonl"))]
  assert logged == ([1, 2, 3] if crash == "batch" else [1, 2, 3, 4])
  if crash == "save" and os.path.isdir(os.path.join(dir_, "best")):
    assert _steps(os.path.join(dir_, "best")) == [4]  # step 4 improved on step 2
  capsys.readouterr()

  state, out = run(dir_)()  # the same call again
  printed = capsys.readouterr().out
  m = re.search(r"resuming from step (\d+)", printed)
  assert m and m.group(1) == "2", printed
  assert f"dropped {len(logged) - 2} metrics line(s) logged after step 2" in printed, printed

  assert _untimed(out) == _untimed(ref)
  if ref_state is not None:
    _assert_bit_identical(ref_state, state)
  ref_model, ref_model_meta = _raw(os.path.join(ref_dir, "model"))
  model, model_meta = _raw(os.path.join(dir_, "model"))
  n = _assert_bit_identical(ref_model, model)
  assert model_meta == ref_model_meta
  ref_ck, ref_meta = _raw(os.path.join(ref_dir, "checkpoints"), STEPS)
  ck, meta = _raw(ck_dir, STEPS)
  assert _assert_bit_identical(ref_ck, ck) > n  # + optimiser state
  assert _untimed(meta) == _untimed(ref_meta)
  if os.path.isdir(os.path.join(ref_dir, "best")):
    assert _steps(os.path.join(dir_, "best")) == _steps(os.path.join(ref_dir, "best"))
    _assert_bit_identical(
        _raw(os.path.join(ref_dir, "best"))[0], _raw(os.path.join(dir_, "best"))[0]
    )
  ref_rows = io_utils.read_jsonl(os.path.join(ref_dir, "metrics.jsonl"))
  rows = io_utils.read_jsonl(os.path.join(dir_, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == list(range(1, STEPS + 1))
  for r, r_ref in zip(rows, ref_rows):
    assert _untimed(r) == _untimed(r_ref), r["step"]
  assert any(k.startswith("eval_") for k in rows[-1])
  return ref


def _sft_settings(seq_len):
  return ml_collections.ConfigDict(
      dict(
          steps=STEPS,
          batch_size=4,
          seq_len=seq_len,
          lr=3e-3,
          warmup_steps=1,
          weight_decay=0.01,
          clip_norm=1.0,
          b1=0.9,
          b2=0.95,
          final_lr_fraction=0.1,
          log_every=1,
          eval_every=2,
          patience=5,
          heldout_fraction=0.3,
      )
  )


# --- PRM / ORM --------------------------------------------------------------------------


def _value_records():
  recs = []
  for a in range(6):
    for b in range(5):
      right = (a + b) % 3 != 0
      ans = a + b if right else a + b + 1
      recs.append(
          dict(
              question=f"{a}+{b}",
              prompt=f"{a}+{b}\n",
              answer=str(a + b),
              level="x",
              steps=[f"{a}+{b}={ans}", f"Answer: {ans}"],
              soft=[0.75, 1.0] if right else [0.25, 0.0],
              hard=[1.0, 1.0] if right else [0.0, 0.0],
              answer_correct=right,
          )
      )
  return recs


@pytest.mark.parametrize("kind,crash", [("prm", "batch"), ("orm", "save")])
def test_value_model_resumes_exactly(tmp_path, monkeypatch, capsys, kind, crash):
  cfg = tiny_config(max_len=40)
  policy_state, recs = nnx.state(create_model(cfg, 0)), _value_records()
  s = types.SimpleNamespace(**_sft_settings(40).to_dict())  # attributes, as in test_prm
  s = config_settings.value_train_settings(s)

  def run(d):
    return lambda: (
        None,
        prm_train.train_value_model(
            cfg,
            policy_state,
            TOK,
            recs,
            d,
            s,
            kind=kind,
            seed=1,
            meta=dict(tokenizer=TOK.fingerprint()),
            progress=False,
        ),
    )

  ref = _check_exact_resume(run, tmp_path, monkeypatch, capsys, crash)
  assert ref["final_metrics"]["step"] == STEPS and ref["best_step"] in (2, 4)


# --- revision SFT -----------------------------------------------------------------------


def _trajectories():
  out = []
  for a in range(6):
    for b in range(5):
      q = f"{a}+{b}"
      wrong = [f"{q}={a + b + 1}\nAnswer: {a + b + 1}"][: (a + b) % 2]  # 0 or 1 in context
      out.append(
          dict(
              question=q,
              prompt=fmt.revision_prompt(q, wrong),
              target=f"{q}={a + b}\nAnswer: {a + b}",
          )
      )
  return out


@pytest.mark.parametrize("crash", ["batch", "save"])
def test_revision_sft_resumes_exactly(tmp_path, monkeypatch, capsys, crash):
  cfg, trajs, s = tiny_config(max_len=48), _trajectories(), _sft_settings(48)

  def run(d):
    def f():
      model, summary = sft.train_revision_model(
          create_model(cfg, 0),
          TOK,
          trajs,
          config_settings.sft_settings(s),
          d,
          seed=2,
          meta=dict(kind="revision"),
          progress=False,
      )
      return nnx.state(model), summary  # the returned (best) model

    return f

  ref = _check_exact_resume(run, tmp_path, monkeypatch, capsys, crash)
  assert ref["final_metrics"]["step"] == STEPS


# --- revision RL ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FirstTokenReward:
  """Toy reward: the attempt starts with `token`."""

  token: int

  def __call__(self, gen, glen, targets, tlen):
    return (gen[:, 0] == self.token) & (glen > 0)


@pytest.mark.parametrize("updates_per_batch", [1, 2])
def test_revision_rl_resumes_exactly(tmp_path, monkeypatch, capsys, updates_per_batch):
  """Rollouts are sampled with the current weights: the resumed run must redraw the same
  contexts and keys (RolloutSource state) from the restored weights."""
  cfg = tiny_config(max_len=32)
  contexts = [
      dict(prompt=fmt.revision_prompt(f"{a}+{b}", []), answer=str(a + b))
      for a in range(3)
      for b in range(3)
  ]
  held = [
      dict(prompt="7+1\n", answer="8"),
      dict(prompt=fmt.revision_prompt("2*3", ["5"]), answer="6"),
  ]
  s = ml_collections.ConfigDict(
      dict(
          steps=STEPS,
          prompts_per_step=2,
          group_size=4,
          temperature=1.0,
          max_new_tokens=4,
          lr=0.02,
          warmup_steps=1,
          clip_norm=10.0,
          clip_eps=0.2,
          kl_coef=0.05,
          advantage="group_normalized",
          loss="clipped_pg",
          updates_per_batch=updates_per_batch,
          log_every=1,
          eval_every=2,
          checkpoint_every=2,
      )
  )
  ids = TOK.encode(contexts[0]["prompt"], add_bos=True)
  logits, _ = create_model(cfg, 0)(jnp.asarray([ids]), jnp.arange(len(ids))[None])
  probs = np.asarray(logits[0, -1, TOK.NUM_SPECIAL : TOK.vocab_size])
  reward = FirstTokenReward(int(np.argmax(probs)) + TOK.NUM_SPECIAL)  # rewarded now and then

  def run(d):
    def f():
      model = create_model(cfg, 0)
      last = rl.train_rl(
          model,
          create_model(cfg, 0),
          TOK,
          contexts,
          held,
          config_settings.rl_settings(s),
          d,
          reward_fn=reward,
          encode_targets=arith_device.encode_targets,
          seed=3,
          meta=dict(kind="rl"),
          progress=False,
      )
      return nnx.state(model), last  # the model is trained in place

    return f

  ref = _check_exact_resume(run, tmp_path, monkeypatch, capsys, "batch")
  rows = io_utils.read_jsonl(str(tmp_path / "ref" / "metrics.jsonl"))
  assert ref["step"] == STEPS and max(r["reward"] for r in rows) > 0  # a real gradient
