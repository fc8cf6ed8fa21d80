"""Exact numbers out of answer strings: integers, decimals, ``a/b``, ``\\frac{a}{b}``.

Also the two readings of a number that a model may write in another convention:
a decimal comma (``2,74`` for 2.74) and a rounded decimal (``0.0833333`` for 1/12,
accepted at ``MIN_DECIMAL_DIGITS`` or more significant digits).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

MIN_DECIMAL_DIGITS = 6  # a decimal this precise may stand for an exact value it rounds

NUM_RE = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\.\d+")
_PLAIN_NUM_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_FRAC_RE = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_SLASH_RE = re.compile(r"(-?\d+)/(-?\d+)")
_DECIMAL_COMMA_RE = re.compile(r"-?\d+,(?:\d{2}|\d{4,})")  # "1,5" stays the list 1, 5
_DECIMAL_RE = re.compile(r"-?(\d*)\.(\d+)")


def clean_number(s: str) -> str:
  """``"$1,000."`` -> ``"1000"``; ``"−5"`` -> ``"-5"``; other text stripped."""
  s = s.strip().replace("\u2212", "-").replace("$", "").rstrip(".")
  if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
    s = s.replace(",", "")
  return s


def parse_number(s: str) -> Fraction | None:
  """Exact value of an integer, decimal, ``a/b`` or ``\\frac{a}{b}`` string; else None."""
  if not isinstance(s, str) or len(s) > 100:
    return None
  s = s.strip()
  try:
    if _PLAIN_NUM_RE.fullmatch(s):
      return Fraction(s[:-1] if s.endswith(".") else s)
    m = _FRAC_RE.fullmatch(s) or _SLASH_RE.fullmatch(s)
    if m:
      sign, num, den = m.groups() if len(m.groups()) == 3 else ("",) + m.groups()
      value = Fraction(int(num), int(den))
      return -value if sign else value
  except (ValueError, ZeroDivisionError):
    return None
  return None


def decimal_comma(s: str) -> Fraction | None:
  """``2,74`` -> 2.74 (a comma followed by two or more than three digits); else None."""
  if not isinstance(s, str) or _DECIMAL_COMMA_RE.fullmatch(s) is None:
    return None
  return Fraction(s.replace(",", "."))


def decimal_digits(s: str) -> int:
  """Significant digits of a decimal literal (``0.0833333`` -> 6); 0 if not one."""
  m = _DECIMAL_RE.fullmatch(s) if isinstance(s, str) else None
  if m is None:
    return 0
  return len((m.group(1) + m.group(2)).lstrip("0"))


def rounds_to(decimal: str, value: float) -> bool:
  """Whether the decimal literal ``decimal`` (at least MIN_DECIMAL_DIGITS significant
  digits) is ``value`` rounded or truncated to its last digit."""
  digits = decimal_digits(decimal)
  if digits < MIN_DECIMAL_DIGITS or not math.isfinite(value):
    return False
  d = float(Fraction(decimal))
  if d == 0.0 or (d > 0) != (value > 0):
    return False
  exponent = math.floor(math.log10(abs(d)))
  return abs(d - value) <= 10.0 ** (exponent - digits + 1) * (1 + 1e-9)
