"""GSM8K answers: the final number of a reference or model output, exact equality.

References end with ``#### N``; for model output the number after the last "The
answer is" / "Answer:" is taken, else the last number in the text. Extracted
answers are cleaned numbers: ``$`` and thousands commas removed, a trailing ``.``
dropped (``"$1,000."`` -> ``"1000"``). Equivalence is exact rational equality after
that cleaning, so ``5.0 == 5`` and ``0.50 == 0.5``; a trailing ``%`` is dropped
(``50% == 50``: GSM8K references are bare numbers). Non-numeric answers are equal
only as identical stripped strings.
"""

from __future__ import annotations

import re

from ttc_jax.grading.extract import MAX_ANSWER_CHARS
from ttc_jax.grading.numbers import NUM_RE, clean_number, parse_number

_GSM_CUE_RE = re.compile(r"(?:the (?:final )?answer is|answer\s*:)", re.IGNORECASE)


def extract_gsm8k_answer(text: str) -> str | None:
  """The cleaned final number of a GSM8K reference or model output, else None.

  Order: the text after the last ``####`` (its first number, or the stripped
  first line when it has none); the first number after the last "The answer
  is"/"Answer:"; the last number in the text.
  """
  if not isinstance(text, str):
    return None
  if "####" in text:
    tail = text.rsplit("####", 1)[1].strip().split("\n", 1)[0]
    m = NUM_RE.search(tail)
    return clean_number(m.group(0)) if m else (tail.strip() or None)
  cues = list(_GSM_CUE_RE.finditer(text))
  if cues:
    m = NUM_RE.search(text, cues[-1].end())
    if m:
      return clean_number(m.group(0))
  last = None
  for last in NUM_RE.finditer(text):
    pass
  return clean_number(last.group(0)) if last else None


def gsm8k_equivalent(a: str | None, b: str | None) -> bool:
  """Exact numeric equality after cleaning (``$``, commas, ``%``, trailing ``.``)."""
  try:
    if not isinstance(a, str) or not isinstance(b, str):
      return False
    if len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
      return False
    ca, cb = (clean_number(x).rstrip("%").strip() for x in (a, b))
    va, vb = parse_number(ca), parse_number(cb)
    if va is not None and vb is not None:
      return va == vb
    return va is None and vb is None and a.strip() == b.strip() != ""
  except Exception:  # grading never raises on model text
    return False
