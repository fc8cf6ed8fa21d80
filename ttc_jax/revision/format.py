"""Prompt format of the revision model: a question, previous attempts, a new attempt.

With previous attempts a_1 .. a_k (oldest first; each an attempt's text as
the policy writes it, ending with its `Answer: N` line), the revision prompt is

  <question>\\n a_1 \\n\\n a_2 \\n\\n ... a_k \\n\\n

and the new attempt follows it, ended by EOS. A blank line separates attempts:
the character tokenizer has no spare symbol, and a solution never contains an
empty line (its steps are non-empty lines joined by one newline). With k = 0
the revision prompt is exactly the policy's prompt, so the revision model's
first attempt in a chain is a plain sample.

At test time the context keeps the `context_attempts` (paper: 4) most recent
attempts (`truncate`); training trajectories put at most that many wrong
attempts before the target.
"""

from __future__ import annotations

from typing import Sequence

SEPARATOR = "\n\n"
DEFAULT_CONTEXT = 4


def clean_attempt(text: str) -> str:
  """An attempt as it is put in context: trailing blank lines dropped, inner
  blank lines collapsed (a model can write them; they would read as separators)."""
  lines = [ln for ln in text.split("\n") if ln != ""]
  return "\n".join(lines)


def truncate(attempts: Sequence[str], context_attempts: int = DEFAULT_CONTEXT) -> list[str]:
  """The `context_attempts` most recent attempts (all when fewer; none when 0)."""
  if context_attempts < 0:
    raise ValueError(f"context_attempts must be >= 0, got {context_attempts}")
  return list(attempts[max(0, len(attempts) - context_attempts):]) if context_attempts else []


def revision_prompt(question: str, attempts: Sequence[str]) -> str:
  """The prompt for a new attempt at `question` after `attempts` (oldest first)."""
  return question + "\n" + "".join(clean_attempt(a) + SEPARATOR for a in attempts)
