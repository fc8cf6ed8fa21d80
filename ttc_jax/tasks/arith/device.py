"""On-device exact reward for the embedded arithmetic task.

`answer_correct` (or a `DeviceGrader`) decides, inside jit, whether each
generated attempt is right, bit-identically to the host grader

    arith.equivalent(arith.extract_answer(tokenizer.decode(tokens[:length])), str(target))

so an RL learner needs no device-to-host round trip per batch. What it
reproduces:

* decoding: PAD/BOS are skipped (they do not break a line), text stops at the
  first EOS, ids outside the vocabulary decode to the tokenizer's `unknown`
  string (for the default `'\\ufffd'` a character that no pattern accepts);
* extract_answer: lines are split on `'\\n'` only; a line counts when, after
  `str.strip()`, it fullmatches `Answer:\\s*([+-]?[0-9]+)`; the LAST such line
  wins (a later non-matching line does not hide it). Whitespace is every
  alphabet character with `str.isspace()` other than `'\\n'` (for the arith
  alphabet only `' '`); digits are ASCII `0-9` only, as in the regex;
* equivalent: integer equality as Python `int()` (leading zeros, `+`, `-0`),
  and an answer string longer than 1000 characters is never equal.

How: one `lax.scan` over time runs a small automaton per sequence (states:
leading blanks, 7 characters of `Answer:`, blanks, sign, digits, trailing
blanks, dead). While reading the number it compares its significant digits
(after leading zeros) with the target's on the fly, so an answer of any length
is graded exactly: one with more significant digits than the target is never
equal, however wide. The loop is T tiny steps over `[B]` vectors, cheap next
to the decode loop that produced the tokens.

Targets are the canonical `str(int(answer))` as token ids (`encode_targets`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

HOST_MAX_ANSWER_CHARS = 1000  # arith.equivalent: a longer answer string is never equal
_LITERAL = "Answer:"
_INT_RE = re.compile(r"[+-]?[0-9]+")

# Character classes (0..6 are the positions of the `Answer:` literal).
_SKIP, _NEWLINE, _WS, _PLUS, _MINUS, _DIGIT, _OTHER = 7, 8, 9, 10, 11, 12, 13
# Automaton states.
_LEAD, _BLANK, _SIGN, _NUM, _TRAIL, _DEAD = 0, 7, 8, 9, 10, 11  # 1..6: inside the literal


def _char_class(ch: str) -> int:
  if ch == "\n":
    return _NEWLINE
  if ch in _LITERAL:
    return _LITERAL.index(ch)
  if ch.isspace():
    return _WS
  if ch == "+":
    return _PLUS
  if ch == "-":
    return _MINUS
  if "0" <= ch <= "9":
    return _DIGIT
  return _OTHER


def _unknown_class(tokenizer) -> tuple[int, int]:
  """(class, digit value) of the text `decode` writes for an out-of-vocabulary id."""
  try:
    text = tokenizer.decode([tokenizer.vocab_size])
  except ValueError:
    return _OTHER, -1  # a tokenizer that raises on such ids: the host cannot grade them either
  if text == "":
    return _SKIP, -1
  classes = {_char_class(c) for c in text}
  if len(text) == 1:
    return classes.pop(), int(text) if _char_class(text) == _DIGIT else -1
  if classes == {_OTHER}:
    return _OTHER, -1
  raise ValueError(
      f"unsupported multi-character unknown string {text!r}: only one character, "
      f"or characters matching none of the answer pattern, can be graded on device"
  )


@dataclasses.dataclass(frozen=True)
class DeviceGrader:
  """Static (hashable) description of a tokenizer for on-device grading.

  classes[i]: character class of id i (`_SKIP` for PAD/BOS); digits[i]: digit
  value of id i, else -1; eos/minus: ids; unknown/unknown_digit: class and
  digit value of ids outside `[0, len(classes))`. Build it with `from_tokenizer`; call it like
  `answer_correct`.
  """

  classes: tuple[int, ...]
  digits: tuple[int, ...]
  eos: int
  minus: int
  unknown: int
  unknown_digit: int = -1

  @classmethod
  def from_tokenizer(cls, tokenizer) -> "DeviceGrader":
    """From a `CharTokenizer` (ids PAD/BOS/EOS, then one per alphabet character)."""
    n = tokenizer.vocab_size
    classes, digits = [_OTHER] * n, [-1] * n
    for i in (tokenizer.PAD, tokenizer.BOS, tokenizer.EOS):
      classes[i] = _SKIP
    for ch in tokenizer.alphabet:
      i = tokenizer.id_of(ch)
      classes[i] = _char_class(ch)
      if classes[i] == _DIGIT:
        digits[i] = int(ch)
    minus = tokenizer.id_of("-") if "-" in tokenizer.alphabet else -1
    return cls(
        tuple(classes), tuple(digits), int(tokenizer.EOS), int(minus), *_unknown_class(tokenizer)
    )

  def lookup(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(class, digit value) of each id of any int array, out-of-vocab ids included."""
    n = len(self.classes)
    inside = (tokens >= 0) & (tokens < n)
    idx = jnp.clip(tokens, 0, n - 1)
    cls_ = jnp.where(inside, jnp.asarray(self.classes, jnp.int32)[idx], self.unknown)
    dig = jnp.where(inside, jnp.asarray(self.digits, jnp.int32)[idx], self.unknown_digit)
    return cls_, dig

  def __call__(self, tokens, lengths, targets, target_lengths) -> jax.Array:
    """`answer_correct` with this grader, jitted (the grader is a static argument)."""
    return _answer_correct_jit(tokens, lengths, targets, target_lengths, tokenizer_ids=self)


def encode_targets(
    tokenizer, answers: Sequence[str | int], width: int = 24
) -> tuple[np.ndarray, np.ndarray]:
  """Canonical targets on the host: `str(int(a))` as ids, PAD after.

  answers: ints or integer strings (`' +007 '` is 7). Returns (int32[B, width]
  ids of sign and digits, int32[B] lengths). ValueError for a non-integer
  answer or one whose canonical form is longer than `width` (or than 1000
  characters, which the host grader never matches).
  """
  if isinstance(answers, (str, int)):
    raise ValueError("encode_targets expects a sequence of answers, got a single value")
  out = np.full((len(answers), width), tokenizer.PAD, np.int32)
  lens = np.zeros((len(answers),), np.int32)
  for b, a in enumerate(answers):
    if isinstance(a, str):
      if not _INT_RE.fullmatch(a.strip()):
        raise ValueError(f"answer {b} is not an integer: {a!r}")
      value = int(a.strip())
    elif isinstance(a, (int, np.integer)) and not isinstance(a, bool):
      value = int(a)
    else:
      raise ValueError(f"answer {b} must be an int or an integer string, got {a!r}")
    text = str(value)
    if len(text) > min(width, HOST_MAX_ANSWER_CHARS):  # the host never matches > 1000 chars
      raise ValueError(f"answer {b} = {text} has {len(text)} characters, more than width={width}")
    out[b, : len(text)] = tokenizer.encode(text)
    lens[b] = len(text)
  return out, lens


def _target_digits(grader: DeviceGrader, targets, target_lengths):
  """(negative bool[B], significant digits int32[B, W], count int32[B]); zero has count 0."""
  neg = targets[:, 0] == grader.minus
  start = neg.astype(jnp.int32)
  w = targets.shape[1]
  idx = jnp.clip(jnp.arange(w)[None, :] + start[:, None], 0, w - 1)
  _, dig = grader.lookup(jnp.take_along_axis(targets, idx, axis=1))
  count = target_lengths - start
  count = jnp.where((count == 1) & (dig[:, 0] == 0), 0, count)
  return neg, dig, count


def answer_correct(
    tokens: jax.Array,
    lengths: jax.Array,
    targets: jax.Array,
    target_lengths: jax.Array,
    *,
    tokenizer_ids: DeviceGrader,
) -> jax.Array:
  """Whether each attempt's last `Answer: N` line equals its target. Jit-able.

  tokens: int32[B, T] generated ids (EOS may end the text, PAD after
  `lengths`, any id allowed); lengths: int32[B] ids counted (clipped to
  [0, T]); targets/target_lengths: from `encode_targets`, int32[B, W]/[B];
  tokenizer_ids: a `DeviceGrader` (static under jit). Returns bool[B].
  """
  g = tokenizer_ids
  chex.assert_rank(tokens, 2)
  b, t = tokens.shape
  chex.assert_shape(lengths, (b,))
  chex.assert_rank(targets, 2)
  chex.assert_shape(target_lengths, (b,))
  tokens = tokens.astype(jnp.int32)
  cls_, dig = g.lookup(tokens)
  live = (jnp.arange(t)[None, :] < lengths[:, None]) & (jnp.cumsum(tokens == g.eos, axis=1) == 0)
  cls_ = jnp.where(live, cls_, _SKIP)
  tneg, tdig, tcount = _target_digits(g, targets.astype(jnp.int32), target_lengths)
  w = tdig.shape[1]

  def line_ok(c):
    state, neg, raw, k, eq, _ = c
    matched = (state == _NUM) | (state == _TRAIL)
    equal = (raw <= HOST_MAX_ANSWER_CHARS) & (k == tcount) & eq & ((k == 0) | (neg == tneg))
    return matched, equal

  def step(c, x):
    state, neg, raw, k, eq, last = c
    cl, d = x
    # automaton
    lit_next = (cl == state) & (state < _BLANK)  # next literal character (state = chars matched)
    nxt = jnp.full_like(state, _DEAD)
    nxt = jnp.where(lit_next, state + 1, nxt)
    nxt = jnp.where((state == _LEAD) & (cl == _WS), _LEAD, nxt)
    nxt = jnp.where((state == _BLANK) & (cl == _WS), _BLANK, nxt)
    is_sign = (cl == _PLUS) | (cl == _MINUS)
    nxt = jnp.where((state == _BLANK) & is_sign, _SIGN, nxt)
    in_num = ((state == _BLANK) | (state == _SIGN) | (state == _NUM)) & (cl == _DIGIT)
    nxt = jnp.where(in_num, _NUM, nxt)
    nxt = jnp.where(((state == _NUM) | (state == _TRAIL)) & (cl == _WS), _TRAIL, nxt)
    # number tracking: sign, raw length, significant digits vs the target's
    neg = jnp.where((state == _BLANK) & is_sign, cl == _MINUS, neg)
    raw = raw + (((state == _BLANK) & is_sign) | in_num).astype(jnp.int32)
    sig = in_num & ((d != 0) | (k > 0))
    want = jnp.take_along_axis(tdig, jnp.minimum(k, w - 1)[:, None], axis=1)[:, 0]
    eq = jnp.where(sig, eq & (k < tcount) & (d == want), eq)
    k = k + sig.astype(jnp.int32)
    # end of line: commit, reset
    nl = cl == _NEWLINE
    matched, equal = line_ok((state, neg, raw, k, eq, last))
    last = jnp.where(nl & matched, equal, last)
    skip = cl == _SKIP
    state = jnp.where(skip, c[0], jnp.where(nl, _LEAD, nxt))
    zero = jnp.zeros_like(k)
    neg = jnp.where(nl, False, neg)
    raw = jnp.where(nl, zero, raw)
    k = jnp.where(nl, zero, k)
    eq = jnp.where(nl, True, eq)
    return (state, neg, raw, k, eq, last), None

  zeros = jnp.zeros((b,), jnp.int32)
  init = (zeros, jnp.zeros((b,), bool), zeros, zeros, jnp.ones((b,), bool), jnp.zeros((b,), bool))
  final, _ = jax.lax.scan(step, init, (cls_.T, dig.T))
  matched, equal = line_ok(final)
  out = jnp.where(matched, equal, final[-1])
  chex.assert_shape(out, (b,))
  return out


_answer_correct_jit = jax.jit(answer_correct, static_argnames="tokenizer_ids")
