"""A small, safe parser from LaTeX/infix math answers to sympy expressions.

Used by ``ttc_jax.grading`` for the symbolic step of MATH answer equivalence.
Model output is untrusted: nothing here calls ``eval``/``exec``/``compile``,
``sympy.sympify`` or ``parse_expr`` (both of which ``eval`` strings). Expressions
are built directly from sympy classes by a recursive-descent parser over:

* numbers: ``12``, ``0.5``, ``.5`` (decimals become exact rationals);
* variables: single Latin letters, Greek letters (``\\alpha`` ... ``\\omega``),
  subscripted ones (``x_1``, ``a_{n}``); ``i`` is the imaginary unit, ``\\pi`` is
  pi, ``\\infty`` is infinity;
* ``+ - * /``, ``^`` (infix exponents: ``2^10`` is 1024), ``\\cdot``,
  ``\\times``, ``\\div``, implicit multiplication (``2x``, ``3\\sqrt{2}``,
  ``(x+1)(x-1)``);
* grouping with ``( )``, ``{ }``, ``[ ]``;
* ``\\frac{a}{b}`` (also ``\\dfrac``, ``\\tfrac``, ``\\cfrac``, ``\\frac12``),
  ``\\sqrt{a}``, ``\\sqrt[n]{a}``, ``\\sqrt2``; ``\\left``/``\\right`` are ignored;
* functions ``\\sin \\cos \\tan \\sec \\csc \\cot``, their ``\\arc`` inverses,
  ``\\sinh \\cosh \\tanh``, ``\\ln``, ``\\log`` (natural; ``\\log_b`` base b),
  ``\\exp``; the argument is a bracketed group or the product that follows
  (``\\sin 2x`` is sin(2x)); ``\\tan^2 y`` is tan(y)^2 (a positive integer power).

Anything else (other commands, ``=``, ``<``, text words of 3+ letters, runs of
2+ capital letters, ...) raises ``ParseError``. Limits keep the work bounded:
input length ``MAX_CHARS``, nesting depth ``MAX_DEPTH``, number literals of at
most ``MAX_DIGITS`` digits, numeric exponents of magnitude at most
``MAX_EXPONENT`` and exact powers of at most ``MAX_POW_BITS`` bits.

sympy is imported lazily (the accelerator machines may lack it).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

MAX_CHARS = 400
MAX_DEPTH = 40
MAX_DIGITS = 60
MAX_EXPONENT = 1000
MAX_POW_BITS = 20000

GREEK = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
)
FUNCTIONS = {
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "sec": "sec",
    "csc": "csc",
    "cot": "cot",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "tanh": "tanh",
    "ln": "log",
    "log": "log",
    "exp": "exp",
}
FRACS = ("frac", "dfrac", "tfrac", "cfrac")
_IGNORED_CMDS = ("left", "right", "displaystyle")
_TOKEN_RE = re.compile(r"\s+|(\d+\.?\d*|\.\d+)|([A-Za-z]+)|\\([A-Za-z]+)|(\\[,;:! ])|(.)")


class ParseError(ValueError):
  """The text is not an expression this parser accepts."""


def _sympy():
  import sympy  # lazy: optional dependency of the grading step

  return sympy


def tokenize(text: str) -> list[tuple[str, str]]:
  """``(kind, value)`` tokens; kinds: num, letter, cmd, op. Raises ParseError."""
  if not isinstance(text, str) or len(text) > MAX_CHARS:
    raise ParseError("not a string or longer than MAX_CHARS")
  tokens: list[tuple[str, str]] = []
  for m in _TOKEN_RE.finditer(text):
    num, word, cmd, space, other = m.groups()
    if num is not None:
      if sum(c.isdigit() for c in num) > MAX_DIGITS:
        raise ParseError("number literal too long")
      if tokens and tokens[-1][0] == "num":
        raise ParseError("two numbers in a row")
      tokens.append(("num", num))
    elif word is not None:
      if len(word) >= 3 or (len(word) >= 2 and not word.islower()):
        raise ParseError(f"text word {word!r}")
      tokens.extend(("letter", c) for c in word)
    elif cmd is not None:
      if cmd not in _IGNORED_CMDS:
        tokens.append(("cmd", cmd))
    elif space is not None:
      continue
    elif other is not None:
      if other not in "+-*/^(){}[]_":
        raise ParseError(f"unsupported character {other!r}")
      tokens.append(("op", other))
  return tokens


class _Parser:
  """Recursive descent over the token list; builds sympy expressions."""

  _OPEN = {"(": ")", "{": "}", "[": "]"}

  def __init__(self, tokens: list[tuple[str, str]]):
    self.toks = tokens
    self.pos = 0
    self.depth = 0
    self.sp = _sympy()

  # -- helpers
  def peek(self) -> tuple[str, str] | None:
    return self.toks[self.pos] if self.pos < len(self.toks) else None

  def take(self) -> tuple[str, str]:
    tok = self.peek()
    if tok is None:
      raise ParseError("unexpected end of input")
    self.pos += 1
    return tok

  def expect(self, value: str) -> None:
    tok = self.take()
    if tok != ("op", value):
      raise ParseError(f"expected {value!r}, got {tok[1]!r}")

  def _enter(self) -> None:
    self.depth += 1
    if self.depth > MAX_DEPTH:
      raise ParseError("nesting too deep")

  # -- grammar
  def parse(self) -> Any:
    expr = self.expr()
    if self.peek() is not None:
      raise ParseError(f"unexpected token {self.peek()[1]!r}")
    return expr

  def expr(self) -> Any:
    """expr := term (('+' | '-') term)*"""
    self._enter()
    result = self.term()
    while self.peek() in (("op", "+"), ("op", "-")):
      op = self.take()[1]
      rhs = self.term()
      result = result + rhs if op == "+" else result - rhs
    self.depth -= 1
    return result

  def _starts_primary(self, tok: tuple[str, str] | None) -> bool:
    if tok is None:
      return False
    kind, value = tok
    if kind in ("num", "letter"):
      return True
    if kind == "op":
      return value in self._OPEN
    return (
        value in FRACS or value in FUNCTIONS or value in GREEK or value in ("sqrt", "pi", "infty")
    )

  def term(self) -> Any:
    """term := unary (('*' | '/' | \\cdot | \\times | \\div | implicit) unary)*"""
    result = self.unary()
    while True:
      tok = self.peek()
      if tok in (("op", "*"), ("cmd", "cdot"), ("cmd", "times")):
        self.take()
        result = result * self.unary()
      elif tok in (("op", "/"), ("cmd", "div")):
        self.take()
        result = result / self.unary()
      elif self._starts_primary(tok):
        result = result * self.power()
      else:
        return result

  def unary(self) -> Any:
    """unary := ('-' | '+') unary | power"""
    tok = self.peek()
    if tok in (("op", "-"), ("op", "+")):
      self.take()
      self._enter()
      operand = self.unary()
      self.depth -= 1
      return -operand if tok[1] == "-" else operand
    return self.power()

  def power(self) -> Any:
    """power := primary ('^' unary)?   (right-associative through unary)"""
    base = self.primary()
    if self.peek() == ("op", "^"):
      self.take()
      self._enter()
      exponent = self.unary()
      self.depth -= 1
      return self._pow(base, exponent)
    return base

  def _pow(self, base: Any, exponent: Any) -> Any:
    sp = self.sp
    if exponent.is_number:
      if exponent.is_real is False or abs(exponent) > MAX_EXPONENT:
        raise ParseError("exponent too large or not real")
      if base.is_Rational and exponent.is_Rational:
        size = max(abs(base.p), abs(base.q), 2).bit_length()
        if size * abs(exponent) > MAX_POW_BITS:
          raise ParseError("power too large")
    return sp.Pow(base, exponent)

  def group(self) -> Any:
    """A braced group ``{expr}`` or a single token (``\\frac12``, ``\\sqrt2``)."""
    tok = self.peek()
    if tok == ("op", "{"):
      return self.primary()
    if tok is not None and tok[0] == "num":
      self.take()
      digits = tok[1]
      if "." in digits:  # \frac1.5 is not LaTeX
        raise ParseError("decimal as a single-token argument")
      if len(digits) > 1:  # \frac12 -> {1}{2}: split off one digit
        self.toks[self.pos - 1] = ("num", digits[0])
        self.toks.insert(self.pos, ("num", digits[1:]))
      return self.sp.Integer(int(self.toks[self.pos - 1][1]))
    return self.primary()

  def _subscript(self) -> str:
    """The text of a subscript after ``_``: one number/letter or a braced run of them."""
    tok = self.take()
    if tok[0] in ("num", "letter"):
      return tok[1]
    if tok != ("op", "{"):
      raise ParseError("unsupported subscript")
    parts = []
    while self.peek() is not None and self.peek()[0] in ("num", "letter"):
      parts.append(self.take()[1])
    self.expect("}")
    if not parts:
      raise ParseError("empty subscript")
    return "".join(parts)

  def _function(self, name: str) -> Any:
    sp = self.sp
    base = None
    if name == "log" and self.peek() == ("op", "_"):
      self.take()
      base = self.group()
    power = None
    if self.peek() == ("op", "^"):  # \tan^2 y
      self.take()
      power = self.group()
      if not (power.is_Integer and 1 <= power <= 10):
        raise ParseError("only small positive integer powers of a function")
    if self.peek() is not None and self.peek()[0] == "op" and self.peek()[1] in self._OPEN:
      arg = self.primary()
    else:  # \sin 2x: the following product of primaries that are not functions
      arg = self.power()
      while self._starts_primary(self.peek()) and self.peek()[1] not in FUNCTIONS:
        arg = arg * self.power()
    value = getattr(sp, FUNCTIONS[name])(arg) if base is None else sp.log(arg, base)
    return value if power is None else sp.Pow(value, power)

  def primary(self) -> Any:
    sp = self.sp
    kind, value = self.take()
    if kind == "num":
      return sp.Rational(Fraction(value if not value.startswith(".") else "0" + value))
    if kind == "letter":
      if self.peek() == ("op", "_"):
        self.take()
        return sp.Symbol(f"{value}_{self._subscript()}")
      return sp.I if value == "i" else sp.Symbol(value)
    if kind == "op":
      if value not in self._OPEN:
        raise ParseError(f"unexpected {value!r}")
      self._enter()
      inner = self.expr()
      self.expect(self._OPEN[value])
      self.depth -= 1
      return inner
    # commands
    self._enter()
    try:
      if value in FRACS:
        num = self.group()
        den = self.group()
        if den == 0:
          raise ParseError("division by zero")
        return num / den
      if value == "sqrt":
        if self.peek() == ("op", "["):
          self.take()
          index = self.expr()
          self.expect("]")
          if index == 0:
            raise ParseError("zeroth root")
          return self._pow(self.group(), 1 / index)
        return sp.sqrt(self.group())
      if value == "pi":
        return sp.pi
      if value == "infty":
        return sp.oo
      if value in GREEK:
        return sp.Symbol(value)
      if value in FUNCTIONS:
        return self._function(value)
      raise ParseError(f"unsupported command \\{value}")
    finally:
      self.depth -= 1


def parse_latex(text: str) -> Any:
  """The sympy expression for ``text``; raises ``ParseError`` when it is not
  one this module accepts or the result is undefined (``zoo``/``nan``)."""
  tokens = tokenize(text)
  if not tokens:
    raise ParseError("empty expression")
  try:
    expr = _Parser(tokens).parse()
  except RecursionError as e:  # defensive: MAX_DEPTH should prevent this
    raise ParseError("nesting too deep") from e
  except (TypeError, ZeroDivisionError, AttributeError, ValueError) as e:
    if isinstance(e, ParseError):
      raise
    raise ParseError(str(e)) from e
  sp = _sympy()
  if expr.has(sp.zoo, sp.nan):
    raise ParseError("undefined value")
  return expr
