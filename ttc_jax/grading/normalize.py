"""MATH answers as canonical strings (Hendrycks-style normalisation, extended).

``canonical_math_answer`` rewrites an answer without changing what it says;
``normalize_math_answer`` also drops a leading ``x =`` / ``f(x)=`` label (the
historical form, used for the quick string comparison). Pure string processing
with regular expressions that run in linear time, no sympy.
"""

from __future__ import annotations

import re

from ttc_jax.grading.extract import MAX_ANSWER_CHARS, match_brace

_UNITS = (
    "units",
    "unit",
    "sq",
    "square",
    "cubic",
    "cm",
    "centimeters",
    "centimeter",
    "mm",
    "meters",
    "meter",
    "km",
    "kilometers",
    "inches",
    "inch",
    "feet",
    "foot",
    "ft",
    "yards",
    "yard",
    "miles",
    "mile",
    "mph",
    "degrees",
    "degree",
    "dollars",
    "dollar",
    "cents",
    "cent",
    "hours",
    "hour",
    "minutes",
    "minute",
    "seconds",
    "second",
    "days",
    "day",
    "weeks",
    "years",
    "pounds",
    "ounces",
    "grams",
    "kg",
    "liters",
    "people",
    "students",
    "ways",
    "points",
    "percent",
    "pct",
    "per cent",
    "USD",
    "gallons",
    "months",
    "lbs",
    "cups",
    "digits",
    "digit",
    "apples",
    "marbles",
    "books",
    "sq units",
    "square units",
)
_UNIT_RE = re.compile(
    r"(?<=[\d}\s)])\s*(?:%s)(?:\^\{?[23]\}?)?\s*$" % "|".join(sorted(_UNITS, key=len, reverse=True))
)
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textrm|textnormal|textit|textsf|texttt|emph|mbox|"
    r"hbox|mathrm|mathbf|mathit|mathsf|operatorname)\s*\{"
)
_EQ_LHS_RE = re.compile(r"^\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?(?:\([A-Za-z]\))?\s*=\s*")
_REPLACE = (
    ("\\!", ""),
    ("{,}", ","),
    ("\\,", " "),
    ("\\;", " "),
    ("\\:", " "),
    ("~", " "),
    ("\\left", ""),
    ("\\right", ""),
    ("\\displaystyle", ""),
    ("\\bigl", ""),
    ("\\bigr", ""),
    ("\\Bigl", ""),
    ("\\Bigr", ""),
    ("tfrac", "frac"),
    ("dfrac", "frac"),
    ("cfrac", "frac"),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("\u00b0", ""),
    ("\\%", ""),
    ("%", ""),
    ("\\$", ""),
    ("$", ""),
    ("\u2212", "-"),
    ("\u2264", "<="),
    ("\u2265", ">="),
    ("\u2260", "!="),
    ("\\mathbb{R}", "(-\\infty,\\infty)"),
    ("\\varnothing", "\\emptyset"),
    ("+\\infty", "\\infty"),
    ("\\mp", "\\pm"),
)
_REL_CMDS = (
    (re.compile(r"\\(?:geqslant|geq|ge)(?![A-Za-z])"), ">="),
    (re.compile(r"\\(?:leqslant|leq|le)(?![A-Za-z])"), "<="),
    (re.compile(r"\\(?:neq|ne)(?![A-Za-z])"), "!="),
    (re.compile(r"\\gt(?![A-Za-z])"), ">"),
    (re.compile(r"\\lt(?![A-Za-z])"), "<"),
    (re.compile(r"=>"), ">="),
    (re.compile(r"=<"), "<="),
)
_WORDS_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def _unwrap_text(s: str) -> str:
  """``\\text{abc}`` -> ``abc`` (nested braces matched; unbalanced left as is)."""
  out, pos = [], 0
  for _ in range(len(s)):
    m = _TEXT_CMD_RE.search(s, pos)
    if m is None:
      break
    end = match_brace(s, m.end() - 1)
    if end < 0:
      break
    out.append(s[pos : m.start()] + s[m.end() : end - 1])
    pos = end
  return "".join(out) + s[pos:]


def _brace_single_args(s: str) -> str:
  """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1b`` -> ``\\frac{1}{b}``,
  ``\\sqrt2`` -> ``\\sqrt{2}``."""
  s = re.sub(r"\\sqrt\s*([0-9A-Za-z])", r"\\sqrt{\1}", s)
  s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*(?=\{)", r"\\frac{\1}", s)
  return re.sub(r"\\frac(\{[^{}]*\})\s*([0-9A-Za-z])", r"\\frac\1{\2}", s)


def _connectives(s: str) -> str:
  """ " and " between math items -> "," (``6 and 8`` is a list); " or " -> ``\\lor``
  (read as a union by the relation code); left alone in answers made of words."""
  if " and " not in s and " or " not in s:
    return s
  rest = re.sub(r"\s(?:and|or)\s", " ", s)
  if _WORDS_RE.search(re.sub(r"\\[A-Za-z]+", " ", rest)):
    return s
  s = re.sub(r",?\s+and\s+", ", ", s)
  return re.sub(r",?\s+or\s+", " \\\\lor ", s)


def _braced_set(s: str) -> str:
  """``{1,3}`` (an unescaped set) -> ``\\{1,3\\}``; other strings unchanged."""
  if not (s.startswith("{") and match_brace(s, 0) == len(s)):
    return s
  depth = 0
  for c in s[1:-1]:
    depth += c in "([{"
    depth -= c in ")]}"
    if c == "," and depth == 0:
      return "\\{" + s[1:-1] + "\\}"
  return s


def canonical_math_answer(s: str | None) -> str | None:
  """Canonical string form of a MATH answer, labels and relations kept.

  Removes: ``\\text{}``-like wrappers (keeping their content), unit words after a
  number (``miles``, ``percent``, ``pct``, ...), ``\\left``/``\\right``, ``\\!``,
  spacing commands, ``\\displaystyle``, spaces, degrees, ``\\%``, ``%``, ``$``,
  a trailing ``.``. Rewrites ``dfrac``/``tfrac``/``cfrac`` to ``frac``, ``\\frac12``
  to ``\\frac{1}{2}``, ``\\sqrt2`` to ``\\sqrt{2}``, ``a/b`` of integers to
  ``\\frac{a}{b}``, ``1,000`` and ``1 000`` to ``1000`` (a whole answer only: ``32, 349``
  stays a pair), ``.5`` to ``0.5``, ``5.0`` to ``5``, ``\\geq``/``\\ge``/``=>`` to
  ``>=``, ``\\leq`` to ``<=``, ``\\neq`` to ``!=``, ``6 and 8`` to ``6,8``, ``{1,3}``
  to ``\\{1,3\\}``, ``\\mathbb{R}`` to ``(-\\infty,\\infty)``, ``+\\infty`` to ``\\infty``.
  """
  if not isinstance(s, str):
    return None
  s = s.strip().replace("\n", " ")
  if len(s) > MAX_ANSWER_CHARS:
    return s
  s = _unwrap_text(s)
  for _ in range(3):
    s = _UNIT_RE.sub("", s).strip()
  for old, new in _REPLACE:
    s = s.replace(old, new)
  s = re.sub(r"(?<!\\)\\ ", " ", s)  # "\\ " is a space, "\\\\ " a row end
  for pattern, new in _REL_CMDS:
    s = pattern.sub(new, s)
  s = s.strip().rstrip(".").strip()
  for _ in range(2):
    s = _UNIT_RE.sub("", s).strip()
  if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) or re.fullmatch(
      r"-?\d{1,3}( \d{3})+(\.\d+)?", s
  ):
    s = s.replace(",", "").replace(" ", "")
  s = _connectives(s)
  s = _brace_single_args(s)
  s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x00", s)  # keep "\\pi r" apart
  s = re.sub(r"\s+", "", s).replace("\x00", " ")
  s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
  s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
  m = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
  if m:
    s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
  return _braced_set(s)


def normalize_math_answer(s: str | None) -> str | None:
  """``canonical_math_answer`` without a leading ``x =``/``k=``/``f(x)=`` label (when
  the answer has exactly one ``=``): the form compared as strings first."""
  s = canonical_math_answer(s)
  if s is None or len(s) > MAX_ANSWER_CHARS:
    return s
  if s.count("=") == 1:
    s = _EQ_LHS_RE.sub("", s, count=1)
  return s
