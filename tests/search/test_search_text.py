"""The search kernels on text tokenised like a real checkpoint's: a byte-level BPE built
with Qwen2's split rules (`hf_toys.qwen2_like_tokenizer`), where punctuation merges with the
newlines after it, and a scripted policy that writes a known solution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tokenizers")

from conftest import tiny_config  # noqa: E402
from hf_toys import ScriptedLM, qwen2_like_tokenizer  # noqa: E402
from ttc_jax.models.reward import create_value_model  # noqa: E402
from ttc_jax.sampling import SamplingParams  # noqa: E402
from ttc_jax.search import beam, sweep  # noqa: E402
from ttc_jax.tokenizers.hf import HFTokenizer  # noqa: E402

PROMPT = "Tom has 3 apples and buys 4. How many?\n"
SOLUTION = "Tom has 3 apples.\n\nHe buys $4$\n\nSo $3+4=7$.\n\nThe answer is 7."
CORPUS = [PROMPT + SOLUTION, "Step one.\n\nStep two\n\nDone.\n", "x\n\ny\nz.\n"] * 30


@pytest.fixture(scope="module")
def tok():
  return HFTokenizer(qwen2_like_tokenizer(CORPUS), step_delimiter="\n\n")


@pytest.fixture(scope="module")
def setup(tok):
  vocab = -(-tok.vocab_size // 8) * 8
  prompt = [tok.BOS] + tok.encode(PROMPT)
  policy = ScriptedLM(prompt + tok.encode(SOLUTION) + [tok.EOS], vocab)
  prm = create_value_model(tiny_config(vocab_size=vocab, num_layers=1, max_len=64), 2)
  return policy, prm, prompt


def test_merged_punctuation_newline_tokens_end_steps(tok):
  """Qwen2/Llama-3 BPE merges "." and "$" with the newlines after them."""
  one = lambda s: tok.encode(s)  # noqa: E731
  assert len(one(".\n\n")) == len(one("$\n\n")) == len(one("\n\n")) == 1
  ends = [one(s)[0] for s in (".\n\n", "$\n\n")]
  assert tok.newline_id == one("\n\n")[0] and tok.delimiter_ids[0] == tok.newline_id
  assert set(ends) <= set(tok.delimiter_ids)
  assert one(".\n")[0] not in tok.delimiter_ids  # one newline does not end a paragraph
  assert all("\n\n" in tok.decode([i]) for i in tok.delimiter_ids)
  line = HFTokenizer(tok._tok, step_delimiter="\n")  # "\n" steps: every newline token
  assert {one(".\n")[0], one(".\n\n")[0], tok.newline_id} <= set(line.delimiter_ids)
  assert tok.EOS not in line.delimiter_ids and tok.PAD not in line.delimiter_ids
  # the solution's steps end with merged tokens: the exact delimiter id never occurs
  ids = one(SOLUTION)
  assert tok.newline_id not in ids and sum(i in tok.delimiter_ids for i in ids) == 3


def test_search_steps_end_at_every_token_containing_the_delimiter(tok, setup):
  """With the tokenizer's delimiter ids (sweep.kernel_args) the search takes the solution's
  four steps, and the PRM's step scores are read at the tokens that end them; with the
  exact delimiter id alone the first step runs into max_step_tokens and is cut off."""
  policy, prm, prompt = setup
  toks, lens = tok.encode_batch([PROMPT], 16, add_bos=True)
  assert toks[0, : lens[0]].tolist() == prompt
  _, kw = sweep.kernel_args(
      policy, tok, [PROMPT], max_rounds=6, max_step_tokens=10, max_new_tokens=40, temperature=1.0
  )
  assert kw["delimiter_id"] == tok.delimiter_ids
  kw.update(max_new_tokens=40, params=SamplingParams.make(1.0))
  res = beam.beam_search(policy, prm, toks, lens, jax.random.key(0), n=2, m=2, **kw)
  gen = np.asarray(res.tokens[0, 0, : int(res.lengths[0, 0])])
  assert tok.decode(gen) == SOLUTION and bool(res.finished.all())
  assert (np.asarray(res.num_steps) == 4).all() and int(res.rounds) == 4
  ends = [i for i, t in enumerate(gen.tolist()) if t in tok.delimiter_ids] + [len(gen) - 1]
  row = jnp.asarray(np.concatenate([toks[0, : lens[0]], gen])[None])
  values = np.asarray(prm.score(row, jnp.asarray([row.shape[1]])))[0]
  np.testing.assert_allclose(res.step_scores[0, 0, :4], values[lens[0] + np.array(ends)], atol=1e-5)
  old = beam.beam_search(
      policy, prm, toks, lens, jax.random.key(0), n=2, m=2, **dict(kw, delimiter_id=tok.newline_id)
  )
  assert (np.asarray(old.num_steps) == 1).all() and not bool(old.finished.any())
  assert (np.asarray(old.lengths) == 10).all()


def test_search_ends_at_every_eos_of_the_generation_config(tok):
  """A policy that ends its answer with <|endoftext|>, generation_config.json's second EOS
  (the tokenizer's EOS is <|im_end|>): the candidates finish there; with the tokenizer's EOS
  alone they would run on to max_new_tokens."""
  eot = tok._tok.token_to_id("<|endoftext|>")
  both = HFTokenizer(tok._tok, step_delimiter="\n\n", eos_token="<|im_end|>", eos_ids=(eot,))
  assert both.EOS != eot and both.eos_ids == (both.EOS, eot)
  vocab = -(-both.vocab_size // 8) * 8
  prompt = [both.BOS] + both.encode(PROMPT)
  solution = both.encode(SOLUTION)
  # after <|endoftext|> the script goes on with text (its last token, repeated)
  policy = ScriptedLM(prompt + solution + [eot] + both.encode(" more"), vocab)
  prm = create_value_model(tiny_config(vocab_size=vocab, num_layers=1, max_len=64), 2)
  toks, lens = both.encode_batch([PROMPT], 16, add_bos=True)
  _, kw = sweep.kernel_args(
      policy, both, [PROMPT], max_rounds=8, max_step_tokens=10, max_new_tokens=40, temperature=1.0
  )
  assert kw["eos_id"] == both.eos_ids
  kw.update(max_new_tokens=40, params=SamplingParams.make(1.0))
  res = beam.beam_search(policy, prm, toks, lens, jax.random.key(0), n=2, m=2, **kw)
  assert bool(res.finished.all()) and (np.asarray(res.lengths) == len(solution) + 1).all()
  assert (np.asarray(res.num_steps) == 4).all()
  assert both.decode_batch(np.asarray(res.tokens[0]), res.lengths[0]) == [SOLUTION] * 2
  one = beam.beam_search(
      policy, prm, toks, lens, jax.random.key(0), n=2, m=2, **dict(kw, eos_id=both.EOS)
  )
  assert bool(res.finished.all()) and not bool(one.finished.any())
  assert (np.asarray(one.lengths) > len(solution) + 1).all()


def test_final_completion_finishes_what_max_rounds_cut_short(tok, setup):
  """Two rounds for a four-step solution: without the final completion the candidates stop
  after two steps with no answer; with it they are decoded to EOS (no step stops) and the
  PRM's value at the last token is their score."""
  policy, prm, prompt = setup
  toks, lens = tok.encode_batch([PROMPT], 16, add_bos=True)
  _, kw = sweep.kernel_args(
      policy, tok, [PROMPT], max_rounds=2, max_step_tokens=10, max_new_tokens=40, temperature=1.0
  )
  kw.update(max_new_tokens=40, params=SamplingParams.make(1.0))
  assert kw["final_completion"] is False  # the sweep's default; the text configs set it
  run = lambda on: beam.beam_search(  # noqa: E731
      policy, prm, toks, lens, jax.random.key(0), n=2, m=2, **dict(kw, final_completion=on)
  )
  cut, done = run(False), run(True)
  assert not bool(cut.finished.any()) and (np.asarray(cut.num_steps) == 2).all()
  assert "answer" not in tok.decode(np.asarray(cut.tokens[0, 0, : int(cut.lengths[0, 0])]))
  gen = np.asarray(done.tokens[0, 0, : int(done.lengths[0, 0])])
  assert tok.decode(gen) == SOLUTION and bool(done.finished.all())
  assert (np.asarray(done.num_steps) == 3).all() and int(done.rounds) == 2
  row = jnp.asarray(np.concatenate([toks[0, : lens[0]], gen])[None])
  values = np.asarray(prm.score(row, jnp.asarray([row.shape[1]])))[0]
  np.testing.assert_allclose(done.scores[0], values[-1], atol=1e-5)
  np.testing.assert_allclose(done.step_scores[0, 0, :2], cut.step_scores[0, 0], atol=1e-6)
