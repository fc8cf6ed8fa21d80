"""The structure of a canonical MATH answer: lists, tuples, matrices, relations, intervals.

Works on ``canonical_math_answer`` strings (no spaces, ``>=``/``<=``/``!=``
operators, ``\\lor`` for a spoken "or"). "Top level" means outside ``()[]{}``
(``\\{ \\}`` included). All functions are linear or quadratic in the answer's
length (at most ``MAX_ANSWER_CHARS``), never raise on strings, and return None
for what they do not recognise.
"""

from __future__ import annotations

import re

from ttc_jax.grading import latex_parse

_REL_RE = re.compile(r"<=|>=|!=|\\in(?![A-Za-z])|=|<|>")
_UNION_RE = re.compile(r"\\cup(?![A-Za-z])|\\lor(?![A-Za-z])")
_GREEK = "|".join(latex_parse.GREEK)
_ATOM = (
    r"(?:m?\\angle)?(?:\\(?:%s)|[A-Za-z]{1,3})(?:_\{?[A-Za-z0-9]+\}?)?'*"
    r"(?:\([A-Za-z0-9,]*\))?" % _GREEK
)
_LABEL_RE = re.compile(r"{a}|\({a}(?:,{a})+\)|{a}(?::{a})+".format(a=_ATOM))
_CONST_CMDS_RE = re.compile(r"\\(?:pi|infty|sqrt|frac|cdot|times|div)(?![A-Za-z])")
_MATRIX_RE = re.compile(r"\\begin\{([pbvBV]?matrix)\}(.*)\\end\{\1\}")
_ARRAY_RE = re.compile(r"[\[(]?\\begin\{(array|matrix)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}[\])]?")
_BRACKETS = (("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")"))
INFINITY = "\\infty"


def split_top(s: str, sep: re.Pattern) -> tuple[list[str], list[str]]:
  """``s`` cut at top-level matches of ``sep``: (pieces, separators)."""
  pieces, seps, depth, start, i, n = [], [], 0, 0, 0, len(s)
  while i < n:
    c = s[i]
    if c in "([{":
      depth += 1
    elif c in ")]}":
      depth -= 1
    elif depth == 0:
      m = sep.match(s, i)
      if m is not None and m.end() > i:
        pieces.append(s[start:i])
        seps.append(m.group(0))
        i = start = m.end()
        continue
    i += 1
  pieces.append(s[start:])
  return pieces, seps


_COMMA_RE = re.compile(",")
_PM_RE = re.compile(r"\\pm(?![A-Za-z])")


def top_commas(s: str) -> list[str]:
  """``s`` split at top-level commas."""
  return split_top(s, _COMMA_RE)[0]


def encloses(s: str, left: str, right: str) -> bool:
  """Whether ``s`` is ``left ... right`` with that first bracket closing at the end."""
  if not (s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right)):
    return False
  depth = 0
  for i, c in enumerate(s):
    depth += c in "([{"
    depth -= c in ")]}"
    if depth == 0 and len(left) <= i < len(s) - 1:
      return False
  return depth == 0


def matrix(s: str) -> tuple[str, list[str]] | None:
  """``("matrix<r>x<c>x...", entries)`` for a pmatrix/bmatrix/array (bracketed or not)."""
  m = _MATRIX_RE.fullmatch(s) or _ARRAY_RE.fullmatch(s)
  if m is None:
    return None
  rows = [r.split("&") for r in m.group(2).split("\\\\") if r != ""]
  return "matrix" + "x".join(str(len(r)) for r in rows), [c for r in rows for c in r]


def sequence(s: str) -> tuple[str, list[str]] | None:
  """``(brackets, elements)`` of a tuple/interval ``(a,b]``, a set ``\\{a,b\\}`` or a bare
  list ``a,b`` (brackets ""; also ``a\\pm b`` and a spoken "or" of values), or a matrix's
  shape and entries; else None."""
  mat = matrix(s)
  if mat is not None:
    return mat
  for left, right in _BRACKETS:
    if encloses(s, left, right):
      parts = top_commas(s[len(left) : -len(right)])
      if len(parts) >= 2:
        return left + right, parts
  parts = top_commas(s)
  if len(parts) < 2 and len(split_top(s, _PM_RE)[1]) == 1:  # a \pm b: the list a+b, a-b
    return "", [s.replace("\\pm", "+", 1), s.replace("\\pm", "-", 1)]
  if len(parts) < 2:  # "x=1 or x=2" (a spoken "or" of values) is a list too
    parts, seps = split_top(s, _UNION_RE)
    if "\\lor" not in seps or "\\cup" in seps:
      return None
  return "", [p.strip() for p in parts]


def relation(s: str) -> tuple[list[str], list[str]] | None:
  """``(sides, operators)`` of a top-level relation chain (``a<=b<c``), with ``>``/``>=``
  chains turned around (``x>=5`` -> ``5<=x``); None without one or with an empty side."""
  if len(top_commas(s)) >= 2 or split_top(s, _UNION_RE)[1]:  # lists and unions are not
    return None
  sides, ops = split_top(s, _REL_RE)
  if not ops or any(x == "" for x in sides):
    return None
  if all(op in (">", ">=") for op in ops):
    sides, ops = sides[::-1], [op.replace(">", "<") for op in reversed(ops)]
  return sides, ops


def is_label(s: str) -> bool:
  """A name rather than a value: ``x``, ``AB``, ``f(x)``, ``V_1:V_2``, ``(p,q)``, ``\\theta``."""
  return _LABEL_RE.fullmatch(s) is not None and not is_constant(s)


def is_constant(s: str) -> bool:
  """No letters outside ``\\pi``, ``\\infty``, ``\\sqrt``, ``\\frac``, ``\\cdot``, ...;
  no relation operator."""
  return (
      s != ""
      and re.search(r"[A-Za-z]", _CONST_CMDS_RE.sub("", s)) is None
      and _REL_RE.search(s) is None
  )


def views(s: str) -> list[str]:
  """The values an answer with labels names: ``x=11`` -> ``11``, ``(p,q)=(3,2)`` ->
  ``(3,2)``, a chain ``x=5+5+1=7=11`` -> its last side, ``x=-5,p=3`` -> ``(-5,3)``,
  ``a+b+c=7`` -> ``7`` (a combination of names without digits = a constant), ``x\\in S`` ->
  ``S``."""
  out = []
  rel = relation(s)
  if rel is not None and rel[1] == ["\\in"] and is_label(rel[0][0]):  # x \in \{1,2\}
    out.append(rel[0][1])
  if rel is not None and all(op == "=" for op in rel[1]):
    sides = rel[0]
    if len(sides) >= 3 or is_label(sides[0]) or is_constant(sides[0]):
      out.append(sides[-1])
    elif is_constant(sides[-1]) and re.fullmatch(
        r"[A-Za-z_{}()+\-*^'\\]*[A-Za-z][^0-9]*", sides[0]
    ):
      out.append(sides[-1])  # a+b+c=\frac{13}{8}: a named combination (no digits)
    elif is_label(sides[-1]):
      out.append(sides[0])
  parts = top_commas(s)
  if len(parts) >= 2:
    rels = [relation(p) for p in parts]
    if all(r is not None and r[1] == ["="] and is_label(r[0][0]) for r in rels):
      out.append("(" + ",".join(r[0][1] for r in rels) + ")")
  return [v for v in out if v and v != s]


def _interval(p: str) -> tuple[str, bool, str, bool] | None:
  for left, right in _BRACKETS[1:]:
    if encloses(p, left, right):
      parts = top_commas(p[1:-1])
      if len(parts) == 2:
        return parts[0], left == "[", parts[1], right == "]"
  return None


def intervals(s: str) -> list[tuple[str, bool, str, bool]] | None:
  """The union of intervals ``s`` describes, as ``(lo, lo_closed, hi, hi_closed)``:
  interval notation joined by ``\\cup`` (or a spoken "or"), or inequalities in one
  variable (``-2<=x<=7``, ``x>5``, ``0<f(x)<1``), or ``x\\in`` one of those; else None."""
  pieces, _ = split_top(s, _UNION_RE)
  out = []
  for p in pieces:
    got = _piece_intervals(p.strip())
    if got is None:
      return None
    out.extend(got)
  return out or None


def _piece_intervals(p: str) -> list[tuple[str, bool, str, bool]] | None:
  rel = relation(p)
  if rel is None:
    iv = _interval(p)
    return [iv] if iv is not None else None
  sides, ops = rel
  if ops == ["\\in"]:
    return intervals(sides[1]) if is_label(sides[0]) else None
  if not all(op in ("<", "<=") for op in ops):
    return None
  closed = [op == "<=" for op in ops]
  if len(sides) == 2 and is_label(sides[0]) and is_constant(sides[1]):
    return [("-" + INFINITY, False, sides[1], closed[0])]
  if len(sides) == 2 and is_constant(sides[0]) and is_label(sides[1]):
    return [(sides[0], closed[0], INFINITY, False)]
  if len(sides) == 3 and is_constant(sides[0]) and is_label(sides[1]) and is_constant(sides[2]):
    return [(sides[0], closed[0], sides[2], closed[1])]
  return None


def has_relation_or_union(s: str) -> bool:
  """Whether ``s`` has a top-level relation operator, ``\\cup`` or a spoken "or"."""
  return bool(split_top(s, _REL_RE)[1] or split_top(s, _UNION_RE)[1])
