"""MATH answers as strings: last ``\\boxed{}`` extraction and normalisation.

Part of ``ttc_jax.grading`` (which re-exports ``last_boxed``,
``extract_math_answer`` and ``normalize_math_answer``); pure string
processing with regular expressions that run in linear time, no sympy.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 1000     # longer answers are not normalised (compared as strings)

# ----------------------------------------------------------------------------- MATH extraction
_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_BOX_SPACE_RE = re.compile(r" +([^$\s]+)")
_SPACES_RE = re.compile(r" *")


def match_brace(s: str, start: int) -> int:
    """Index just past the ``}`` closing the ``{`` at ``start``, or -1.
    Escaped braces ``\\{``/``\\}`` do not count."""
    depth, i, n = 0, start, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def last_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}``/``\\fbox{...}``/``\\boxed N``.

    Nested braces are matched; a box nested inside another box is part of the
    outer one. An unbalanced last box (a truncated generation) gives None.
    """
    if not isinstance(text, str):
        return None
    found, pos = None, 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            return found
        i = m.end()
        j = _SPACES_RE.match(text, i).end()
        if j < len(text) and text[j] == "{":
            end = match_brace(text, j)
            if end < 0:
                return None
            found, pos = text[j + 1:end - 1], end
        elif j > i:
            tail = _BOX_SPACE_RE.match(text, i)
            found, pos = (tail.group(1) if tail else None), i + 1
        else:
            pos = i


_MATH_CUE_RE = re.compile(r"(?:final answer is|answer is|answer\s*:)\s*", re.IGNORECASE)


def extract_math_answer(text: str) -> str | None:
    """``last_boxed(text)``, else the rest of the line after the last answer cue
    (``$``, trailing ``.`` and "I hope it is correct" removed), else None."""
    if not isinstance(text, str):
        return None
    boxed = last_boxed(text)
    if boxed is not None or _BOX_RE.search(text):
        return boxed
    cues = list(_MATH_CUE_RE.finditer(text))
    if not cues:
        return None
    line = text[cues[-1].end():].split("\n", 1)[0]
    line = line.split("I hope it is correct")[0].strip().rstrip(".").strip().strip("$").strip()
    return line or None


# ----------------------------------------------------------------------------- MATH normalisation
_UNITS = ("units", "unit", "sq", "square", "cubic", "cm", "centimeters", "centimeter", "mm",
          "meters", "meter", "km", "kilometers", "inches", "inch", "feet", "foot", "ft",
          "yards", "yard", "miles", "mile", "mph", "degrees", "degree", "dollars", "dollar",
          "cents", "cent", "hours", "hour", "minutes", "minute", "seconds", "second", "days",
          "day", "weeks", "years", "pounds", "ounces", "grams", "kg", "liters", "people",
          "students", "ways", "points")
_UNIT_RE = re.compile(r"(?<=[\d}\s)])\s*(?:%s)(?:\^\{?[23]\}?)?\s*$" % "|".join(_UNITS))
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm|mathbf|operatorname)\s*\{")
_EQ_LHS_RE = re.compile(r"^\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?(?:\([A-Za-z]\))?\s*=\s*")


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
        out.append(s[pos:m.start()] + s[m.end():end - 1])
        pos = end
    return "".join(out) + s[pos:]


def _brace_single_args(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1b`` -> ``\\frac{1}{b}``,
    ``\\sqrt2`` -> ``\\sqrt{2}``."""
    s = re.sub(r"\\sqrt\s*([0-9A-Za-z])", r"\\sqrt{\1}", s)
    s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*(?=\{)", r"\\frac{\1}", s)
    return re.sub(r"\\frac(\{[^{}]*\})\s*([0-9A-Za-z])", r"\\frac\1{\2}", s)


def normalize_math_answer(s: str | None) -> str | None:
    """Canonical string form of a MATH answer (Hendrycks-style normalisation).

    Removes: ``\\text{}``/``\\mbox{}`` wrappers (keeping their content), unit
    words after a number, ``\\left``/``\\right``, ``\\!``, ``\\,``/``\\;``/``\\:``,
    ``\\displaystyle``, spaces, degrees (``^\\circ``, ``^{\\circ}``, ``°``), ``\\%``,
    ``%``, ``$``, a leading ``x =``/``k=``/``f(x)=``, a trailing ``.``.
    Rewrites ``dfrac``/``tfrac`` to ``frac``, ``\\frac12`` to ``\\frac{1}{2}``,
    ``\\sqrt2`` to ``\\sqrt{2}``, ``a/b`` of integers to ``\\frac{a}{b}``,
    ``1,000`` to ``1000``, ``.5`` to ``0.5``, ``5.0`` to ``5``.
    """
    if not isinstance(s, str):
        return None
    s = s.strip().replace("\n", "")
    if len(s) > MAX_ANSWER_CHARS:
        return s
    s = _unwrap_text(s)
    for _ in range(3):
        s = _UNIT_RE.sub("", s).strip()
    for old, new in (("\\!", ""), ("\\,", " "), ("\\;", " "), ("\\:", " "), ("~", " "),
                     ("\\left", ""), ("\\right", ""), ("\\displaystyle", ""),
                     ("tfrac", "frac"), ("dfrac", "frac"), ("^{\\circ}", ""), ("^\\circ", ""),
                     ("\u00b0", ""), ("\\%", ""), ("%", ""), ("\\$", ""), ("$", "")):
        s = s.replace(old, new)
    s = s.strip().rstrip(".").strip()
    if s.count("=") == 1:
        s = _EQ_LHS_RE.sub("", s, count=1)
    s = _brace_single_args(s)
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x00", s)  # keep "\\pi r" apart
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    m = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    if m:
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    return s
