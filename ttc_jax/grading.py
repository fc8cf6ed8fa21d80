"""Answer extraction and equivalence for GSM8K and MATH (no eval of model text).

Per task, ``extract_answer(text) -> str | None`` and ``equivalent(a, b) -> bool``
(DESIGN.md section 4), collected in ``GRADERS``::

    GRADERS["math"].extract_answer(model_text)     # -> "\\frac{1}{2}" or None
    GRADERS["math"].equivalent("0.5", "\\dfrac12")  # -> True

GSM8K (``extract_gsm8k_answer``, ``gsm8k_equivalent``):
  references end with ``#### N``; for model output the number after the last
  "The answer is" / "Answer:" is taken, else the last number in the text.
  Extracted answers are cleaned numbers: ``$`` and thousands commas removed,
  a trailing ``.`` dropped (``"$1,000."`` -> ``"1000"``). Equivalence is exact
  rational equality after that cleaning, so ``5.0 == 5`` and ``0.50 == 0.5``;
  a trailing ``%`` is dropped (``50% == 50``: GSM8K references are bare
  numbers). Non-numeric answers are equal only as identical stripped strings.

MATH (``last_boxed``, ``normalize_math_answer``, ``math_equivalent``):
  the answer is the content of the last top-level ``\\boxed{...}``,
  ``\\fbox{...}`` or ``\\boxed N``; without one, the text after the last
  "final answer is" / "answer is" / "Answer:" on its line. Equivalence:
  equal normalised strings, else equal exact numbers (``0.5`` vs
  ``\\frac{1}{2}``), else, for tuples/intervals/``pmatrix`` matrices, the same
  shape and brackets and elementwise equivalence in order (sets ``\\{a,b\\}``
  and bare lists ``a, b``: in any order), else symbolic equality with
  sympy of expressions built by ``ttc_jax.latex_parse`` (never ``sympify``).
  The symbolic step first rejects on random-point numeric disagreement, then
  needs ``sympy.simplify(a - b) == 0`` within ``timeout_s`` (SIGALRM timer on
  the main thread; the whole comparison is under it). Off the main thread
  (no SIGALRM), it accepts numeric agreement at 6 random points instead of
  simplify, and once ``timeout_s`` has passed every further symbolic
  comparison counts as unequal (string/number comparisons still run), so
  the call stays bounded. Without sympy the symbolic step is skipped (only
  strings and numbers are compared). Failures, unparsable input and main-
  thread timeouts give False; nothing raises. GSM8K grading needs no sympy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
import re
import signal
import threading
import time
from fractions import Fraction
from typing import Callable, Sequence

from ttc_jax import latex_parse
from ttc_jax.math_answer import (MAX_ANSWER_CHARS, extract_math_answer, last_boxed,  # noqa: F401
                                 normalize_math_answer)

__all__ = ["GRADERS", "Grader", "extract_gsm8k_answer", "extract_math_answer",
           "get_grader", "group_equivalent", "gsm8k_equivalent", "last_boxed",
           "math_equivalent", "normalize_math_answer", "parse_number"]
DEFAULT_TIMEOUT_S = 2.0

# ----------------------------------------------------------------------------- numbers
_NUM_RE = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\.\d+")
_PLAIN_NUM_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_FRAC_RE = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_SLASH_RE = re.compile(r"(-?\d+)/(-?\d+)")


def _clean_number(s: str) -> str:
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


# ----------------------------------------------------------------------------- GSM8K
_GSM_CUE_RE = re.compile(r"(?:the (?:final )?answer is|answer\s*:)", re.IGNORECASE)


def extract_gsm8k_answer(text: str) -> str | None:
    """The cleaned final number of a GSM8K reference or model output, else None.

    Order: the text after the last ``####`` (its first number, or the stripped
    first line when it has none); the first number after the last "The answer
    is"/"Answer:"; the last number in the text.
    """
    if not isinstance(text, str):
        return None
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().split("\n", 1)[0]
        m = _NUM_RE.search(tail)
        return _clean_number(m.group(0)) if m else (tail.strip() or None)
    cues = list(_GSM_CUE_RE.finditer(text))
    if cues:
        m = _NUM_RE.search(text, cues[-1].end())
        if m:
            return _clean_number(m.group(0))
    last = None
    for last in _NUM_RE.finditer(text):
        pass
    return _clean_number(last.group(0)) if last else None


def gsm8k_equivalent(a: str | None, b: str | None) -> bool:
    """Exact numeric equality after cleaning (``$``, commas, ``%``, trailing ``.``)."""
    try:
        if not isinstance(a, str) or not isinstance(b, str):
            return False
        if len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
            return False
        ca, cb = (_clean_number(x).rstrip("%").strip() for x in (a, b))
        va, vb = parse_number(ca), parse_number(cb)
        if va is not None and vb is not None:
            return va == vb
        return va is None and vb is None and a.strip() == b.strip() != ""
    except Exception:  # grading never raises on model text
        return False


# ----------------------------------------------------------------------------- MATH equivalence
class _Timeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that sympy's own
    ``except Exception`` clauses cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raises ``_Timeout`` in the block after ``seconds`` (SIGALRM, main thread
    only), then again every 50 ms: an exception raised while Python runs a gc
    or ``__del__`` callback is swallowed, so one alarm is not enough (gc is
    also paused in the block, so its callbacks do not run there). Yields a
    dict whose "fired" is True once the alarm went off (check it after the
    block). Restores the outer handler and re-arms an outer timer afterwards."""
    state = {"fired": False}

    def on_alarm(signum, frame):
        state["fired"] = True
        raise _Timeout()

    gc_was_enabled = gc.isenabled()
    gc.disable()  # no gc callbacks (e.g. jax's) for the alarm to land in
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    outer_left, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    start = time.monotonic()
    try:
        yield state
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, old_handler)
            if gc_was_enabled:
                gc.enable()
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL,
                             max(outer_left - (time.monotonic() - start), 1e-3), outer_interval)


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _split_top_level(s: str) -> list[str]:
    """Splits on commas outside any brackets/braces."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _as_sequence(s: str) -> tuple[str, list[str]] | None:
    """``(brackets, elements)`` for a tuple/interval ``(a,b]`` or set ``\\{a,b\\}``, or
    ``("matrix", rows joined)`` for a ``pmatrix``/``bmatrix``; else None."""
    m = re.fullmatch(r"\\begin\{([pbv]?matrix)\}(.*)\\end\{\1\}", s)
    if m:
        rows = [r.split("&") for r in m.group(2).split("\\\\") if r != ""]
        shape = "matrix" + "x".join(str(len(r)) for r in rows)
        return shape, [c for r in rows for c in r]
    for left, right in (("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            parts = _split_top_level(s[len(left):-len(right)])
            if len(parts) >= 2:
                return left + right, parts
    parts = _split_top_level(s)
    return ("", parts) if len(parts) >= 2 else None


_UNORDERED = ("\\{\\}", "")   # set braces, bare comma lists (MATH's "enter all solutions")


def _numeric_agree(sp, ea, eb, points: int = 6) -> bool | None:
    """False when ``ea``/``eb`` differ at a random point of their symbols, True
    when they agree at all defined points, None when none was defined."""
    symbols = sorted(ea.free_symbols | eb.free_symbols, key=str)
    rng = random.Random(0)
    agreed = 0
    for _ in range(points):
        subs = {x: sp.Rational(rng.randint(101, 997), rng.randint(101, 197)) for x in symbols}
        va = complex(sp.N(ea.subs(subs), 30))
        vb = complex(sp.N(eb.subs(subs), 30))
        if any(v != v or abs(v) == float("inf") for v in (va, vb)):
            continue
        if abs(va - vb) > 1e-9 * max(1.0, abs(va), abs(vb)):
            return False
        agreed += 1
    return True if agreed else None


_sympy_module: list = []   # [module or None] once tried


def _load_sympy():
    """sympy, or None when it is not installed; imported outside any time
    limit (an import interrupted by the alarm would leave it half-initialised)."""
    if not _sympy_module:
        try:
            import sympy
        except ImportError:
            sympy = None
        _sympy_module.append(sympy)
    return _sympy_module[0]


def _symbolic_equal(a: str, b: str, deadline: float) -> bool:
    if time.monotonic() > deadline:  # bounds long lists off the main thread too
        return False
    sp = _load_sympy()
    if sp is None:
        return False
    try:
        ea, eb = latex_parse.parse_latex(a), latex_parse.parse_latex(b)
    except latex_parse.ParseError:
        return False
    if ea == eb:
        return True
    if ea.has(sp.oo) or eb.has(sp.oo):
        return False
    agree = _numeric_agree(sp, ea, eb)
    if agree is False:
        return False
    if not _can_alarm():  # no timer for simplify off the main thread
        return bool(agree) and time.monotonic() < deadline
    return bool(sp.simplify(ea - eb) == 0)


def _scalar_equal(a: str, b: str, deadline: float) -> bool:
    if a == b:
        return True
    va, vb = parse_number(a), parse_number(b)
    if va is not None and vb is not None:
        return va == vb
    return _symbolic_equal(a, b, deadline)


def _equal(a: str, b: str, deadline: float) -> bool:
    if a == b:
        return True
    sa, sb = _as_sequence(a), _as_sequence(b)
    if sa is not None or sb is not None:
        if sa is None or sb is None or sa[0] != sb[0] or len(sa[1]) != len(sb[1]):
            return False
        if sa[0] in _UNORDERED:  # sets and bare lists: a one-to-one matching
            unused = list(sb[1])
            for x in sa[1]:
                k = next((k for k, y in enumerate(unused) if _scalar_equal(x, y, deadline)), None)
                if k is None:
                    return False
                unused.pop(k)
            return True
        return all(_scalar_equal(x, y, deadline) for x, y in zip(sa[1], sb[1]))
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
        _load_sympy()
        if not _can_alarm():
            return _equal(na, nb, deadline)
        with _time_limit(max(float(timeout_s), 1e-3)) as alarm:
            equal = _equal(na, nb, deadline)
        return equal and not alarm["fired"]
    except _Timeout:
        return False
    except Exception:  # grading never raises on model text
        return False


# ----------------------------------------------------------------------------- task registry
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
