"""Answer extraction and equivalence for GSM8K and MATH (no eval of model text).

Per task, ``extract_answer(text) -> str | None`` and ``equivalent(a, b) -> bool``
(docs/design.md section 4), collected in ``GRADERS``::

    GRADERS["math"].extract_answer(model_text)     # -> "\\frac{1}{2}" or None
    GRADERS["math"].equivalent("0.5", "\\dfrac12")  # -> True

Modules:
  gsm8k        ``extract_gsm8k_answer``, ``gsm8k_equivalent`` (final number, exact equality)
  extract      ``last_boxed``, ``extract_math_answer`` (boxes, answer cues, final math)
  normalize    ``canonical_math_answer``, ``normalize_math_answer`` (string rewriting)
  relations    lists, tuples, matrices, relations, labels, intervals of canonical answers
  equivalence  ``math_equivalent`` (the comparison rules, time limit)
  symbolic     sympy checks on expressions built by ``latex_parse`` (optional, lazy)
  latex_parse  the safe LaTeX -> sympy parser (never ``sympify``)
  numbers      ``parse_number``, decimal commas, rounded decimals
  limits       the SIGALRM time limit

docs/grading.md lists what is recognised and the measured agreement.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from ttc_jax.grading import latex_parse  # noqa: F401 (grading.latex_parse)
from ttc_jax.grading.equivalence import DEFAULT_TIMEOUT_S, math_equivalent
from ttc_jax.grading.extract import MAX_ANSWER_CHARS, extract_math_answer, last_boxed
from ttc_jax.grading.gsm8k import extract_gsm8k_answer, gsm8k_equivalent
from ttc_jax.grading.normalize import canonical_math_answer, normalize_math_answer
from ttc_jax.grading.numbers import parse_number

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GRADERS",
    "Grader",
    "MAX_ANSWER_CHARS",
    "canonical_math_answer",
    "extract_gsm8k_answer",
    "extract_math_answer",
    "get_grader",
    "group_equivalent",
    "gsm8k_equivalent",
    "last_boxed",
    "math_equivalent",
    "normalize_math_answer",
    "parse_number",
]


@dataclasses.dataclass(frozen=True)
class Grader:
  """A task's answer extraction and equivalence."""

  extract_answer: Callable[[str], str | None]
  equivalent: Callable[[str | None, str | None], bool]

  def is_correct(self, text: str, reference_answer: str) -> bool:
    """Whether the answer extracted from ``text`` equals ``reference_answer``."""
    return self.equivalent(self.extract_answer(text), reference_answer)


def _arith_grader() -> Grader:
  from ttc_jax.tasks import arith

  return Grader(arith.extract_answer, arith.equivalent)


GRADERS: dict[str, Grader] = {
    "gsm8k": Grader(extract_gsm8k_answer, gsm8k_equivalent),
    "math": Grader(extract_math_answer, math_equivalent),
    "arith": _arith_grader(),
}


def get_grader(task: str) -> Grader:
  """The ``Grader`` of ``task`` ("arith", "gsm8k", "math")."""
  if task not in GRADERS:
    raise KeyError(f"no grader for task {task!r}; known: {sorted(GRADERS)}")
  return GRADERS[task]


def group_equivalent(answers: Sequence[str | None], equivalent: Callable) -> list[int]:
  """Group id per answer (first-seen representatives; None gets -1), e.g. for
  majority voting and weighted best-of-N over equivalent answers."""
  reps: list[str] = []
  ids = []
  for ans in answers:
    if ans is None:
      ids.append(-1)
      continue
    for k, rep in enumerate(reps):
      if ans == rep or equivalent(ans, rep):
        ids.append(k)
        break
    else:
      reps.append(ans)
      ids.append(len(reps) - 1)
  return ids
