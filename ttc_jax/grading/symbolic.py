"""Symbolic comparison of parsed answers with sympy (optional, imported lazily).

Expressions come only from ``latex_parse.parse_latex`` (never ``sympify``). Each
check first rejects on random-point numeric disagreement, then needs an exact
sympy proof (``simplify(a - b) == 0``) under the caller's SIGALRM time limit; off
the main thread (no SIGALRM) numeric agreement at 6 random points stands in for
the proof, and nothing starts after the deadline.
"""

from __future__ import annotations

import random
import time

from ttc_jax.grading import latex_parse
from ttc_jax.grading.limits import can_alarm
from ttc_jax.grading.numbers import decimal_digits, rounds_to

_sympy_module: list = []  # [module or None] once tried
POINTS = 6


def load_sympy():
  """sympy, or None when it is not installed; imported outside any time
  limit (an import interrupted by the alarm would leave it half-initialised)."""
  if not _sympy_module:
    try:
      import sympy
    except ImportError:
      sympy = None
    _sympy_module.append(sympy)
  return _sympy_module[0]


def _points(sp, symbols, n: int = POINTS):
  rng = random.Random(0)
  for _ in range(n):
    yield {x: sp.Rational(rng.randint(101, 997), rng.randint(101, 197)) for x in symbols}


def _value(sp, e, subs) -> complex | None:
  v = complex(sp.N(e.subs(subs), 30))
  return None if v != v or abs(v) == float("inf") else v


def numeric_agree(sp, ea, eb) -> bool | None:
  """False when ``ea``/``eb`` differ at a random point of their symbols, True
  when they agree at all defined points, None when none was defined."""
  agreed = 0
  for subs in _points(sp, sorted(ea.free_symbols | eb.free_symbols, key=str)):
    va, vb = _value(sp, ea, subs), _value(sp, eb, subs)
    if va is None or vb is None:
      continue
    if abs(va - vb) > 1e-9 * max(1.0, abs(va), abs(vb)):
      return False
    agreed += 1
  return True if agreed else None


def parse(sp, s: str):
  """The expression of ``s`` or None (unparsable, infinite)."""
  try:
    e = latex_parse.parse_latex(s)
  except latex_parse.ParseError:
    return None
  return None if e.has(sp.oo) else e


def symbolic_equal(a: str, b: str, deadline: float) -> bool:
  """Whether ``a`` and ``b`` parse to provably equal expressions (see the module
  docstring); also a decimal of 6+ significant digits against the value it rounds."""
  if time.monotonic() > deadline:  # bounds long lists off the main thread too
    return False
  sp = load_sympy()
  if sp is None:
    return False
  ea, eb = parse(sp, a), parse(sp, b)
  if ea is None or eb is None:
    return False
  if ea == eb:
    return True
  for dec, other, e in ((a, b, eb), (b, a, ea)):  # 0.0833333 vs \frac{1}{12}
    if not e.free_symbols and decimal_digits(other) == 0 and rounds_to(dec, _real(sp, e)):
      return True
  agree = numeric_agree(sp, ea, eb)
  if agree is False:
    return False
  if not can_alarm():  # no timer for simplify off the main thread
    return bool(agree) and time.monotonic() < deadline
  return bool(sp.simplify(ea - eb) == 0)


def _real(sp, e) -> float:
  v = complex(sp.N(e, 30))
  return v.real if abs(v.imag) < 1e-12 else float("nan")


def proportional(a: tuple[str, str], b: tuple[str, str], deadline: float) -> bool:
  """Whether equations ``a[0] = a[1]`` and ``b[0] = b[1]`` are the same up to moving
  terms across and a nonzero constant factor: (a0 - a1) == c (b0 - b1), c != 0."""
  if time.monotonic() > deadline:
    return False
  sp = load_sympy()
  if sp is None:
    return False
  sides = [parse(sp, s) for s in (*a, *b)]
  if any(e is None for e in sides):
    return False
  da, db = sides[0] - sides[1], sides[2] - sides[3]
  symbols = sorted(da.free_symbols | db.free_symbols, key=str)
  if not da.free_symbols or not db.free_symbols:
    return False
  ratio = None
  for subs in _points(sp, symbols):
    va, vb = _value(sp, da, subs), _value(sp, db, subs)
    if va is None or vb is None or abs(vb) < 1e-12:
      continue
    r = va / vb
    if abs(r) < 1e-12:
      return False
    if ratio is None:
      ratio, exact = r, sp.simplify(da.subs(subs) / db.subs(subs))
    elif abs(r - ratio) > 1e-9 * max(1.0, abs(r)):
      return False
  if ratio is None:
    return False
  if not can_alarm():
    return time.monotonic() < deadline
  return bool(sp.simplify(da - exact * db) == 0)
