"""The RL learner: one step raises the probability of rewarded samples; KL starts at 0."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from ttc_jax.config import settings as config_settings
from ttc_jax.models.transformer import create_model
from ttc_jax.revision import rl, rl_rollout
from ttc_jax.tasks.arith import device as arith_device
from ttc_jax.tokenizers import CharTokenizer

TOK = CharTokenizer()


@dataclasses.dataclass(frozen=True)
class FirstTokenReward:
  """Toy reward: the attempt starts with `token`."""

  token: int

  def __call__(self, gen, glen, targets, tlen):
    return (gen[:, 0] == self.token) & (glen > 0)


def _settings(**kw):
  base = dict(
      steps=1,
      prompts_per_step=2,
      group_size=16,
      temperature=1.0,
      max_new_tokens=4,
      lr=0.05,
      warmup_steps=0,
      clip_norm=100.0,
      clip_eps=0.2,
      kl_coef=0.0,
      advantage="group_normalized",
      loss="clipped_pg",
      updates_per_batch=1,
      log_every=1,
      eval_every=0,
      checkpoint_every=1,
  )
  base.update(kw)
  return config_settings.rl_settings(ml_collections.ConfigDict(base))


def _first_token_prob(model, prompt, token):
  ids = TOK.encode(prompt, add_bos=True)
  logits, _ = model(jnp.asarray([ids]), jnp.arange(len(ids))[None])
  return float(jax.nn.softmax(logits[0, -1])[token])


def test_one_rl_step_raises_probability_of_rewarded_samples(tmp_path):
  cfg = tiny_config(max_len=32)
  model, ref = create_model(cfg, 0), create_model(cfg, 0)
  contexts = [dict(prompt="1+2\n", answer="3"), dict(prompt="4*2\n", answer="8")]
  probs = [_first_token_prob(model, contexts[0]["prompt"], t) for t in range(TOK.vocab_size)]
  target = int(np.argmax(probs[TOK.NUM_SPECIAL :])) + TOK.NUM_SPECIAL  # rewarded now and then
  before = [_first_token_prob(model, c["prompt"], target) for c in contexts]
  last = rl.train_rl(
      model,
      ref,
      TOK,
      contexts,
      [],
      _settings(),
      str(tmp_path),
      reward_fn=FirstTokenReward(target),
      encode_targets=arith_device.encode_targets,
      seed=3,
      progress=False,
  )
  after = [_first_token_prob(model, c["prompt"], target) for c in contexts]
  assert last["reward"] > 0  # some samples were rewarded...
  assert all(a > b for a, b in zip(after, before)), (before, after)  # ...and became likelier
  rows = [json.loads(x) for x in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert rows[0]["kl"] == 0.0 or abs(rows[0]["kl"]) < 1e-6  # policy == reference at step 1
  assert os.path.isdir(os.path.join(tmp_path, "model"))


def test_rollout_batch_masks_generated_tokens_and_grades_on_device():
  cfg = tiny_config(max_len=48)
  model = create_model(cfg, 1)
  from ttc_jax.train import optim
  from ttc_jax.train.trainer import Trainer

  s = _settings(group_size=4, max_new_tokens=6)
  trainer = Trainer(model, optim.make_optimizer(1e-3, 10, 0, 0.0, 1.0, 0.9, 0.95, 1.0))
  src = rl_rollout.RolloutSource(
      trainer,
      create_model(cfg, 1),
      TOK,
      [dict(prompt="1+2\n", answer="3"), dict(prompt="12*3-4+5\n", answer="37")],
      s,
      arith_device.DeviceGrader.from_tokenizer(TOK),
      arith_device.encode_targets,
      seed=0,
      bucket_width=8,
  )
  assert sorted(src.buckets) == [8, 16]
  b = src.batch_for([0, 1], 16, jax.random.key(0))
  n, t = b["inputs"].shape
  assert (n, t) == (8, 16 + 6 - 1)
  plen = np.array([5, 10]).repeat(4)  # BOS + prompt
  for r in range(n):
    m = np.asarray(b["mask"][r])
    k = int(b["gen_tokens"][r])
    assert m.sum() == k and m[plen[r] - 1 : plen[r] - 1 + k].all()  # targets of generated tokens
    gen = np.asarray(b["targets"][r, plen[r] - 1 : plen[r] - 1 + k])
    text = TOK.decode(gen)
    from ttc_jax.tasks import arith

    assert bool(b["correct"][r]) == arith.is_correct(text, [3, 37][r // 4])
  np.testing.assert_allclose(
      np.asarray(b["ref_logp"]) * np.asarray(b["mask"]),
      np.asarray(b["old_logp"]) * np.asarray(b["mask"]),
      atol=1e-4,
  )
  assert src.get_state() == {"step": 0}
  next(src)
  assert src.get_state() == {"step": 1}


def test_mixed_contexts_keep_questions_with_right_and_wrong_attempts():
  recs = [
      dict(question="a", correct=[[True, True], [True, True]]),
      dict(question="b", correct=[[False, True], [True, True]]),
      dict(question="c", correct=[[False], [False]]),
  ]
  assert [r["question"] for r in rl.select_chain_records(recs, "mixed")] == ["b"]
  assert rl.select_chain_records(recs, "all") == recs
  with pytest.raises(ValueError, match="'easy'"):
    rl.select_chain_records(recs, "easy")
  with pytest.raises(ValueError, match="none of the 2 questions"):
    rl.select_chain_records([recs[0], recs[2]], "mixed")


def test_after_wrong_contexts_keep_rows_whose_previous_attempt_was_wrong():
  rows = [
      dict(prompt="a", previous_correct=None),
      dict(prompt="b", previous_correct=False),
      dict(prompt="c", previous_correct=True),
  ]
  assert [r["prompt"] for r in rl.select_context_rows(rows, "mixed_after_wrong")] == ["b"]
  assert rl.select_context_rows(rows, "mixed") == rows == rl.select_context_rows(rows, "all")
  with pytest.raises(ValueError, match="'easy'"):
    rl.select_context_rows(rows, "easy")
