"""Monte Carlo step labels on a scripted policy whose success probability is known."""

import os

import jax
import numpy as np
import pytest

from toy_models import ScriptedPolicy
from ttc_jax.prm import label_shards, labels
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer

TOK = CharTokenizer()
PROMPT = "2+3\n"
SOLUTION = "2+3=5\nAnswer: 5"
P_RIGHT = 0.7
# The answer digit sits at this offset of the script (prompt + solution).
DIGIT = len(PROMPT) + len(SOLUTION) - 1
KW = dict(extract_answer=arith.extract_answer, equivalent=arith.equivalent)


def _policy(p=P_RIGHT):
  return ScriptedPolicy(TOK, PROMPT + SOLUTION, {DIGIT: {"5": p, "6": 1 - p}})


def test_solution_lines_rules():
  ex = arith.extract_answer
  assert labels.solution_lines("1+1=2\nAnswer: 2\n", ex) == ["1+1=2", "Answer: 2"]
  assert labels.solution_lines("1+1=2\nAnswer: x", ex) is None  # unparsable answer
  assert labels.solution_lines("1+1=2", ex) is None  # no answer line
  assert labels.solution_lines("Answer: 2\nAnswer: 2", ex) is None  # two answer lines
  assert labels.solution_lines("1+1=2\n\nAnswer: 2", ex) is None  # empty step
  assert labels.prefix_text(["a", "b", "c"], 1) == "a\nb\n"


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_rollout_values_match_known_success_probability(p):
  settings = labels.LabelSettings(rollouts=256, max_new_tokens=16, max_batch=1024, temperature=1.0)
  vals, st = labels.rollout_values(
      _policy(p),
      TOK,
      [PROMPT] * 3,
      ["2+3=5\n"] * 3,
      ["5", "5", "6"],
      jax.random.key(0),
      settings,
      **KW
  )
  se = np.sqrt(p * (1 - p) / 256)
  np.testing.assert_allclose(vals[:2], p, atol=4.5 * se)
  np.testing.assert_allclose(vals[2], 1 - p, atol=4.5 * se)  # target 6: the complement
  assert st["rollouts"] == 3 * 256 and st["generated_tokens"] == 3 * 256 * len("Answer: 5\x02")
  assert st["unparsable"] == 0


def test_label_problems_soft_hard_exact():
  # temperature 1: the policy's own distribution (T < 1 would sharpen p = 0.7 to 0.77)
  settings = labels.LabelSettings(
      samples_per_question=64,
      rollouts=128,
      max_new_tokens=24,
      max_batch=4096,
      shard_questions=4,
      temperature=1.0,
  )
  problems = [dict(question="2+3", prompt=PROMPT, answer=5, level="ops1_d1")]
  recs, st = labels.label_problems(
      _policy(),
      TOK,
      problems,
      jax.random.key(1),
      settings,
      check_solution=arith.check_solution,
      **KW
  )
  assert st["solutions_sampled"] == 64 and st["solutions_kept"] == len(recs) == 64
  assert st["prefixes"] == 64 and st["rollouts"] == 64 * 128
  correct = np.array([r["answer_correct"] for r in recs])
  assert abs(correct.mean() - P_RIGHT) < 4.5 * np.sqrt(P_RIGHT * 0.3 / 64)
  first = np.array([r["soft"][0] for r in recs])  # one prefix per solution: "2+3=5\n"
  assert abs(first.mean() - P_RIGHT) < 4.5 * np.sqrt(P_RIGHT * 0.3 / (64 * 128))
  for r in recs:
    assert r["steps"][0] == "2+3=5" and r["hard"][0] == 1.0
    assert r["soft"][1] == float(r["answer_correct"]) == r["hard"][1]
    assert r["exact"] == [True, r["answer_correct"]]
  q = labels.label_quality(recs)
  assert q["steps"] == 128 and 0 <= q["soft_label_auroc"] <= 1


def test_label_dataset_resumes_and_is_deterministic(tmp_path):
  settings = labels.LabelSettings(
      samples_per_question=4, rollouts=8, max_new_tokens=24, max_batch=256, shard_questions=1
  )
  problems = [dict(question="2+3", prompt=PROMPT, answer=5, level="x")] * 3
  out = str(tmp_path / "labels")
  logs = []
  run = lambda: label_shards.label_dataset(
      _policy(), TOK, problems, out, jax.random.key(2), settings, log=logs.append, **KW
  )
  st = run()
  assert st["shards"] == 3 and st["questions"] == 3 and st["rollouts"] == 3 * 4 * 8
  first = label_shards.load_labels(out)
  # an interrupted shard: records written, stats sidecar missing -> redone
  os.remove(label_shards.shard_path(out, 1)[: -len(".array_record")] + ".json")
  os.remove(label_shards.shard_path(out, 2))
  logs.clear()
  st2 = run()
  assert sum("skipped" in m for m in logs) == 1 and st2["rollouts"] == st["rollouts"]
  assert label_shards.load_labels(out) == first
  with pytest.raises(ValueError, match="no label shards"):
    label_shards.load_labels(str(tmp_path / "empty"))
