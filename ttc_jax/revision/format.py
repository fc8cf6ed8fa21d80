"""Prompt format of the revision model: a question, previous attempts, a new attempt.

With previous attempts a_1 .. a_k (oldest first; each an attempt's text as
the policy writes it, ending with its `Answer: N` line), the revision prompt is

  <question>\\n a_1 \\n\\n a_2 \\n\\n ... a_k \\n\\n

and the new attempt follows it, ended by EOS. A blank line separates attempts:
the character tokenizer has no spare symbol, and a solution never contains an
empty line (its steps are non-empty lines joined by one newline). With k = 0
the revision prompt is exactly the policy's prompt, so the revision model's
first attempt in a chain is a plain sample.

With question position "last" (`config.revision.question_position`) the
question follows the attempts instead:

  a_1 \\n\\n ... a_k \\n\\n <question>\\n

so the new attempt starts right after its question, as in the policy's own
prompts, however many attempts precede it (the policy trained on 128-token
rows has never seen its question further back; RoPE is relative). k = 0 is
again the policy's prompt.

At test time the context keeps the `context_attempts` (paper: 4) most recent
attempts (`truncate`); training trajectories put at most that many wrong
attempts before the target.
"""

from __future__ import annotations

from typing import Sequence

SEPARATOR = "\n\n"
DEFAULT_CONTEXT = 4
QUESTION_POSITIONS = ("first", "last")


def clean_attempt(text: str) -> str:
  """An attempt as it is put in context: trailing blank lines dropped, inner
  blank lines collapsed (a model can write them; they would read as separators)."""
  lines = [ln for ln in text.split("\n") if ln != ""]
  return "\n".join(lines)


def truncate(attempts: Sequence[str], context_attempts: int = DEFAULT_CONTEXT) -> list[str]:
  """The `context_attempts` most recent attempts (all when fewer; none when 0)."""
  if context_attempts < 0:
    raise ValueError(f"context_attempts must be >= 0, got {context_attempts}")
  return list(attempts[max(0, len(attempts) - context_attempts) :]) if context_attempts else []


def check_question_position(position: str) -> str:
  if position not in QUESTION_POSITIONS:
    raise ValueError(f"question position must be one of {QUESTION_POSITIONS}, got {position!r}")
  return position


def revision_prompt(
    question: str, attempts: Sequence[str], question_position: str = "first"
) -> str:
  """The prompt for a new attempt at `question` after `attempts` (oldest first)."""
  context = "".join(clean_attempt(a) + SEPARATOR for a in attempts)
  if check_question_position(question_position) == "last":
    return context + question + "\n"
  return question + "\n" + context
