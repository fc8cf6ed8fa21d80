"""HFTokenizer (a local tokenizer.json via `tokenizers`) and prompt templates."""

import json

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from ttc_jax.tokenizers import hf as hf_tokenizer  # noqa: E402
from hf_toys import bpe_tokenizer  # noqa: E402
from ttc_jax.tokenizers.hf import HFTokenizer, chat_prompt, few_shot_prompt  # noqa: E402
from ttc_jax.prm import data as prm_data  # noqa: E402

CORPUS = [
    "Question: 12+7=?\n\nStep 1: 12+7 = 19\nAnswer: 19",
    "Question: 3*4=?\n\nStep 1: 3*4 = 12\n\nAnswer: 12",
    "The answer is 42.\n\nDone.\n",
] * 20


@pytest.fixture(scope="module")
def raw():
  """A byte-level BPE trained on a few strings, with <pad>/<s>/</s> and a "\n\n" token."""
  return bpe_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def tok(raw):
  return HFTokenizer(raw)


def test_specials_and_roundtrip(tok, raw):
  assert (tok.PAD, tok.BOS, tok.EOS) == (0, 1, 2)
  assert tok.vocab_size == raw.get_vocab_size(with_added_tokens=True) > 256
  text = "Question: 12+7=?\n\nStep 1: 12+7 = 19\nAnswer: 19"
  ids = tok.encode(text)
  assert len(ids) < len(text) and tok.decode(ids) == text
  assert tok.encode(text, add_bos=True, add_eos=True) == [tok.BOS] + ids + [tok.EOS]
  # PAD/BOS dropped, cut at EOS; out-of-vocabulary ids (padded tables) dropped.
  row = [tok.BOS] + ids + [tok.vocab_size + 3, tok.EOS] + ids + [tok.PAD]
  assert tok.decode(row) == text
  assert tok.decode(row, stop_at_eos=False) == text + text
  assert tok.decode_batch(np.array([row, row]), lengths=[3, len(row)]) == [
      tok.decode(row[:3]),
      text,
  ]


def test_encode_batch(tok):
  texts = ["Answer: 19", "Step 1: 3*4 = 12\n"]
  toks, lens = tok.encode_batch(texts, 16)
  assert toks.shape == (2, 16) and toks.dtype == np.int32 and lens.dtype == np.int32
  for b, t in enumerate(texts):
    want = [tok.BOS] + tok.encode(t)
    assert lens[b] == len(want) and toks[b, : lens[b]].tolist() == want
    assert (toks[b, lens[b] :] == tok.PAD).all()
  left, llens = tok.encode_batch(texts, 16, add_bos=False, pad_left=True, add_eos=True)
  assert left[0, 16 - llens[0] :].tolist() == tok.encode(texts[0], add_eos=True)
  assert (left[0, : 16 - llens[0]] == tok.PAD).all()
  with pytest.raises(ValueError, match="text 0 encodes to 4 tokens .* longer than max_len=3"):
    tok.encode_batch(texts, 3)


def test_step_delimiter(raw, tok):
  assert tok.newline_id == raw.token_to_id("Ċ")  # byte-level "\n"
  double = HFTokenizer(raw, step_delimiter="\n\n")
  assert double.newline_id == raw.token_to_id("\n\n") != tok.newline_id
  assert double.encode("a\n\nb")[1] == double.newline_id
  with pytest.raises(ValueError, match="step delimiter 'Answer: 19' encodes to [0-9]+ tokens"):
    HFTokenizer(raw, step_delimiter="Answer: 19")
  # The PRM data layer builds its scored rows from this interface.
  ids, ends = prm_data.solution_tokens(tok, "Question: 3*4=?\n", ["3*4 = 12", "Answer: 12"])
  assert ids[0] == tok.BOS and ids[ends[0]] == tok.newline_id and ids[ends[1]] == tok.EOS


def test_from_file_config_and_fingerprint(raw, tmp_path):
  raw.save(str(tmp_path / "tokenizer.json"))
  json.dump(
      {"bos_token": {"content": "</s>"}, "eos_token": "<s>", "pad_token": None},
      open(tmp_path / "tokenizer_config.json", "w"),
  )
  t = HFTokenizer.from_file(str(tmp_path))
  assert (t.BOS, t.EOS, t.PAD) == (2, 1, 0) and t.specials["bos"] == "</s>"
  plain = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"), bos_token="<s>", eos_token="</s>")
  assert plain.fingerprint() == HFTokenizer(raw).fingerprint()
  assert plain.fingerprint().startswith(f"hf-{raw.get_vocab_size()}-")
  assert t.fingerprint() != plain.fingerprint()
  assert HFTokenizer(raw, step_delimiter="\n\n").fingerprint() != plain.fingerprint()
  with pytest.raises(FileNotFoundError, match="does not exist"):
    HFTokenizer.from_file(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="bos token '<\\|nope\\|>' is not in the vocabulary"):
    HFTokenizer(raw, bos_token="<|nope|>")


def test_pad_falls_back_to_eos(tmp_path):
  from tokenizers import Tokenizer, models

  t = HFTokenizer(
      Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "\n": 2, "a": 3}, unk_token="a"))
  )
  assert (t.BOS, t.EOS, t.PAD, t.newline_id) == (0, 1, 1, 2)


def test_few_shot_prompt():
  p = few_shot_prompt([("1+1", "2"), ("2+3", "5")], "4+4")
  assert p == "Question: 1+1\nAnswer: 2\n\nQuestion: 2+3\nAnswer: 5\n\nQuestion: 4+4\nAnswer: "
  q = few_shot_prompt(
      [("1+1", "2")],
      "3+3",
      question_format="Q: {question}",
      answer_format=" A: {answer}.",
      separator="\n",
  )
  assert q == "Q: 1+1 A: 2.\nQ: 3+3 A: "
  with pytest.raises(ValueError, match="answer_format needs"):
    few_shot_prompt([], "x", answer_format="A:")


def test_chat_prompt():
  msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
  assert chat_prompt(msgs) == (
      "<|im_start|>system\nBe brief.<|im_end|>\n"
      "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
  )
  assert chat_prompt(msgs[1:], "llama3", include_bos=True, add_generation_prompt=False) == (
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n1+1?<|eot_id|>"
  )
  assert chat_prompt(msgs[1:], "llama3").endswith(
      "<|start_header_id|>assistant<|end_header_id|>\n\n"
  )
  with pytest.raises(ValueError, match="unknown chat style 'jinja'"):
    chat_prompt(msgs, "jinja")
  with pytest.raises(ValueError, match="message 0 needs role"):
    chat_prompt([{"role": "bot", "content": "x"}])
  assert set(hf_tokenizer.CHAT_STYLES) == {"chatml", "llama3"}


def test_qwen2_style_checkpoint_no_bos_and_every_generation_eos(tmp_path):
  """Qwen2 has no BOS ("bos_token": null) and ends answers with any eos_token_id of
  generation_config.json (<|im_end|> and <|endoftext|> for Qwen2.5-Instruct)."""
  from hf_toys import qwen2_like_tokenizer

  raw = qwen2_like_tokenizer(CORPUS)
  raw.save(str(tmp_path / "tokenizer.json"))
  im_end, endoftext = raw.token_to_id("<|im_end|>"), raw.token_to_id("<|endoftext|>")
  conf = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
  json.dump(conf, open(tmp_path / "tokenizer_config.json", "w"))
  json.dump({"eos_token_id": [im_end, endoftext]}, open(tmp_path / "generation_config.json", "w"))
  t = HFTokenizer.from_file(str(tmp_path))
  assert not t.add_bos and t.EOS == im_end and t.eos_ids == (im_end, endoftext)
  assert t.encode("Answer: 19", add_bos=True) == t.encode("Answer: 19")
  toks, lens = t.encode_batch(["Answer: 19"], 8, add_bos=True)
  assert toks[0, : lens[0]].tolist() == t.encode("Answer: 19")
  # decoding stops at either EOS (or drops both)
  ids = t.encode("Answer: 19")
  assert t.decode(ids + [endoftext] + ids) == t.decode(ids + [im_end] + ids) == "Answer: 19"
  assert t.decode(ids + [endoftext] + ids, stop_at_eos=False) == "Answer: 19Answer: 19"
  assert endoftext not in t.delimiter_ids and im_end not in t.delimiter_ids
  # a generation_config given elsewhere (the policy's dir), an int, or config.json's
  other = tmp_path / "policy"
  other.mkdir()
  json.dump({"eos_token_id": endoftext}, open(other / "config.json", "w"))
  assert HFTokenizer.from_file(str(tmp_path), generation_config=str(other)).eos_ids == (
      im_end,
      endoftext,
  )
  assert hf_tokenizer.generation_eos_ids(str(tmp_path / "missing")) == ()
  # "add_bos_token" decides when present; Llama-3 style (a BOS string, no flag) adds it
  json.dump(dict(conf, bos_token="<|endoftext|>"), open(tmp_path / "tokenizer_config.json", "w"))
  assert HFTokenizer.from_file(str(tmp_path)).add_bos
  json.dump(
      dict(conf, add_bos_token=False, bos_token="<|endoftext|>"),
      open(tmp_path / "tokenizer_config.json", "w"),
  )
  with_flag = HFTokenizer.from_file(str(tmp_path))
  assert not with_flag.add_bos and with_flag.encode("a", add_bos=True) == with_flag.encode("a")
  with pytest.raises(ValueError, match="eos ids \\[9999\\] are outside the vocabulary"):
    HFTokenizer(raw, eos_token="<|im_end|>", bos_token="<|endoftext|>", eos_ids=(9999,))
