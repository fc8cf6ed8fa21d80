"""Character tokenizer for the embedded arithmetic task (pure Python + numpy).

Ids: ``PAD=0``, ``BOS=1``, ``EOS=2``, then one id per alphabet character in alphabet order
(``3 + index``). The newline is the step delimiter. ``fingerprint()`` identifies the vocabulary so
a checkpoint trained with one tokenizer is not silently used with another.
"""

from __future__ import annotations

import hashlib
import json

from ttc_jax.tokenizers.codec import BatchCodec, ids_1d, short_repr


def _dedupe(chars: str) -> str:
  """Characters of ``chars`` without repeats, first occurrence order."""
  return "".join(dict.fromkeys(chars))


ARITH_ALPHABET = _dedupe("0123456789+-*()=\n" + "Answer: ")


class CharTokenizer(BatchCodec):
  """Maps characters of a fixed alphabet to ids, with PAD/BOS/EOS specials."""

  PAD, BOS, EOS = 0, 1, 2
  NUM_SPECIAL = 3

  def __init__(self, alphabet: str = ARITH_ALPHABET, unknown: str | None = "\ufffd"):
    """``alphabet``: characters (duplicates dropped, first occurrence kept).

    ``unknown``: what ``decode`` writes for an id outside the vocabulary (a model's padded
    vocabulary can sample one); ``None`` makes ``decode`` raise instead.
    """
    if not isinstance(alphabet, str) or not alphabet:
      raise ValueError(f"alphabet must be a non-empty string, got {alphabet!r}")
    self._alphabet = _dedupe(alphabet)
    self._ids = {c: self.NUM_SPECIAL + i for i, c in enumerate(self._alphabet)}
    self._unknown = unknown

  # -- vocabulary ------------------------------------------------------------------------
  @property
  def alphabet(self) -> str:
    return self._alphabet

  @property
  def vocab_size(self) -> int:
    return self.NUM_SPECIAL + len(self._alphabet)

  def id_of(self, ch: str) -> int:
    """Id of one alphabet character; ValueError otherwise."""
    if ch not in self._ids:
      raise ValueError(f"character {ch!r} is not in the tokenizer alphabet {self._alphabet!r}")
    return self._ids[ch]

  @property
  def newline_id(self) -> int:
    """Id of ``"\\n"``, the step delimiter."""
    return self.id_of("\n")

  @property
  def eos_ids(self) -> tuple[int, ...]:
    """The ids that end a generation: ``(EOS,)``."""
    return (self.EOS,)

  @property
  def delimiter_ids(self) -> tuple[int, ...]:
    """The ids a step ends with: ``(newline_id,)`` (one character per token)."""
    return (self.newline_id,)

  # -- encode / decode -------------------------------------------------------------------
  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Ids of ``text``; ValueError naming the first character outside the alphabet."""
    ids = [self.BOS] if add_bos else []
    get = self._ids.get
    for pos, ch in enumerate(text):
      i = get(ch)
      if i is None:
        raise ValueError(
            f"character {ch!r} at position {pos} of {short_repr(text)} is not in "
            f"the tokenizer alphabet {self._alphabet!r}"
        )
      ids.append(i)
    if add_eos:
      ids.append(self.EOS)
    return ids

  def decode(self, ids, stop_at_eos: bool = True) -> str:
    """Text of a 1-D id sequence (list or array): PAD/BOS skipped, stops at EOS if asked
    (otherwise EOS is skipped). Ids outside the vocabulary become ``unknown``."""
    out = []
    n = len(self._alphabet)
    for t in ids_1d(ids).tolist():
      t = int(t)
      if t == self.EOS:
        if stop_at_eos:
          break
        continue
      if t in (self.PAD, self.BOS):
        continue
      k = t - self.NUM_SPECIAL
      if 0 <= k < n:
        out.append(self._alphabet[k])
      elif self._unknown is None:
        raise ValueError(f"id {t} is outside the vocabulary (size {self.vocab_size})")
      else:
        out.append(self._unknown)
    return "".join(out)

  # -- identity ----------------------------------------------------------------------------
  def to_json(self) -> str:
    """A JSON description from which ``from_json`` rebuilds an identical tokenizer."""
    return json.dumps(
        {
            "type": "char",
            "alphabet": self._alphabet,
            "specials": {"pad": self.PAD, "bos": self.BOS, "eos": self.EOS},
        },
        sort_keys=True,
    )

  @classmethod
  def from_json(cls, text: str) -> "CharTokenizer":
    d = json.loads(text)
    if d.get("type") != "char":
      raise ValueError(f"not a char tokenizer description: {short_repr(text)}")
    specials = d.get("specials", {})
    if specials != {"pad": cls.PAD, "bos": cls.BOS, "eos": cls.EOS}:
      raise ValueError(f"special ids {specials} differ from this CharTokenizer's")
    return cls(d["alphabet"])

  def fingerprint(self) -> str:
    """Stable short identifier of the vocabulary, e.g. ``'char-28-1a2b3c4d5e6f7a8b'``."""
    digest = hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]
    return f"char-{self.vocab_size}-{digest}"

  def __eq__(self, other) -> bool:
    return isinstance(other, CharTokenizer) and other._alphabet == self._alphabet

  def __hash__(self) -> int:
    return hash(self._alphabet)

  def __repr__(self) -> str:
    return f"CharTokenizer(alphabet={self._alphabet!r})"


def check_compatible(tokenizer: CharTokenizer, vocab_size: int) -> None:
  """ValueError when a model's ``vocab_size`` cannot hold every id of ``tokenizer``."""
  if int(vocab_size) < tokenizer.vocab_size:
    raise ValueError(
        f"model vocab_size={vocab_size} is smaller than the tokenizer's vocab_size="
        f"{tokenizer.vocab_size} ({tokenizer.fingerprint()}); the model cannot "
        f"embed every token id"
    )
