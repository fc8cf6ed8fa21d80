"""Embedded multi-step integer arithmetic task: generator, canonical solutions, exact step checker.

A question is an expression over non-negative integers with ``+ - *`` and parentheses, no spaces,
e.g. ``3+(4-6)*2``. The prompt is the question plus ``"\\n"``. A solution is one reduction per
line, ``a<op>b=c``, then ``Answer: N`` (no trailing newline; the EOS token follows when tokenized)::

    4-6=-2
    -2*2=-4
    3+-4=-1
    Answer: -1

Canonical reduction order (it makes the checker exact): take the leftmost innermost parenthesised
group (or the whole expression when no parentheses remain); within it reduce the leftmost ``*`` if
any, else the leftmost ``+``/``-``. A group reduced to a single number drops its parentheses without
a line. Negative numbers are written ``-5``; when parsing, a ``-`` is a sign if it starts the
expression or directly follows an operator or ``(``, otherwise it is binary minus.

Nothing here uses ``eval``/``exec``; the checker never raises on model text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Sequence

import numpy as np

MAX_OPS = 12
MAX_DIGITS = 3
ANSWER_PREFIX = "Answer: "
MAX_LINE_CHARS = 200   # checker: longer lines are wrong without being parsed
MAX_LINES = 64         # checker: lines examined at most (including the Answer line)
_OPS = ("+", "-", "*")
_NUM = r"-?(?:0|[1-9][0-9]*)"
_NUM_AT = re.compile(r"-?[0-9]+")
_LINE_RE = re.compile(rf"({_NUM})([+\-*])({_NUM})=({_NUM})")
_ANSWER_RE = re.compile(r"Answer:\s*([+-]?[0-9]+)")
_INT_RE = re.compile(r"[+-]?[0-9]+")


# ----------------------------------------------------------------------------- levels, problems
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
            raise ValueError(f"Level(num_ops={self.num_ops}, digits={self.digits}) is out of range: "
                             f"need 1 <= num_ops <= {MAX_OPS} and 1 <= digits <= {MAX_DIGITS}")

    @property
    def name(self) -> str:
        return f"ops{self.num_ops}_d{self.digits}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A question with its canonical solution."""

    question: str            # expression without the trailing newline
    steps: tuple[str, ...]   # canonical reduction lines
    answer: int
    level: Level

    @property
    def prompt(self) -> str:
        return self.question + "\n"

    @property
    def solution(self) -> str:
        return format_solution(self.steps, self.answer)


def format_solution(steps: Sequence[str], answer: int) -> str:
    """The solution text: reduction lines, then ``Answer: N`` (no trailing newline)."""
    return "".join(s + "\n" for s in steps) + ANSWER_PREFIX + str(answer)


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
    ops inner), a list of ``OPSxDIGITS`` items ``"1x1,2x1,3x2"``, or level names ``"ops3_d1,ops4_d2"``.
    Duplicates are dropped (first occurrence kept). Raises ``ValueError`` naming the spec.
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


# ----------------------------------------------------------------------------- parsing, reduction
def _tokenize(expr: str) -> list:
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
        elif not want_operand and c in _OPS:
            pass
        else:
            raise bad(f"unexpected {c!r} at position {i}")
        toks.append(c)
        i += 1
    if not toks or toks[-1] in ("+", "-", "*", "(") or depth:
        raise bad("incomplete expression or unbalanced '('")
    return toks


def _drop_parens(toks: list) -> list:
    """Remove parentheses around single numbers (no line is written for this)."""
    out: list = []
    for t in toks:
        if t == ")" and len(out) >= 2 and out[-2] == "(" and isinstance(out[-1], int):
            out[-2:] = [out[-1]]
        else:
            out.append(t)
    return out


def _next_reduction(toks: list) -> int | None:
    """Index of the left operand of the next canonical reduction, or None if ``toks`` is a number.

    ``toks`` must have no parentheses around single numbers (see ``_drop_parens``).
    """
    if len(toks) == 1:
        return None
    lo, hi = 0, len(toks)
    if ")" in toks:
        hi = toks.index(")")   # first ')' closes the leftmost innermost group
        lo = max(i for i in range(hi) if toks[i] == "(") + 1
    ops = range(lo + 1, hi, 2)
    star = [i for i in ops if toks[i] == "*"]
    return (star[0] if star else lo + 1) - 1


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _reduce(toks: list, i: int, value: int) -> list:
    return _drop_parens(toks[:i] + [value] + toks[i + 3:])


def solve(question: str) -> tuple[tuple[str, ...], int]:
    """Canonical reduction lines and the answer; ValueError naming a malformed question."""
    toks = _drop_parens(_tokenize(question))
    steps = []
    while (i := _next_reduction(toks)) is not None:
        a, op, b = toks[i], toks[i + 1], toks[i + 2]
        c = _apply(a, op, b)
        steps.append(f"{a}{op}{b}={c}")
        toks = _reduce(toks, i, c)
    return tuple(steps), toks[0]


def num_ops(question: str) -> int:
    """Number of binary operations in an expression (ValueError if malformed)."""
    return sum(1 for t in _tokenize(question) if t in _OPS)


# ----------------------------------------------------------------------------- generation
def _operand(rng: np.random.Generator, digits: int) -> int:
    nd = int(rng.integers(1, digits + 1))
    lo = 0 if nd == 1 else 10 ** (nd - 1)
    return int(rng.integers(lo, 10 ** nd))


def random_expression(rng: np.random.Generator, level: Level, paren_prob: float = 0.3) -> str:
    """A random expression with exactly ``level.num_ops`` operations.

    Operands and operators are drawn left to right; then, scanning operand positions, with
    probability ``paren_prob`` a group opens at a position and spans a uniformly drawn number of
    following operands (>= 2), recursively. A group never wraps a single number, the whole
    expression, or the whole of its enclosing group, so no parentheses are doubled.
    """
    n = level.num_ops + 1
    nums = [_operand(rng, level.digits) for _ in range(n)]
    ops = [_OPS[int(k)] for k in rng.integers(0, 3, size=n - 1)]

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


def generate(split: str, levels: Sequence[Level], num_per_level: int, seed: int,
             test_fraction: float = 0.1, max_tries_factor: int = 200,
             paren_prob: float = 0.3) -> list[Problem]:
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


# ----------------------------------------------------------------------------- grading, checking
def extract_answer(text: str) -> str | None:
    """The ``N`` of the last ``Answer: N`` line (N an optionally signed integer), else None."""
    if not isinstance(text, str):
        return None
    for line in reversed(text.split("\n")):
        m = _ANSWER_RE.fullmatch(line.strip())
        if m:
            return m.group(1)
    return None


def equivalent(a: str | None, b: str | None) -> bool:
    """Integer equality of two answer strings after strip; None or unparsable is never equal."""
    try:
        if not isinstance(a, str) or not isinstance(b, str):
            return False
        a, b = a.strip(), b.strip()
        if len(a) > 1000 or len(b) > 1000 or not _INT_RE.fullmatch(a) or not _INT_RE.fullmatch(b):
            return False
        return int(a) == int(b)
    except (ValueError, TypeError):
        return False


def is_correct(solution_text: str, answer: int) -> bool:
    """Whether the extracted final answer equals ``answer``."""
    return equivalent(extract_answer(solution_text), str(answer))


def __getattr__(name: str):
    """`StepCheck` and `check_solution` live in arith_check.py (re-exported lazily)."""
    if name in ("StepCheck", "check_solution"):
        from ttc_jax.tasks import arith_check
        return getattr(arith_check, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
