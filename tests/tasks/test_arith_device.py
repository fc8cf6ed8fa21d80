"""The on-device arithmetic reward equals the host grader on random and adversarial token ids."""

import functools

import jax
import numpy as np
import pytest

from ttc_jax.tasks import arith
from ttc_jax.tasks.arith.device import DeviceGrader, answer_correct, encode_targets
from ttc_jax.tokenizers import ARITH_ALPHABET, CharTokenizer

_FRAGMENTS = [
    "Answer:",
    "Answer: ",
    "Answer:  ",
    " Answer: ",
    "Answer",
    "Ans",
    "nswer:",
    "Anwser: ",
    "rAnswer: ",
    "Answer::",
    " ",
    "  ",
    "\n",
    "\n",
    "\n",
    "+",
    "-",
    "--",
    "+-",
    "*",
    "(",
    ")",
    "=",
    "0",
    "00",
    "000",
    "7",
    "12",
    "-3",
    "+4",
    "999",
    "1234567",
    "3+(4-6)*2",
    "4-6=-2\n",
]
_SPECIAL = ["PAD", "BOS", "EOS", "OOV"]
_JIT = jax.jit(answer_correct, static_argnames="tokenizer_ids")


def _host(tok, tokens, lengths, targets) -> np.ndarray:
  texts = tok.decode_batch(tokens, np.clip(lengths, 0, None))
  return np.array(
      [arith.equivalent(arith.extract_answer(s), str(t)) for s, t in zip(texts, targets)]
  )


def _device(tok, tokens, lengths, targets, width=24) -> np.ndarray:
  tgt, tlen = encode_targets(tok, targets, width)
  grader = DeviceGrader.from_tokenizer(tok)
  return np.asarray(_JIT(tokens, lengths, tgt, tlen, tokenizer_ids=grader))


def _random_row(rng, tok, t: int) -> tuple[list[int], int]:
  """Ids built from fragments, digits, specials and out-of-vocab ids, plus the target to use."""
  ids: list[int] = []
  last_number = None
  n = int(rng.integers(0, 12))
  for i in range(n + 1):
    u = 0.6 if i == n and rng.random() < 0.5 else rng.random()  # often end on an answer line
    if i == n and u != 0.6:
      break
    if u < 0.55:
      frag = _FRAGMENTS[int(rng.integers(len(_FRAGMENTS)))]
    elif u < 0.8:  # an answer line with random sign, leading zeros and blanks
      sign = ["", "+", "-"][int(rng.integers(3))]
      num = "0" * int(rng.integers(0, 3)) + str(int(rng.integers(0, 10 ** int(rng.integers(1, 6)))))
      frag = (
          "\n" * int(rng.random() < 0.7)
          + " " * int(rng.integers(0, 2))
          + "Answer:"
          + " " * int(rng.integers(0, 3))
          + sign
          + num
          + " " * int(rng.integers(0, 2))
          + ("\n" if rng.random() < 0.5 else "")
      )
      last_number = int(sign + num)
    elif u < 0.9:
      frag = "".join(rng.choice(list(tok.alphabet), size=int(rng.integers(1, 5))))
    else:
      kind = _SPECIAL[int(rng.integers(4))]
      if kind == "OOV":
        ids.append(int(rng.choice([tok.vocab_size, tok.vocab_size + 5, 31, 1000, -1])))
      else:
        ids.append(getattr(tok, kind))
      continue
    ids.extend(tok.encode(frag))
  ids = ids[-t:] if rng.random() < 0.7 else ids[:t]
  if last_number is not None and rng.random() < 0.7:
    target = last_number
  else:
    target = int(rng.choice([0, 1, -1, 7, -3, 12, 999, int(rng.integers(-(10**6), 10**6))]))
  return ids, target


def _batch(rng, tok, n: int, t: int):
  tokens = np.zeros((n, t), np.int32)
  lengths = np.zeros((n,), np.int32)
  targets = []
  for b in range(n):
    ids, target = _random_row(rng, tok, t)
    tokens[b, : len(ids)] = ids
    if rng.random() < 0.3:  # garbage after the counted length must not matter
      tokens[b, len(ids) :] = rng.integers(0, tok.vocab_size, size=t - len(ids))
    u = rng.random()
    lengths[b] = (
        len(ids)
        if u < 0.7
        else int(rng.integers(0, len(ids) + 1))
        if u < 0.9
        else int(rng.choice([t, t + 5, -1]))
    )
    targets.append(target)
  return tokens, lengths, targets


@pytest.mark.parametrize(
    "alphabet,unknown,seed",
    [
        (ARITH_ALPHABET, "\ufffd", 0),
        (ARITH_ALPHABET + "\t\r\x0b\x1c\xa0\u2028", " ", 1),  # more blanks; OOV ids decode to " "
        (ARITH_ALPHABET, "5", 2),  # ... or to a digit
    ],
)
def test_random_strings_match_host(alphabet, unknown, seed):
  tok = CharTokenizer(alphabet, unknown=unknown)
  rng = np.random.default_rng(seed)
  tokens, lengths, targets = _batch(rng, tok, 3000, 48)
  host = _host(tok, tokens, lengths, targets)
  dev = _device(tok, tokens, lengths, targets)
  bad = np.nonzero(host != dev)[0]
  assert bad.size == 0, [
      (tok.decode(tokens[b, : max(lengths[b], 0)]), targets[b], host[b]) for b in bad[:5]
  ]
  assert 0.15 < host.mean() < 0.85, host.mean()  # both outcomes are well exercised


def test_uniform_random_ids_match_host():
  tok = CharTokenizer()
  rng = np.random.default_rng(3)
  n, t = 3000, 48  # the shape of the test above: one compile per worker
  tokens = rng.integers(-2, tok.vocab_size + 3, size=(n, t)).astype(np.int32)
  # bias towards the answer pattern: many rows hold "Answer: " just before a short tail
  prefix = tok.encode("\nAnswer: ")
  starts = rng.integers(0, t - len(prefix), size=n)
  targets = [int(rng.integers(-9, 10)) for _ in range(n)]
  for b in range(0, n, 2):  # ... then a digit, the target half of the time
    tokens[b, starts[b] : starts[b] + len(prefix)] = prefix
    tokens[b, starts[b] + len(prefix)] = tok.id_of(str(int(rng.integers(10))))
    if rng.random() < 0.5:
      targets[b] = int(tok.decode(tokens[b, starts[b] + len(prefix)]))
  lengths = np.minimum(starts + len(prefix) + rng.integers(0, 4, size=n), t + 1).astype(np.int32)
  lengths[1::2] = rng.integers(0, t + 2, size=n // 2)
  host = _host(tok, tokens, lengths, targets)
  assert host.mean() > 0.03, host.mean()
  np.testing.assert_array_equal(_device(tok, tokens, lengths, targets), host)


CASES = [  # (text, target, expected)
    ("Answer: 5", 5, True),
    ("Answer:5", 5, True),
    ("  Answer:   005  ", 5, True),
    ("Answer: +5", 5, True),
    ("Answer: -0", 0, True),
    ("Answer: +000", 0, True),
    ("Answer: -5", 5, False),
    ("Answer: 5\nAnswer: 6", 5, False),
    ("Answer: 5\nAnswer: 6", 6, True),
    ("Answer: 5\nAnswer: *", 5, True),
    ("Answer: 5\n1+1=2\n", 5, True),
    ("Answer: 5 5", 5, False),
    ("Answer: - 5", 5, False),
    ("Answ: 5", 5, False),
    ("Answer 5", 5, False),
    ("Answer: 5=", 5, False),
    ("", 0, False),
    ("Answer: ", 0, False),
    ("Answer: 50", 5, False),
    ("Answer: 05", 50, False),
    ("AAnswer: 5", 5, False),
    ("Answer: -12", -12, True),
    ("Answer: 123456789012345678901234567890", 123456789012345678901234567890 % 10**20, False),
]


@pytest.mark.parametrize("eos_mid", [False, True])
def test_hand_cases(eos_mid):
  tok = CharTokenizer()
  tail = tok.encode("\nAnswer: 1") if eos_mid else []  # after EOS: must be ignored
  rows = [tok.encode(s) + [tok.EOS] + tail for s, _, _ in CASES]
  t = max(map(len, rows))
  tokens = np.array([r + [0] * (t - len(r)) for r in rows], np.int32)
  lengths = np.array([len(r) for r in rows], np.int32)
  targets = [c[1] for c in CASES]
  dev = _device(tok, tokens, lengths, targets)
  np.testing.assert_array_equal(dev, [c[2] for c in CASES])
  np.testing.assert_array_equal(dev, _host(tok, tokens, lengths, targets))


def test_wide_answers_and_host_length_limit():
  """Answers far wider than the target width are exact (leading zeros); > 1000 chars never match."""
  tok = CharTokenizer()
  texts = [
      "Answer: " + "0" * 40 + "42",
      "Answer: -" + "0" * 40 + "42",
      "Answer: " + "1" * 40,
      "Answer: " + "0" * 999 + "7",
      "Answer: " + "0" * 1000 + "7",
      "Answer: +" + "0" * 998 + "7",
      "Answer: +" + "0" * 999 + "7",
      "Answer: " + "4" * 30 + "\nAnswer: " + "0" * 30 + "42",
  ]
  targets = [42, -42, 7, 7, 7, 7, 7, 42]
  expected = [True, True, False, True, False, True, False, True]
  tokens, lengths = tok.encode_batch(texts, 1020, add_bos=True, add_eos=True)
  dev = _device(tok, tokens, lengths, targets, width=4)
  np.testing.assert_array_equal(dev, expected)
  np.testing.assert_array_equal(dev, _host(tok, tokens, lengths, targets))


def test_real_solutions():
  tok = CharTokenizer()
  problems = arith.generate("train", arith.parse_levels("ops=1-6,digits=1-3"), 20, seed=0)
  texts = [p.solution for p in problems]
  tokens, lengths = tok.encode_batch(texts, max(map(len, texts)) + 2, add_bos=False, add_eos=True)
  answers = [p.answer for p in problems]
  np.testing.assert_array_equal(_device(tok, tokens, lengths, answers), True)
  wrong = [a + 1 for a in answers]
  np.testing.assert_array_equal(_device(tok, tokens, lengths, wrong), False)
  np.testing.assert_array_equal(_device(tok, tokens, lengths, [str(a) for a in answers]), True)


def test_grader_call_and_static_hashable():
  tok = CharTokenizer()
  grader = DeviceGrader.from_tokenizer(tok)
  assert grader == DeviceGrader.from_tokenizer(CharTokenizer()) and hash(grader)
  tokens, lengths = tok.encode_batch(["Answer: 3", "Answer: 4"], 12, add_bos=True)
  tgt, tlen = encode_targets(tok, [3, 3])
  out = jax.jit(functools.partial(answer_correct, tokenizer_ids=grader))(tokens, lengths, tgt, tlen)
  np.testing.assert_array_equal(out, [True, False])
  np.testing.assert_array_equal(grader(tokens, lengths, tgt, tlen), [True, False])


def test_encode_targets():
  tok = CharTokenizer()
  tgt, tlen = encode_targets(tok, [" +007 ", -0, -12, "0"], width=4)
  assert tlen.tolist() == [1, 1, 3, 1]
  assert [tok.decode(r) for r in tgt] == ["7", "0", "-12", "0"]
  assert tgt.dtype == np.int32 and tgt.shape == (4, 4)
  with pytest.raises(ValueError, match="width"):
    encode_targets(tok, [12345], width=4)
  with pytest.raises(ValueError, match="not an integer"):
    encode_targets(tok, ["1.5"])
  with pytest.raises(ValueError):
    encode_targets(tok, [None])
