"""Difficulty levels, problems with their canonical solutions, and the deterministic generator."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Sequence

import numpy as np

from ttc_jax.tasks.arith.grammar import MAX_DIGITS, MAX_OPS, OPS, format_solution, solve


@dataclasses.dataclass(frozen=True)
class Level:
  """One difficulty level: ``num_ops`` binary operations, operands of up to ``digits`` digits.

  Operands: for each operand a digit count is drawn uniformly in ``1..digits``, then the value
  uniformly among numbers with exactly that many digits (1 digit: 0..9, 2: 10..99, 3: 100..999),
  so a ``d2``/``d3`` level mixes small and large operands.
  """

  num_ops: int
  digits: int

  def __post_init__(self):
    if not (1 <= self.num_ops <= MAX_OPS) or not (1 <= self.digits <= MAX_DIGITS):
      raise ValueError(
          f"Level(num_ops={self.num_ops}, digits={self.digits}) is out of range: "
          f"need 1 <= num_ops <= {MAX_OPS} and 1 <= digits <= {MAX_DIGITS}"
      )

  @property
  def name(self) -> str:
    return f"ops{self.num_ops}_d{self.digits}"


@dataclasses.dataclass(frozen=True)
class Problem:
  """A question with its canonical solution."""

  question: str  # expression without the trailing newline
  steps: tuple[str, ...]  # canonical reduction lines
  answer: int
  level: Level

  @property
  def prompt(self) -> str:
    return self.question + "\n"

  @property
  def solution(self) -> str:
    return format_solution(self.steps, self.answer)


def _int_range(text: str, spec: str) -> list[int]:
  m = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
  if m is None:
    raise ValueError(f"bad level spec {spec!r}: {text!r} is not N or N-M")
  lo = int(m.group(1))
  hi = int(m.group(2)) if m.group(2) else lo
  if hi < lo:
    raise ValueError(f"bad level spec {spec!r}: empty range {text!r}")
  return list(range(lo, hi + 1))


def parse_levels(spec: str) -> tuple[Level, ...]:
  """Parse a level spec.

  Accepted forms: ``"ops=1-6,digits=1"`` (ranges ``N`` or ``N-M``; cross product, digits outer,
  ops inner), a list of ``OPSxDIGITS`` items ``"1x1,2x1,3x2"``, or level names
  ``"ops3_d1,ops4_d2"``. Duplicates are dropped (first occurrence kept). Raises ``ValueError``
  naming the spec.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"bad level spec {spec!r}: empty")
  parts = [p.strip() for p in spec.split(",") if p.strip()]
  pairs: list[tuple[int, int]] = []
  if any("=" in p for p in parts):
    keys: dict[str, list[int]] = {}
    for p in parts:
      key, sep, val = p.partition("=")
      key = key.strip()
      if not sep or key not in ("ops", "digits") or key in keys:
        raise ValueError(f"bad level spec {spec!r}: expected ops=..,digits=.. got {p!r}")
      keys[key] = _int_range(val, spec)
    if "ops" not in keys:
      raise ValueError(f"bad level spec {spec!r}: missing ops=")
    pairs = [(o, d) for d in keys.get("digits", [1]) for o in keys["ops"]]
  else:
    for p in parts:
      m = re.fullmatch(r"(\d+)x(\d+)|ops(\d+)_d(\d+)", p)
      if m is None:
        raise ValueError(f"bad level spec {spec!r}: {p!r} is not OPSxDIGITS or opsN_dM")
      o, d = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
      pairs.append((int(o), int(d)))
  try:
    levels = [Level(o, d) for o, d in pairs]
  except ValueError as e:
    raise ValueError(f"bad level spec {spec!r}: {e}") from None
  return tuple(dict.fromkeys(levels))


def _operand(rng: np.random.Generator, digits: int) -> int:
  nd = int(rng.integers(1, digits + 1))
  lo = 0 if nd == 1 else 10 ** (nd - 1)
  return int(rng.integers(lo, 10**nd))


def random_expression(rng: np.random.Generator, level: Level, paren_prob: float = 0.3) -> str:
  """A random expression with exactly ``level.num_ops`` operations.

  Operands and operators are drawn left to right; then, scanning operand positions, with
  probability ``paren_prob`` a group opens at a position and spans a uniformly drawn number of
  following operands (>= 2), recursively. A group never wraps a single number, the whole
  expression, or the whole of its enclosing group, so no parentheses are doubled.
  """
  n = level.num_ops + 1
  nums = [_operand(rng, level.digits) for _ in range(n)]
  ops = [OPS[int(k)] for k in rng.integers(0, 3, size=n - 1)]

  def render(lo: int, hi: int) -> str:  # operands lo..hi inclusive
    out, i = [], lo
    while i <= hi:
      if i > lo:
        out.append(ops[i - 1])
      ends = [j for j in range(i + 1, hi + 1) if not (i == lo and j == hi)]
      if ends and rng.random() < paren_prob:
        j = ends[int(rng.integers(0, len(ends)))]
        out.append("(" + render(i, j) + ")")
        i = j + 1
      else:
        out.append(str(nums[i]))
        i += 1
    return "".join(out)

  return render(0, n - 1)


def make_problem(rng: np.random.Generator, level: Level, paren_prob: float = 0.3) -> Problem:
  """A random problem of the given level with its canonical solution."""
  q = random_expression(rng, level, paren_prob)
  steps, answer = solve(q)
  return Problem(q, steps, answer, level)


def split_of(question: str, test_fraction: float = 0.1) -> str:
  """'train' or 'test' from a stable SHA-256 hash of the question (disjoint by construction)."""
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
  h = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:8], "big")
  return "test" if h / 2.0**64 < test_fraction else "train"


def generate(
    split: str,
    levels: Sequence[Level],
    num_per_level: int,
    seed: int,
    test_fraction: float = 0.1,
    max_tries_factor: int = 200,
    paren_prob: float = 0.3,
) -> list[Problem]:
  """Deterministic problems of one split, ``num_per_level`` per level, levels in the given order.

  Each level draws from its own stream ``default_rng([seed, num_ops, digits])`` and keeps
  questions whose ``split_of`` is ``split`` and that were not already produced in this call.
  Drawing stops after ``max_tries_factor * num_per_level`` draws, or once no new question
  appeared in ``max(2000, 10 * found)`` consecutive draws (the level's space is exhausted).
  Small levels: 'test' then returns only the unique questions found (ops1_d1 has 300
  expressions, about 30 in test); 'train' repeats its unique questions, cycling in order,
  up to ``num_per_level``. A level with no question in the split is returned empty; never raises
  for small levels.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  seen: set[str] = set()
  out: list[Problem] = []
  for level in levels:
    rng = np.random.default_rng([seed, level.num_ops, level.digits])
    found: list[Problem] = []
    max_tries = max_tries_factor * max(num_per_level, 1)
    tries = stale = 0
    while len(found) < num_per_level and tries < max_tries and stale < max(2000, 10 * len(found)):
      tries += 1
      stale += 1
      q = random_expression(rng, level, paren_prob)
      if q in seen or split_of(q, test_fraction) != split:
        continue
      seen.add(q)
      steps, answer = solve(q)
      found.append(Problem(q, steps, answer, level))
      stale = 0
    if split == "train" and found:
      found = [found[k % len(found)] for k in range(num_per_level)]
    out.extend(found)
  return out
