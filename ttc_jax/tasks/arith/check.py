"""Exact step checker for the embedded arithmetic task (see ttc_jax.tasks.arith).

For any model-written solution: which reduction lines are right (the canonical
next reduction of the current expression state, with the right result), the
first wrong line, and whether the final answer is right. Never raises on model
text and never evaluates it; work is bounded by MAX_LINES and MAX_LINE_CHARS.
"""

from __future__ import annotations

import dataclasses
import itertools

from ttc_jax.tasks.arith.answer import equivalent
from ttc_jax.tasks.arith.grammar import (
    ANSWER_RE,
    LINE_RE,
    MAX_LINE_CHARS,
    MAX_LINES,
    apply_op,
    drop_parens,
    next_reduction,
    reduce_at,
    solve,
    tokenize,
)


@dataclasses.dataclass(frozen=True)
class StepCheck:
  """Result of ``check_solution``; per-line fields are aligned with ``steps``."""

  steps: tuple[str, ...]  # the model's lines before the Answer line (reduction lines)
  step_correct: tuple[bool, ...]  # canonical next reduction of the current state, right result
  prefix_correct: tuple[bool, ...]  # every line so far is correct
  first_error: int | None  # index of the first wrong line, None if all right
  answer: str | None  # N of the first Answer line, None if absent/unparsable
  answer_correct: bool  # answer equals the true answer of the question
  complete: bool  # an Answer line exists and no reduction remains in the state
  num_lines: int = 0  # lines examined, including the Answer line

  @property
  def all_correct(self) -> bool:
    return self.complete and self.answer_correct and self.first_error is None


def check_solution(question: str, solution_text: str) -> StepCheck:
  """Exact per-step check of a model's solution text against ``question``.

  Lines are walked with a current expression state (starting at the question). A line
  ``x<op>y=z`` is right iff ``(x, op, y)`` is the canonical next reduction of the state and ``z``
  is its value; if the operands match but ``z`` is wrong the line is wrong and the state takes the
  model's ``z`` (later lines are judged locally); any other line (wrong operands, unparsable,
  longer than ``MAX_LINE_CHARS``, extra lines when nothing is left to reduce, blank lines) is wrong
  and leaves the state unchanged. Checking stops at the first line starting with ``Answer:``
  (later lines are ignored) and after ``MAX_LINES`` lines. A trailing newline is ignored.
  ``answer`` is read from that first Answer line (``extract_answer`` reads the last one; they
  differ only on texts with several Answer lines). Raises only for a malformed ``question``.
  """
  _, true_answer = solve(question)
  state = drop_parens(tokenize(question))
  text = solution_text if isinstance(solution_text, str) else ""
  lines = text.split("\n", MAX_LINES)[:MAX_LINES]
  if lines and lines[-1] == "":
    lines.pop()
  steps: list[str] = []
  correct: list[bool] = []
  answer, has_answer, num_lines = None, False, 0
  for line in lines:
    num_lines += 1
    s = line.strip()
    if s.startswith("Answer:"):
      has_answer = True
      m = ANSWER_RE.fullmatch(s) if len(s) <= MAX_LINE_CHARS else None
      answer = m.group(1) if m else None
      break
    steps.append(line)
    ok = False
    m = LINE_RE.fullmatch(s) if len(s) <= MAX_LINE_CHARS else None
    i = next_reduction(state)
    if m is not None and i is not None:
      x, op, y, z = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
      if (x, op, y) == (state[i], state[i + 1], state[i + 2]):
        ok = z == apply_op(x, op, y)
        state = reduce_at(state, i, z)
    correct.append(ok)
  prefix = tuple(itertools.accumulate(correct, lambda p, c: p and c))
  first_error = next((k for k, c in enumerate(correct) if not c), None)
  return StepCheck(
      steps=tuple(steps),
      step_correct=tuple(correct),
      prefix_correct=prefix,
      first_error=first_error,
      answer=answer,
      answer_correct=equivalent(answer, str(true_answer)),
      complete=has_answer and next_reduction(state) is None,
      num_lines=num_lines,
  )
