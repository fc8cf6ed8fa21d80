"""PRM/ORM data rows, batched scoring, early stopping, verifier evaluation."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax.models.reward import create_value_model
from ttc_jax.models.transformer import create_model
from ttc_jax.prm import data as prm_data
from ttc_jax.config import settings as config_settings
from ttc_jax.prm import evaluate, train as prm_train
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer
from ttc_jax.train import loop
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer

TOK = CharTokenizer()


def _record(question, steps, soft, correct):
  return dict(
      question=question,
      prompt=question + "\n",
      answer="0",
      level="x",
      steps=steps,
      soft=soft,
      hard=[float(v > 0) for v in soft],
      answer_correct=correct,
  )


def test_step_ends_are_delimiters_and_eos():
  ids, ends = prm_data.solution_tokens(TOK, "1+2*3\n", ["2*3=6", "1+6=7", "Answer: 7"])
  assert ids[0] == TOK.BOS and ids[-1] == TOK.EOS and ends[-1] == len(ids) - 1
  assert [ids[e] for e in ends[:-1]] == [TOK.newline_id] * 2
  assert TOK.decode(ids[1 : ends[0]]) == "1+2*3\n2*3=6"


def test_prm_and_orm_rows():
  rec = _record("1+2", ["1+2=3", "Answer: 3"], [0.75, 1.0], True)
  (prm,) = prm_data.examples_from_records(TOK, [rec], "prm", "soft")
  (orm,) = prm_data.examples_from_records(TOK, [rec], "orm")
  _, ends = prm_data.solution_tokens(TOK, rec["prompt"], rec["steps"])
  assert np.flatnonzero(prm["value_mask"]).tolist() == ends
  assert prm["value_targets"][ends].tolist() == [0.75, 1.0]
  assert np.flatnonzero(orm["value_mask"]).tolist() == ends[-1:]
  (hard,) = prm_data.examples_from_records(
      TOK, [dict(rec, soft=[0.25, 1.0], hard=[1.0, 1.0])], "prm", "hard"
  )
  assert hard["value_targets"][ends].tolist() == [1.0, 1.0]
  with pytest.raises(ValueError, match="unknown value model kind"):
    prm_data.examples_from_records(TOK, [rec], "rm")


def test_exact_label_rows_are_the_checkers_0_1_targets():
  rec = dict(_record("1+2*3", ["2*3=6", "1+6=8", "Answer: 8"], [0.5, 0.5, 0.25], False))
  rec["exact"] = [True, False, False]  # prm/labels.py: prefix_correct, then all_correct
  (ex,) = prm_data.examples_from_records(TOK, [rec], "prm", "exact")
  _, ends = prm_data.solution_tokens(TOK, rec["prompt"], rec["steps"])
  assert ex["value_targets"].dtype == np.float32
  assert ex["value_targets"][ends].tolist() == [1.0, 0.0, 0.0]
  assert np.flatnonzero(ex["value_mask"]).tolist() == ends
  with pytest.raises(ValueError, match="no 'exact' step labels"):
    prm_data.examples_from_records(
        TOK, [_record("1+2", ["Answer: 3"], [1.0], True)], "prm", "exact"
    )
  with pytest.raises(ValueError, match="unknown label type 'exakt'"):
    prm_data.examples_from_records(TOK, [rec], "prm", "exakt")


def test_label_sources_name_record_keys_and_label_stays_equivalent():
  import ml_collections

  from ttc_jax import config as config_lib

  assert config_lib.LABEL_SOURCES == {
      "monte_carlo": "soft",
      "exact": "exact",
      "monte_carlo_hard": "hard",
  }
  assert set(config_lib.LABEL_SOURCES.values()) == set(prm_data.LABELS)
  for label, source in (("soft", "monte_carlo"), ("hard", "monte_carlo_hard"), ("exact", "exact")):
    assert config_lib.label_source(dict(label=label)) == source
    assert config_lib.record_label(dict(label_source=source)) == label
    assert config_lib.record_label(dict(label=label, label_source=source)) == label
    # the stage hashes see one `label` field however it was written
    assert (
        config_lib.prm_section(dict(steps=2, label=label))
        == config_lib.prm_section(dict(steps=2, label_source=source))
        == config_lib.prm_section(dict(steps=2, label=label, label_source=source))
        == dict(steps=2, label=label)
    )
  assert config_lib.label_source(dict()) == "monte_carlo"
  with pytest.raises(
      config_lib.ConfigError, match=r"prm\.label='soft' and config\.prm\.label_source='exact'"
  ):
    config_lib.label_source(dict(label="soft", label_source="exact"))
  with pytest.raises(config_lib.ConfigError, match="label_source must be one of"):
    config_lib.label_source(dict(label_source="human"))
  cfg = config_lib.load_config("configs/arith_smoke.py")
  cfg.prm.label_source = "exact"  # contradicts the config's label="soft"
  with pytest.raises(config_lib.ConfigError, match="contradict"):
    config_lib.validate(cfg)
  del cfg.prm["label"]
  config_lib.validate(cfg)  # label_source alone
  assert config_lib.ablation_sources(cfg) == ()  # the smoke config's ("exact",) is the main one
  assert isinstance(cfg.prm, ml_collections.ConfigDict)


def test_heldout_split_is_by_question_and_deterministic():
  recs = [_record(f"{i}+{j}", ["Answer: 1"], [1.0], True) for i in range(20) for j in range(3)]
  tr, he = prm_data.split_records(recs, 0.25)
  assert {r["question"] for r in tr}.isdisjoint({r["question"] for r in he})
  assert len(tr) + len(he) == len(recs) and prm_data.split_records(recs, 0.25) == (tr, he)
  with pytest.raises(ValueError, match="held-out fraction"):
    prm_data.split_records(recs[:1], 0.25)


def test_score_solutions_equals_one_by_one():
  cfg = tiny_config(max_len=40)
  model = create_value_model(cfg, 3)
  prompts = ["1+2\n", "3*4-1\n", "5\n", "2+2\n"]
  texts = ["1+2=3\nAnswer: 3", "3*4=12\n12-1=11\nAnswer: 11", "", "2+2=5\nAnswer: 5\n"]
  got = evaluate.score_solutions(model, TOK, prompts, texts, batch_size=2)
  assert [len(g) for g in got] == [2, 3, 0, 2]
  for p, t, g in zip(prompts, texts, got):
    if not t:
      continue
    ids, ends = prm_data.solution_tokens(TOK, p, evaluate.text_steps(t))
    vals = model.score(jnp.asarray([ids]), jnp.asarray([len(ids)]))[0]
    np.testing.assert_allclose(g, np.asarray(vals)[ends], atol=1e-5)


def test_exact_labels_and_quality():
  q = "1+2*3"
  assert evaluate.exact_step_labels(q, "2*3=6\n1+6=7\nAnswer: 7", arith.check_solution) == [
      True,
      True,
      True,
  ]
  assert evaluate.exact_step_labels(q, "2*3=5\n1+5=6\nAnswer: 6", arith.check_solution) == [
      False,
      False,
      False,
  ]
  assert evaluate.exact_step_labels(q, "2*3=6\n1+6=7", arith.check_solution) is None
  vq = evaluate.verifier_quality(
      [[0.9, 0.8, 0.9], [0.2, 0.1, 0.1], [0.5]], [[True, True, True], [False, False, False], None]
  )
  assert vq["step_auroc"] == 1.0 and vq["first_error_accuracy"] == 1.0
  assert vq["num_solutions"] == 2 and vq["num_steps"] == 6


def test_selection_curves_keys_and_values():
  from ttc_jax.selection import best_of_n as evaluate

  records = [dict(sample_answers=["1", "2", "2", "1"], answer="1")]
  scores = {"prm": [[0.9], [0.1], [0.2], [0.8]]}
  c = evaluate.selection_curves(records, scores, (1, 2, 4), arith.equivalent)
  assert set(c) == {"majority", "prm_best_of_n", "prm_best_of_n_weighted"}
  assert c["prm_best_of_n"] == {1: 0.5, 2: 1.0, 4: 1.0}


def test_fit_early_stopping_keeps_best(tmp_path):
  """Eval loss rises after the first eval: training stops after `patience` evals."""
  cfg = tiny_config()
  model = create_model(cfg, 0)

  def loss_fn(m, batch):
    logits, _ = m(batch["inputs"], batch["positions"])
    return jnp.mean(logits**2) * batch["sign"][0, 0], {}

  rows = dict(
      inputs=np.full((2, 8), 5, np.int32), positions=np.tile(np.arange(8, dtype=np.int32), (2, 1))
  )
  train = iter(lambda: dict(rows, sign=np.ones((2, 1), np.float32)), None)
  evals = lambda: [dict(rows, sign=-np.ones((2, 1), np.float32))]  # improves as loss rises
  trainer = Trainer(model, optax.sgd(0.1), loss_fn=loss_fn)
  best = Checkpointer(str(tmp_path / "best"), max_to_keep=1, async_save=False)
  last = loop.fit(
      trainer,
      train,
      steps=50,
      eval_batches=evals,
      eval_every=2,
      log_every=2,
      patience=2,
      best_checkpointer=best,
      progress=False,
  )
  assert last["stopped_early"] and last["step"] == 6 and last["best_step"] == 2
  assert best.latest_step() == 2


def test_train_and_load_value_model(tmp_path):
  cfg = tiny_config(max_len=40)
  policy = create_model(cfg, 0)
  recs = [
      _record(f"{a}+{b}", [f"{a}+{b}={a + b}", f"Answer: {a + b}"], [0.5, 1.0], True)
      for a in range(5)
      for b in range(5)
  ]
  s = types.SimpleNamespace(
      steps=6,
      batch_size=4,
      seq_len=40,
      lr=1e-3,
      warmup_steps=1,
      weight_decay=0.0,
      clip_norm=1.0,
      b1=0.9,
      b2=0.95,
      final_lr_fraction=0.1,
      log_every=3,
      eval_every=3,
      patience=5,
      heldout_fraction=0.3,
  )
  s = config_settings.value_train_settings(s)
  out = prm_train.train_value_model(
      cfg,
      nnx.state(policy),
      TOK,
      recs,
      str(tmp_path / "prm"),
      s,
      kind="prm",
      meta=dict(tokenizer=TOK.fingerprint()),
      progress=False,
  )
  assert out["best_step"] in (3, 6) and out["train_solutions"] + out["heldout_solutions"] == 25
  m = prm_train.load_value_model(str(tmp_path / "prm" / "model"), cfg, TOK, kind="prm")
  h, _ = m.backbone.hidden(jnp.ones((1, 4), jnp.int32), jnp.arange(4)[None])
  assert np.isfinite(np.asarray(h)).all()
  with pytest.raises(ValueError, match="expected 'orm'"):
    prm_train.load_value_model(str(tmp_path / "prm" / "model"), cfg, TOK, kind="orm")


def test_calibrate_threshold_locates_first_errors():
  # right steps score 0.35-0.4, wrong ones 0.1: any cut in (0.1, 0.35] is perfect; 0.5 is not
  scores = [[0.4, 0.35, 0.1], [0.4, 0.4], [0.1, 0.05]]
  exact = [[True, True, False], [True, True], [False, False]]
  t = evaluate.calibrate_threshold(scores, exact)
  assert 0.1 < t <= 0.35
  from ttc_jax.prm import metrics

  assert metrics.first_error_accuracy(scores, exact, t)["accuracy"] == 1.0
  assert metrics.first_error_accuracy(scores, exact, 0.5)["accuracy"] < 1.0


def test_rollouts_become_extra_rows():
  from ttc_jax.prm import labels

  rec = dict(
      _record("1+2*3", ["2*3=6", "1+6=7", "Answer: 7"], [0.5, 0.25, 1.0], True),
      answer="7",
      rollouts=[["1+6=7\nAnswer: 7", "1+6=8\nAnswer: 8", "1+6="], ["Answer: 7"]],
  )
  outcome = labels.outcome_fn(arith.extract_answer, arith.equivalent)
  sols = prm_data.rollout_solutions(rec, outcome)
  assert [(len(s), k, ok) for s, k, ok in sols] == [(3, 0, True), (3, 0, False), (3, 1, True)]
  prm = prm_data.examples_from_records(TOK, [rec], "prm", outcome=outcome)
  orm = prm_data.examples_from_records(TOK, [rec], "orm", outcome=outcome)
  assert len(prm) == len(orm) == 4  # the sample + 3 usable rollouts
  _, ends = prm_data.solution_tokens(TOK, rec["prompt"], sols[1][0])
  row = prm[2]  # rollout "1+6=8" from prefix 0
  assert np.flatnonzero(row["value_mask"]).tolist() == [ends[0], ends[-1]]
  assert row["value_targets"][[ends[0], ends[-1]]].tolist() == [0.5, 0.0]
  assert np.flatnonzero(orm[2]["value_mask"]).tolist() == [ends[-1]]
  short = prm_data.examples_from_records(TOK, [rec], "prm", outcome=outcome, max_tokens=20)
  assert all(e["inputs"].shape[0] <= 20 for e in short) and len(short) < 4
