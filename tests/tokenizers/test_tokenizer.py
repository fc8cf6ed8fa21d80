"""Tests for ttc_jax.tokenizers.CharTokenizer."""

import numpy as np
import pytest

from ttc_jax.tokenizers import ARITH_ALPHABET, CharTokenizer, check_compatible


def test_alphabet_and_vocab():
  assert ARITH_ALPHABET == "0123456789+-*()=\nAnswer: "
  assert len(set(ARITH_ALPHABET)) == len(ARITH_ALPHABET)
  tok = CharTokenizer()
  assert tok.vocab_size == 3 + len(ARITH_ALPHABET)
  assert (tok.PAD, tok.BOS, tok.EOS) == (0, 1, 2)
  assert tok.newline_id == tok.id_of("\n") == 3 + ARITH_ALPHABET.index("\n")
  assert CharTokenizer("aab").alphabet == "ab"
  with pytest.raises(ValueError, match="'x'"):
    tok.id_of("x")


def test_round_trip_random_strings():
  tok = CharTokenizer()
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(0, 50))
    text = "".join(ARITH_ALPHABET[int(i)] for i in rng.integers(0, len(ARITH_ALPHABET), n))
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.BOS and ids[-1] == tok.EOS and len(ids) == n + 2
    assert all(3 <= i < tok.vocab_size for i in ids[1:-1])
    assert tok.decode(ids) == text
    assert tok.decode(np.asarray(ids, dtype=np.int32)) == text


def test_decode_specials_and_unknown():
  tok = CharTokenizer()
  ids = [tok.BOS] + tok.encode("1+2") + [tok.EOS] + tok.encode("9") + [tok.PAD, tok.PAD]
  assert tok.decode(ids) == "1+2"
  assert tok.decode(ids, stop_at_eos=False) == "1+29"
  assert tok.decode([]) == ""
  assert tok.decode([tok.vocab_size + 5]) == "\ufffd"
  with pytest.raises(ValueError, match="outside the vocabulary"):
    CharTokenizer(unknown=None).decode([tok.vocab_size])
  with pytest.raises(ValueError, match="1-D"):
    tok.decode(np.zeros((2, 3), np.int32))
  toks, lens = tok.encode_batch(["1+2\n", "3"], max_len=8)
  assert tok.decode_batch(toks, lens) == ["1+2\n", "3"]


def test_unknown_char_error_names_char_and_position():
  tok = CharTokenizer()
  with pytest.raises(ValueError, match=r"'x' at position 2"):
    tok.encode("1+x")
  with pytest.raises(ValueError, match=r"'\\t' at position 0"):
    tok.encode("\t1")


def test_encode_batch_shapes_and_padding():
  tok = CharTokenizer()
  texts = ["1+2\n", "", "3*4=12"]
  toks, lens = tok.encode_batch(texts, max_len=10)
  assert toks.shape == (3, 10) and toks.dtype == np.int32
  assert lens.tolist() == [5, 1, 7]
  assert toks[0, 0] == tok.BOS and tok.decode(toks[0]) == "1+2\n"
  assert (toks[0, 5:] == tok.PAD).all()
  left, llens = tok.encode_batch(texts, max_len=10, pad_left=True, add_eos=True)
  assert llens.tolist() == [6, 2, 8]
  assert left[2, -1] == tok.EOS and left[2, 2] == tok.BOS and (left[2, :2] == tok.PAD).all()
  assert tok.decode(left[2]) == "3*4=12"
  nob, nlens = tok.encode_batch(texts, max_len=6, add_bos=False)
  assert nlens.tolist() == [4, 0, 6] and (nob[1] == tok.PAD).all()
  empty, elens = tok.encode_batch([], max_len=4)
  assert empty.shape == (0, 4) and elens.shape == (0,)


def test_encode_batch_errors():
  tok = CharTokenizer()
  with pytest.raises(ValueError, match=r"text 1 encodes to 6 tokens.*max_len=5"):
    tok.encode_batch(["1", "12345"], max_len=5)
  with pytest.raises(ValueError, match="'x'"):
    tok.encode_batch(["x"], max_len=5)


def test_fingerprint_json_and_compatibility():
  tok = CharTokenizer()
  assert tok.fingerprint() == CharTokenizer().fingerprint()
  assert tok.fingerprint() != CharTokenizer(ARITH_ALPHABET + "#").fingerprint()
  assert tok.fingerprint().startswith(f"char-{tok.vocab_size}-")
  again = CharTokenizer.from_json(tok.to_json())
  assert again == tok and again.fingerprint() == tok.fingerprint()
  check_compatible(tok, tok.vocab_size)
  check_compatible(tok, 128)
  with pytest.raises(ValueError, match=r"vocab_size=10 is smaller.*vocab_size=28"):
    check_compatible(tok, 10)
