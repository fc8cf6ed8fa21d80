"""Answer extraction and equivalence for the embedded arithmetic task (``Answer: N`` lines)."""

from __future__ import annotations

from ttc_jax.tasks.arith.grammar import ANSWER_RE, INT_RE


def extract_answer(text: str) -> str | None:
  """The ``N`` of the last ``Answer: N`` line (N an optionally signed integer), else None."""
  if not isinstance(text, str):
    return None
  for line in reversed(text.split("\n")):
    m = ANSWER_RE.fullmatch(line.strip())
    if m:
      return m.group(1)
  return None


def equivalent(a: str | None, b: str | None) -> bool:
  """Integer equality of two answer strings after strip; None or unparsable is never equal."""
  try:
    if not isinstance(a, str) or not isinstance(b, str):
      return False
    a, b = a.strip(), b.strip()
    if len(a) > 1000 or len(b) > 1000 or not INT_RE.fullmatch(a) or not INT_RE.fullmatch(b):
      return False
    return int(a) == int(b)
  except (ValueError, TypeError):
    return False


def is_correct(solution_text: str, answer: int) -> bool:
  """Whether the extracted final answer equals ``answer``."""
  return equivalent(extract_answer(solution_text), str(answer))
