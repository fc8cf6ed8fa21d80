"""MATH answer equivalence: ``math_equivalent(a, b)``.

Both answers are brought to ``canonical_math_answer`` form; then, in order:

1. equal ``normalize_math_answer`` strings (labels dropped) -> equal;
2. relations and unions: when either side is an inequality, ``x\\in S`` or a
   union (``\\cup``, "or"), both are read as unions of intervals and compared as
   sets of intervals (same brackets, equal endpoints), any order;
3. relations on both sides: the same operators with equal sides (``x>=5`` ==
   ``5<=x``, ``a!=b`` == ``b!=a``), or equations equal up to moving terms and a
   nonzero factor (``2x+4y-3=0`` == ``y=-\\frac{1}{2}x+\\frac{3}{4}``);
4. labelled values: ``x=11`` stands for ``11``, ``(p,q)=(3,2)`` for ``(3,2)``,
   ``V_1:V_2=11:21`` for ``11:21``, a chain ``x=5+5+1=7=11`` for its last side,
   ``x=-5,p=3`` for ``(-5,3)`` (``relations.views``);
5. a decimal comma ``2,74`` against a number (2.74);
6. sequences: tuples, intervals and matrices (pmatrix, bmatrix, array: the same
   shape) need the same brackets and equal elements in order; sets ``\\{a,b\\}``
   (also ``{a,b}``) and bare lists ``a,b`` a one-to-one matching in any order;
   elements are compared by these same rules (sets of tuples);
7. scalars: equal exact numbers (``0.5`` vs ``\\frac{1}{2}``), a decimal of 6+
   significant digits against the exact value it rounds (``0.0833333`` vs
   ``\\frac{1}{12}``), else symbolic equality with sympy of expressions built by
   ``latex_parse`` (never ``sympify``; ``\\tan^2y+1`` == ``\\sec^2y``).

The symbolic steps first reject on random-point numeric disagreement, then need
``sympy.simplify`` to prove the difference zero within ``timeout_s`` (SIGALRM
timer on the main thread; the whole comparison is under it). Off the main thread
(no SIGALRM), numeric agreement at 6 random points stands in for simplify, and
once ``timeout_s`` has passed every further symbolic comparison counts as unequal
(string/number comparisons still run), so the call stays bounded. Without sympy the
symbolic steps are skipped. Failures, unparsable input and main-thread timeouts give
False; nothing raises.
"""

from __future__ import annotations

import time

from ttc_jax.grading import relations, symbolic
from ttc_jax.grading.extract import MAX_ANSWER_CHARS
from ttc_jax.grading.limits import Timeout, can_alarm, time_limit
from ttc_jax.grading.normalize import canonical_math_answer, normalize_math_answer
from ttc_jax.grading.numbers import decimal_comma, decimal_digits, parse_number, rounds_to

DEFAULT_TIMEOUT_S = 2.0
MAX_DEPTH = 4  # nesting of structures compared element by element
_UNORDERED = ("\\{\\}", "")  # set braces, bare comma lists (MATH's "enter all solutions")


def _scalar_equal(a: str, b: str, deadline: float) -> bool:
  if a == b:
    return True
  va, vb = parse_number(a), parse_number(b)
  if va is not None and vb is not None:
    if va == vb:
      return True
    return (decimal_digits(b) == 0 and rounds_to(a, float(vb))) or (
        decimal_digits(a) == 0 and rounds_to(b, float(va))
    )
  return symbolic.symbolic_equal(a, b, deadline)


def _intervals_equal(ia: list, ib: list, deadline: float) -> bool:
  if len(ia) != len(ib):
    return False
  unused = list(ib)
  for lo, lc, hi, hc in ia:
    k = next(
        (
            k
            for k, (lo2, lc2, hi2, hc2) in enumerate(unused)
            if lc == lc2
            and hc == hc2
            and _scalar_equal(lo, lo2, deadline)
            and _scalar_equal(hi, hi2, deadline)
        ),
        None,
    )
    if k is None:
      return False
    unused.pop(k)
  return True


def _relations_equal(ra, rb, deadline: float, depth: int) -> bool:
  (sa, oa), (sb, ob) = ra, rb
  if oa == ob and all(_equal(x, y, deadline, depth + 1) for x, y in zip(sa, sb)):
    return True
  if oa == ob and len(oa) == 1 and oa[0] in ("=", "!="):  # symmetric relations
    if _equal(sa[0], sb[1], deadline, depth + 1) and _equal(sa[1], sb[0], deadline, depth + 1):
      return True
  if oa == ob == ["="]:
    return symbolic.proportional(tuple(sa), tuple(sb), deadline)
  return False


def _sequences_equal(sa, sb, deadline: float, depth: int) -> bool:
  if sa[0] != sb[0] or len(sa[1]) != len(sb[1]):
    return False
  if sa[0] in _UNORDERED:  # sets and bare lists: a one-to-one matching
    unused = list(sb[1])
    for x in sa[1]:
      k = next((k for k, y in enumerate(unused) if _equal(x, y, deadline, depth + 1)), None)
      if k is None:
        return False
      unused.pop(k)
    return True
  return all(_equal(x, y, deadline, depth + 1) for x, y in zip(sa[1], sb[1]))


def _equal(a: str, b: str, deadline: float, depth: int = 0) -> bool:
  """Canonical answers ``a`` and ``b`` are equivalent (module docstring, steps 2-7)."""
  if a == b:
    return True
  if depth > MAX_DEPTH or a == "" or b == "":
    return False
  if relations.has_relation_or_union(a) or relations.has_relation_or_union(b):
    ia, ib = relations.intervals(a), relations.intervals(b)
    if ia is not None and ib is not None:
      return _intervals_equal(ia, ib, deadline)
  ra, rb = relations.relation(a), relations.relation(b)
  if ra is not None and rb is not None and _relations_equal(ra, rb, deadline, depth):
    return True
  va, vb = relations.views(a), relations.views(b)
  if va or vb:
    for x in [a] + va:
      for y in [b] + vb:
        if (x, y) != (a, b) and _equal(x, y, deadline, depth + 1):
          return True
  if ra is not None or rb is not None:
    return False
  for x, y in ((a, b), (b, a)):  # 2,74 vs 2.74
    dx, vy = decimal_comma(x), parse_number(y)
    if dx is not None and vy is not None:
      return dx == vy
  sa, sb = relations.sequence(a), relations.sequence(b)
  if sa is not None or sb is not None:
    return sa is not None and sb is not None and _sequences_equal(sa, sb, deadline, depth)
  return _scalar_equal(a, b, deadline)


def math_equivalent(a: str | None, b: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
  """Whether two MATH answers are equivalent (see the module docstring).

  Never raises; returns False for None, unparsable answers, failures and
  comparisons that take longer than ``timeout_s`` seconds (whole call, main
  thread; elsewhere the bounded numeric check stands in for simplify).
  """
  deadline = time.monotonic() + float(timeout_s)
  try:
    na, nb = normalize_math_answer(a), normalize_math_answer(b)
    if na is None or nb is None or na == "" or nb == "":
      return False
    if na == nb:
      return True
    if len(na) > MAX_ANSWER_CHARS or len(nb) > MAX_ANSWER_CHARS:
      return False
    ca, cb = canonical_math_answer(a), canonical_math_answer(b)
    symbolic.load_sympy()
    if not can_alarm():
      return _equal(ca, cb, deadline)
    with time_limit(max(float(timeout_s), 1e-3)) as alarm:
      equal = _equal(ca, cb, deadline)
    return equal and not alarm["fired"]
  except Timeout:
    return False
  except Exception:  # grading never raises on model text
    return False
