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

Modules: ``grammar`` (expression grammar, solution lines, canonical step order; a leaf),
``answer`` (``extract_answer``, ``equivalent``), ``problems`` (levels, generator), ``check``
(exact step checker) and ``device`` (on-device answer grading under jit; imports JAX, so it is not
imported here: ``from ttc_jax.tasks.arith import device``).
"""

from ttc_jax.tasks.arith.answer import equivalent, extract_answer, is_correct
from ttc_jax.tasks.arith.check import StepCheck, check_solution
from ttc_jax.tasks.arith.grammar import (
    ANSWER_PREFIX,
    MAX_DIGITS,
    MAX_LINE_CHARS,
    MAX_LINES,
    MAX_OPS,
    format_solution,
    num_ops,
    solve,
)
from ttc_jax.tasks.arith.problems import (
    Level,
    Problem,
    generate,
    make_problem,
    parse_levels,
    random_expression,
    split_of,
)

__all__ = [
    "ANSWER_PREFIX",
    "MAX_DIGITS",
    "MAX_LINE_CHARS",
    "MAX_LINES",
    "MAX_OPS",
    "Level",
    "Problem",
    "StepCheck",
    "check_solution",
    "equivalent",
    "extract_answer",
    "format_solution",
    "generate",
    "is_correct",
    "make_problem",
    "num_ops",
    "parse_levels",
    "random_expression",
    "solve",
    "split_of",
]
