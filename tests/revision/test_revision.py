"""Revision data and chains: trajectory builder, prompt format, truncation, device chains."""

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from ttc_jax import sampling
from ttc_jax.config import settings as config_settings
from ttc_jax.models.transformer import create_model
from ttc_jax.revision import chains, format as fmt, trajectories as traj
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer

TOK = CharTokenizer()


def _dp_distance(a, b):
  d = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    prev, d[0] = d[:], i
    for j, cb in enumerate(b, 1):
      d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (ca != cb))
  return d[-1]


def test_edit_distance_matches_dynamic_programming():
  r = random.Random(0)
  for _ in range(500):
    a = "".join(r.choice("12+=\n") for _ in range(r.randint(0, 90)))
    b = "".join(r.choice("12+=\n") for _ in range(r.randint(0, 90)))
    assert traj.edit_distance(a, b) == _dp_distance(a, b)


def test_trajectory_puts_closest_wrong_last_and_never_leaks_target():
  q = "3*4+5"
  right = "3*4=12\n12+5=17\nAnswer: 17"
  near = "3*4=12\n12+5=18\nAnswer: 18"  # one character away
  far = ["3*4=7\n7+5=99\nAnswer: 99", "1+1=2\nAnswer: 2", "3*4=13\n13+5=3\nAnswer: 3"]
  samples = far + [near, right, right]
  ok = [arith.is_correct(s, 17) for s in samples]
  assert ok == [False, False, False, False, True, True]
  rng = np.random.default_rng(0)
  seen_k = set()
  for _ in range(40):
    out = traj.build_trajectories(q, samples, ok, rng, max_context=4)
    assert len(out) == 2  # one per correct sample
    t = out[0]
    seen_k.add(t["k"])
    assert t["target"] == right
    assert len(set(t["attempts"])) == t["k"] <= 4
    if t["k"]:
      assert t["attempts"][-1] == near
    for a in t["attempts"]:
      assert not arith.is_correct(a, 17) and a != right
    assert t["prompt"] == fmt.revision_prompt(q, t["attempts"])
    assert right not in t["prompt"]
  assert seen_k == {0, 1, 2, 3, 4}  # k ~ Uniform{0..4}, capped by 4 wrong


def test_trajectory_k_capped_by_available_wrong_answers():
  out = traj.build_trajectories(
      "1+1",
      ["1+1=3\nAnswer: 3", "1+1=2\nAnswer: 2"],
      [False, True],
      np.random.default_rng(1),
      max_context=4,
  )
  assert all(t["k"] <= 1 for t in out)
  assert (
      traj.build_trajectories("1+1", ["1+1=3\nAnswer: 3"], [False], np.random.default_rng(0)) == []
  )


def _keep_case():
  q = "3*4+5"
  right = "3*4=12\n12+5=17\nAnswer: 17"
  wrong = ["3*4=12\n12+5=18\nAnswer: 18", "3*4=7\n7+5=99\nAnswer: 99", "1+1=2\nAnswer: 2"]
  samples = wrong + [right, right, right]
  return q, right, wrong, samples, [arith.is_correct(s, 17) for s in samples]


def test_keep_fraction_zero_is_the_papers_data():
  q, _, _, samples, ok = _keep_case()
  a = traj.build_trajectories(q, samples, ok, np.random.default_rng(3), max_context=4)
  b = traj.build_trajectories(
      q, samples, ok, np.random.default_rng(3), max_context=4, keep_fraction=0.0
  )
  assert a == b and {t["kind"] for t in a} == {"revise"}


def test_keep_trajectories_end_with_a_right_attempt_after_wrong_ones():
  q, right, wrong, samples, ok = _keep_case()
  rng = np.random.default_rng(0)
  seen_k, kinds = set(), []
  for _ in range(60):
    for t in traj.build_trajectories(q, samples, ok, rng, max_context=4, keep_fraction=0.5):
      kinds.append(t["kind"])
      assert t["target"] == right and t["prompt"] == fmt.revision_prompt(q, t["attempts"])
      assert t["k"] == len(t["attempts"])
      if t["kind"] == "keep":
        seen_k.add(t["k"])
        assert t["attempts"][-1] == right
        assert len(set(t["attempts"][:-1])) == t["k"] - 1
        assert all(a in wrong for a in t["attempts"][:-1])
      else:
        assert right not in t["prompt"]
  assert seen_k == {1, 2, 3, 4}  # 1 right + Uniform{0..3} wrong, capped by 3
  assert 0.35 < kinds.count("keep") / len(kinds) < 0.65
  only_right = traj.build_trajectories(
      "1+1", ["1+1=2\nAnswer: 2"], [True], np.random.default_rng(0), keep_fraction=1.0
  )
  assert only_right[0]["attempts"] == ["1+1=2\nAnswer: 2"]  # the target itself in context
  assert traj.summarize(only_right)["kinds"] == {"keep": 1}
  with pytest.raises(ValueError, match="keep_fraction"):
    traj.build_trajectories(q, samples, ok, rng, keep_fraction=-0.1)


def test_prompt_format_and_truncation():
  atts = [f"1+{i}={i + 1}\nAnswer: {i + 1}" for i in range(6)]
  assert fmt.revision_prompt("1+1", []) == "1+1\n"
  p = fmt.revision_prompt("1+1", fmt.truncate(atts, 4))
  assert p == "1+1\n" + "".join(a + "\n\n" for a in atts[2:])
  assert fmt.truncate(atts, 0) == [] and fmt.truncate(atts[:2], 4) == atts[:2]
  assert fmt.truncate(atts[:3], 4) == atts[:3]
  assert fmt.clean_attempt("\n1+1=2\n\n\nAnswer: 2\n\n") == "1+1=2\nAnswer: 2"


def test_question_last_format_puts_the_question_right_before_the_new_attempt():
  atts = ["1+2=3\nAnswer: 3", "\n1+2=4\n\nAnswer: 4\n"]
  assert fmt.revision_prompt("1+2", [], "last") == fmt.revision_prompt("1+2", []) == "1+2\n"
  assert fmt.revision_prompt("1+2", atts, "last") == "1+2=3\nAnswer: 3\n\n1+2=4\nAnswer: 4\n\n1+2\n"
  with pytest.raises(ValueError, match="question position"):
    fmt.revision_prompt("1+2", atts, "middle")
  rng = np.random.default_rng(0)
  samples = ["1+2=3\nAnswer: 3", "1+2=4\nAnswer: 4", "1+2=5\nAnswer: 5"]
  for t in traj.build_trajectories(
      "1+2", samples, [True, False, False], rng, keep_fraction=0.5, question_position="last"
  ):
    assert t["prompt"] == fmt.revision_prompt("1+2", t["attempts"], "last")
    assert t["prompt"].endswith("1+2\n")
    assert t["kind"] == "keep" or t["target"] not in t["prompt"]


def test_chain_lengths_cover_every_split():
  lengths = chains.chain_lengths((1, 2, 4, 8, 16))
  assert lengths == [16, 8, 4, 4, 2, 2, 2, 2] + [1] * 8
  assert sum(lengths) == 48
  for n in (1, 2, 4, 8, 16):
    for c, l in chains.splits(n):
      assert c * l == n and all(lengths[i] >= l for i in range(c))
  assert chains.chain_lengths((4,), min_chains=3, min_steps=8)[:3] == [8, 8, 8]
  with pytest.raises(ValueError, match="powers of two"):
    chains.chain_lengths((6,))


@pytest.mark.parametrize("position", fmt.QUESTION_POSITIONS)
def test_device_assembled_prompt_equals_host_format(position):
  ids = chains.TokenIds.from_tokenizer(TOK)
  atts = [
      "1+2=3\nAnswer: 3",
      "\n2*2=4\n\nAnswer: 4\n",
      "Answer: 5",
      "9-1=8\nAnswer: 8",
      "7*7=49\nAnswer: 49",
      "Answer: 0",
  ]
  a = 24
  hist = np.zeros((1, 8, a), np.int32)
  hlen = np.zeros((1, 8), np.int32)
  for t, s in enumerate(atts):
    enc = TOK.encode(s) + [TOK.EOS, TOK.PAD, 5]  # tokens after EOS are ignored
    hist[0, t, : len(enc)] = enc
    hlen[0, t] = len(enc)
  qt, ql = TOK.encode_batch(["2+3*4\n"], 8, add_bos=True)
  for step in range(len(atts) + 1):
    for ctx in (1, 4):
      prompts, plen = chains.assemble_prompts(
          jnp.asarray(qt),
          jnp.asarray(ql),
          jnp.asarray(hist),
          jnp.asarray(hlen),
          jnp.int32(step),
          context=ctx,
          ids=ids,
          question_position=position,
      )
      want = [TOK.BOS] + TOK.encode(
          fmt.revision_prompt("2+3*4", fmt.truncate(atts[:step], ctx), position)
      )
      assert int(plen[0]) == len(want)
      assert np.asarray(prompts[0, : len(want)]).tolist() == want
      assert not np.asarray(prompts[0, len(want) :]).any()


@pytest.mark.parametrize("position", fmt.QUESTION_POSITIONS)
def test_greedy_chains_equal_host_revision_loop(position):
  cfg = tiny_config(max_len=160)
  model = create_model(cfg, 3)
  qs = ["1+2", "3*4-5"]
  lengths = [3, 2, 1]
  hist, hlen, stats = chains.run_chains(
      model,
      TOK,
      qs,
      lengths,
      jax.random.key(0),
      context=2,
      max_new_tokens=12,
      temperature=0.0,
      max_rows=64,
      question_position=position,
  )
  assert hist.shape == (2, 3, 3, 12) and hlen.shape == (2, 3, 3)
  assert (hlen[:, 1, 2] == 0).all() and (hlen[:, 2, 1:] == 0).all()
  assert stats["generations"] == 12
  texts = chains.attempt_texts(TOK, hist, hlen)
  params = sampling.SamplingParams.make(0.0, vocab_limit=TOK.vocab_size)
  for b, q in enumerate(qs):
    for c, n in enumerate(lengths):
      assert len(texts[b][c]) == n
      done = []
      for t in range(n):
        prompt = fmt.revision_prompt(q, fmt.truncate(done, 2), position)
        toks, lens = TOK.encode_batch([prompt], 96, add_bos=True)
        out = sampling.generate(
            model, toks, lens, jax.random.key(1), max_new_tokens=12, eos_id=TOK.EOS, params=params
        )
        ref = np.asarray(out.tokens[0, 0, : int(out.lengths[0, 0])]).tolist()
        assert hist[b, c, t, : hlen[b, c, t]].tolist() == ref, (b, c, t)
        done.append(fmt.clean_attempt(TOK.decode(ref)))
      assert texts[b][c] == done


def _eq(a, b):
  return arith.equivalent(a, b)


def test_hierarchical_selection_within_then_across_chains():
  from ttc_jax.selection import chains as evaluate
  # chain 0: "5" twice (0.4 + 0.4 = 0.8) beats "7" (0.7); chain 1: "7" (0.9).
  answers = [["5", "7", "5"], ["7"]]
  scores = [[0.4, 0.7, 0.4], [0.9]]
  assert evaluate.hierarchical(answers, scores, _eq) == "7"  # 0.9 > 0.8 across chains
  assert evaluate.hierarchical([["5", "7", "5"]], [scores[0]], _eq) == "5"
  assert evaluate.select("majority", answers, None, _eq) == "5"  # flat: 5 x2, 7 x2, first seen


def test_split_accuracy_flips_and_pass_at_step():
  from ttc_jax.revision import evaluate

  rec = dict(
      question="q",
      level="a",
      target="3",
      answers=[["3", "4", "3", "3"], ["4", "4"], ["3"], ["4"]],
      correct=[[True, False, True, True], [False, False], [True], [False]],
      scores=[[0.9, 0.1, 0.8, 0.7], [0.2, 0.3], [0.6], [0.5]],
  )
  assert evaluate.split_accuracy([rec], 1, 4, "majority", _eq) == 1.0
  assert evaluate.split_accuracy([rec], 2, 2, "orm", _eq) == 1.0  # chain0 "3"(0.9) vs "4"(0.5)
  assert evaluate.split_accuracy([rec], 4, 1, "majority", _eq) == 1.0  # 3,4,3,4: first seen
  with pytest.raises(ValueError, match="too few attempts"):
    evaluate.split_accuracy([rec], 2, 4, "orm", _eq)
  assert evaluate.pass_at_step([rec], 5) == [0.5, 0.0, 1.0, 1.0, None]
  f = evaluate.flips([rec])
  # right->next: (T,F) (T,T) -> 1 of 2; wrong->next: (F,T) (F,F) -> 1 of 2
  assert (f["right_to_wrong"], f["wrong_to_right"]) == (0.5, 0.5)
  curves = evaluate.budget_curves([rec], (1, 2), _eq)
  assert set(curves["splits"]["orm"][2]) == {"2x1", "1x2"}
  assert curves["sequential"]["majority"][2] == evaluate.split_accuracy(
      [rec], 1, 2, "majority", _eq
  )


def test_paired_gain_and_its_standard_error():
  from ttc_jax.revision import evaluate

  def recs(first_answers):  # one chain of one attempt per question, target "1"
    return [
        dict(question=f"q{i}", target="1", answers=[[a]], scores=[[0.5]])
        for i, a in enumerate(first_answers)
    ]

  base, other = recs(["1", "0", "0", "1"]), recs(["1", "1", "1", "0"])
  g = evaluate.paired_gain(base, other, 1, 1, "majority", _eq)
  d = np.array([0.0, 1.0, 1.0, -1.0])  # other - base per question
  assert g["questions"] == 4 and g["gain"] == pytest.approx(0.25)
  assert g["standard_error"] == pytest.approx(d.std(ddof=1) / 2.0)
  assert np.isnan(evaluate.paired_gain(base[:1], other[:1], 1, 1, "orm", _eq)["standard_error"])
  with pytest.raises(ValueError, match="same questions"):
    evaluate.paired_gain(base, other[::-1], 1, 1, "orm", _eq)


@pytest.mark.parametrize(
    "override,message",
    [
        ("revision.rl.advantage='grpo2'", "not registered"),
        ("revision.rl.group_size=1", "group_size must be >= 2"),
        ("revision.eval.budgets=(1,3)", "powers of two"),
        ("revision.sft.seq_len=1024", "exceeds config.revision.max_len"),
        ("revision.rl.checkpoint_every=3", "multiple of updates_per_batch"),
        ("revision.data.keep_fraction=1.5", "keep_fraction must lie in"),
        ("revision.sft.replay_fraction=1.0", "replay_fraction must lie in"),
        ("revision.sft.replay_foreign_fraction=1.5", "replay_foreign_fraction must lie in"),
        ("revision.rl.contexts='easy'", "contexts must be one of"),
        ("revision.question_position='middle'", "question_position must be one of"),
    ],
)
def test_bad_revision_config_is_named(override, message):
  from ttc_jax import config as config_lib
  from ttc_jax.config.revision import validate_revision

  cfg = config_lib.load_config_file("configs/arith_smoke.py")
  if "checkpoint_every" in override:
    cfg.revision.rl.updates_per_batch = 2
  cfg = config_lib.apply_overrides(cfg, [override])
  with pytest.raises(ValueError, match=message):
    validate_revision(cfg)


def test_foreign_context_takes_other_questions_attempts_of_the_same_level():
  """Foreign-context replay rows: 1..max_context attempts, each written for another question
  of the row's level, in a revision prompt; the target stays the reference solution."""
  from ttc_jax.revision import sft

  pool = [
      dict(
          question=f"{a}+{b}",
          level=lv,
          attempts=[f"{a}+{b}={a + b + w}\nAnswer: {a + b + w}" for w in (off, off + 1)],
      )
      for lv, off in (("ops=1", 0), ("ops=2", 5))
      for a in range(3)
      for b in range(3)
  ]
  owner = {a: (t["question"], t["level"]) for t in pool for a in t["attempts"]}
  rows = [
      dict(
          question=f"{a}+{b}",
          level="ops=1",
          prompt=f"{a}+{b}\n",
          target=f"{a}+{b}={a + b}\nAnswer: {a + b}",
      )
      for a in range(3)
      for b in range(3)
  ]
  rng = np.random.default_rng(0)
  out = sft.foreign_context(rows, pool, 1.0, max_context=3, rng=rng)
  assert len(out) == len(rows)
  ks = []
  for row, new in zip(rows, out):
    assert new["target"] == row["target"] and new["question"] == row["question"]
    k = new["foreign"]
    ks.append(k)
    ctx = new["prompt"][len(row["prompt"]) :].split(fmt.SEPARATOR)[:-1]
    assert new["prompt"] == fmt.revision_prompt(row["question"], ctx) and len(ctx) == k
    assert 1 <= k <= 3 and len(set(ctx)) == k
    for a in ctx:
      assert owner[a][0] != row["question"] and owner[a][1] == "ops=1"
  assert len(set(ks)) > 1
  # fraction 0, or a level with no attempts in the pool: rows come back as they are
  assert sft.foreign_context(rows, pool, 0.0, max_context=3, rng=rng) == rows
  other = [dict(r, level="ops=5") for r in rows]
  assert sft.foreign_context(other, pool, 1.0, max_context=3, rng=rng) == other
  # too long: the oldest attempts go first; a row nothing fits stays plain
  short = sft.foreign_context(
      rows,
      pool,
      1.0,
      max_context=3,
      rng=np.random.default_rng(1),
      fits=lambda t: len(t["prompt"]) <= 30,
  )  # one attempt fits
  assert all(r["foreign"] == 1 and len(r["prompt"]) <= 30 for r in short)
  none = sft.foreign_context(rows, pool, 1.0, max_context=3, rng=rng, fits=lambda t: False)
  assert none == rows
  with pytest.raises(ValueError, match="fraction"):
    sft.foreign_context(rows, pool, 1.5, max_context=3, rng=rng)


def test_sft_replay_examples_join_training_only():
  """Replay rows are trained on (counted, too-long ones dropped), never held out."""
  import ml_collections
  from ttc_jax.revision import sft

  trajs = []
  for a in range(4):
    for b in range(5):
      q = f"{a}+{b}"
      trajs.append(
          dict(
              question=q, prompt=fmt.revision_prompt(q, []), target=f"{q}={a + b}\nAnswer: {a + b}"
          )
      )
  replay = [
      dict(prompt="1*2\n", target="1*2=2\nAnswer: 2"),
      dict(prompt="9-3\n", target="9-3=6\n" * 20 + "Answer: 6"),
  ]  # too long
  s = ml_collections.ConfigDict(
      dict(
          steps=2,
          batch_size=2,
          seq_len=40,
          lr=1e-3,
          warmup_steps=1,
          weight_decay=0.0,
          clip_norm=1.0,
          b1=0.9,
          b2=0.95,
          final_lr_fraction=0.1,
          log_every=1,
          eval_every=1,
          patience=5,
          heldout_fraction=0.3,
      )
  )
  import tempfile

  with tempfile.TemporaryDirectory() as d:
    _, summary = sft.train_revision_model(
        create_model(tiny_config(max_len=48), 0),
        TOK,
        trajs,
        config_settings.sft_settings(s),
        d,
        progress=False,
        replay=replay,
    )
  assert summary["replay_examples"] == 1
  assert summary["train_trajectories"] + summary["heldout_trajectories"] == len(trajs)


def test_context_probe_prompts():
  """Triples follow wrong attempts only; each condition's prompt holds what it names."""
  from ttc_jax.pipeline import context_probe

  recs = [
      dict(
          question=f"{i}+1",
          level="ops1" if i < 2 else "ops2",
          attempts=[
              [
                  f"{i}+1={i}\nAnswer: {i}",
                  f"{i}+1={i + 1}\nAnswer: {i + 1}",
                  f"{i}+1={i + 1}\nAnswer: {i + 1}",
              ]
          ],
          correct=[[False, True, True]],
      )
      for i in range(4)
  ]
  pairs, prompts = context_probe.probe_prompts(recs, 10, context=4)
  assert sorted(pairs) == [(i, 0, 1) for i in range(4)]  # only after the wrong one
  for k, (qi, ci, t) in enumerate(pairs):
    q, wrong = recs[qi]["question"], recs[qi]["attempts"][0][0]
    assert prompts["actual"][k] == fmt.revision_prompt(q, [wrong])
    assert prompts["last1"][k] == prompts["actual"][k]
    assert prompts["fresh"][k] == prompts["policy"][k] == q + "\n"
    other = prompts["foreign"][k][len(q) + 1 :]
    assert other.startswith(recs[qi ^ 1]["question"])  # same level, other question
  assert context_probe.probe_prompts(recs, 2)[0] == pairs[:2]
