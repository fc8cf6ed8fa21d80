"""Grammar of the embedded arithmetic task: expressions, solution lines, canonical step order.

A leaf module: the generator (``problems``), the answer grader (``answer``) and the step checker
(``check``) all build on it. See the package docstring (``ttc_jax.tasks.arith``) for the format.

Grammar: expr := operand (op operand)*, operand := number | '(' expr ')', op one of ``+ - *``.
Canonical reduction order: take the leftmost innermost parenthesised group (or the whole
expression when no parentheses remain); within it reduce the leftmost ``*`` if any, else the
leftmost ``+``/``-``. A group reduced to a single number drops its parentheses without a line.
"""

from __future__ import annotations

import re
from typing import Sequence

MAX_OPS = 12
MAX_DIGITS = 3
ANSWER_PREFIX = "Answer: "
MAX_LINE_CHARS = 200  # checker: longer lines are wrong without being parsed
MAX_LINES = 64  # checker: lines examined at most (including the Answer line)
OPS = ("+", "-", "*")
_NUM = r"-?(?:0|[1-9][0-9]*)"
_NUM_AT = re.compile(r"-?[0-9]+")
LINE_RE = re.compile(rf"({_NUM})([+\-*])({_NUM})=({_NUM})")
ANSWER_RE = re.compile(r"Answer:\s*([+-]?[0-9]+)")
INT_RE = re.compile(r"[+-]?[0-9]+")


def format_solution(steps: Sequence[str], answer: int) -> str:
  """The solution text: reduction lines, then ``Answer: N`` (no trailing newline)."""
  return "".join(s + "\n" for s in steps) + ANSWER_PREFIX + str(answer)


# ----------------------------------------------------------------------------- parsing, reduction
def tokenize(expr: str) -> list:
  """Tokens: ints for numbers, ``'+' '-' '*' '(' ')'`` strings; ValueError naming a malformed input.

  Grammar: expr := operand (op operand)*, operand := number | '(' expr ')'. Where an operand is
  expected, ``-digits`` is a (negative) number; elsewhere ``-`` is binary minus.
  """

  def bad(why: str) -> ValueError:
    return ValueError(f"malformed expression {expr!r}: {why}")

  if not isinstance(expr, str):
    raise bad("not a string")
  toks: list = []
  depth = i = 0
  while i < len(expr):
    want_operand = not toks or toks[-1] in ("+", "-", "*", "(")
    c = expr[i]
    m = _NUM_AT.match(expr, i) if want_operand else None
    if m is not None:
      toks.append(int(m.group()))
      i = m.end()
      continue
    if want_operand and c == "(":
      depth += 1
    elif not want_operand and c == ")" and depth > 0:
      depth -= 1
    elif not want_operand and c in OPS:
      pass
    else:
      raise bad(f"unexpected {c!r} at position {i}")
    toks.append(c)
    i += 1
  if not toks or toks[-1] in ("+", "-", "*", "(") or depth:
    raise bad("incomplete expression or unbalanced '('")
  return toks


def drop_parens(toks: list) -> list:
  """Remove parentheses around single numbers (no line is written for this)."""
  out: list = []
  for t in toks:
    if t == ")" and len(out) >= 2 and out[-2] == "(" and isinstance(out[-1], int):
      out[-2:] = [out[-1]]
    else:
      out.append(t)
  return out


def next_reduction(toks: list) -> int | None:
  """Index of the left operand of the next canonical reduction, or None if ``toks`` is a number.

  ``toks`` must have no parentheses around single numbers (see ``drop_parens``).
  """
  if len(toks) == 1:
    return None
  lo, hi = 0, len(toks)
  if ")" in toks:
    hi = toks.index(")")  # first ')' closes the leftmost innermost group
    lo = max(i for i in range(hi) if toks[i] == "(") + 1
  ops = range(lo + 1, hi, 2)
  star = [i for i in ops if toks[i] == "*"]
  return (star[0] if star else lo + 1) - 1


def apply_op(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


def reduce_at(toks: list, i: int, value: int) -> list:
  return drop_parens(toks[:i] + [value] + toks[i + 3 :])


def solve(question: str) -> tuple[tuple[str, ...], int]:
  """Canonical reduction lines and the answer; ValueError naming a malformed question."""
  toks = drop_parens(tokenize(question))
  steps = []
  while (i := next_reduction(toks)) is not None:
    a, op, b = toks[i], toks[i + 1], toks[i + 2]
    c = apply_op(a, op, b)
    steps.append(f"{a}{op}{b}={c}")
    toks = reduce_at(toks, i, c)
  return tuple(steps), toks[0]


def num_ops(question: str) -> int:
  """Number of binary operations in an expression (ValueError if malformed)."""
  return sum(1 for t in tokenize(question) if t in OPS)
