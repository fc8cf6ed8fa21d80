"""A regression suite of (gold, prediction, expected) MATH pairs written for issue 23.

Each kind the issue lists has equal and unequal pairs; the unequal ones include the
false-positive guards (a pair is not a thousands number, another bracket is another
interval, ...). A prediction is graded as a user would: the answer extracted from it
(`extract_math_answer`), or the raw text when nothing is extracted.
"""

import time

import pytest

from ttc_jax.grading import extract_math_answer, math_equivalent

pytest.importorskip("sympy")

T, F = True, False
CASES = {
    "extract_no_box": [
        ("34", "Final Answer: The largest $n$ is 34.", T),
        ("35", "Final Answer: The largest $n$ is 34.", F),
        ("9", "Answer $ 9 $", T),
        ("9", r"The sum is therefore\n\[ 9 \]", T),
        ("10", r"Adding up, we get \( (9+1) \)", T),
        ("11", r"Adding up, we get \( (9+1) \)", F),
        (r"\frac{1}{2}", "So the probability is $\\frac{1}{2}$.", T),
        (r"\frac{1}{2}", "So the probability is $\\frac{1}{3}$.", F),
        ("12", "The final answer is $12$. I hope it is correct.", T),
        ("7", "Final Answer: The final answer is 7", T),
        ("7", "We find $x=3$ first.\nFinal Answer: $7$", T),
        ("3", "We find $x=3$ first.\nFinal Answer: $7$", F),
        ("24", "Therefore, the area is $24$ square units.", T),
        ("-2", "The answer is: $-2$", T),
        ("2", "The answer is: $-2$", F),
        ("5", "Final Answer:\n\n$5$", T),
        ("6", 'Thus, the number of ways is 6.\n\nFinal Answer: 6', T),
        (r"\frac{5}{9}", r"Final Answer: The probability is $\dfrac{5}{9}$.", T),
        (r"\frac{5}{9}", r"Final Answer: The probability is $\dfrac{4}{9}$.", F),
        ("42", "**Answer:** 42", T),
        ("42", "The answer is 41.", F),
        (r"3\sqrt{2}", r"Hence the distance is $$3\sqrt{2}.$$", T),
        ("x+1", 'so the answer is x+1.\nDone', T),
        ("8", r"Final answer: \(8\)", T),
    ],
    "multiple_boxes": [
        ("1, 2", r"The solutions are $\boxed{1}, \boxed{2}$.", T),
        ("2, 1", r"$x = \boxed{1}$ or $x = \boxed{2}$", T),
        ("1, 2", r"The solutions are $\boxed{1}$ and $\boxed{3}$.", F),
        ("2", r"First $a=\boxed{3}$. Then, after more work, the answer is $\boxed{2}$.", T),
        ("-5, \\frac{14}{3}", r"\boxed{x = -5, p = \frac{14}{3}}", T),
        ("(-5, \\frac{14}{3})", r"\boxed{x = -5, p = \frac{14}{3}}", T),
        ("-5, \\frac{13}{3}", r"\boxed{x = -5, p = \frac{14}{3}}", F),
        ("6, 8", r"\boxed{6 \text{ and } 8}", T),
        ("6, 8", r"\boxed{8 \text{ and } 6}", T),
        ("6, 9", r"\boxed{6 \text{ and } 8}", F),
        (r"\text{Alice and Bob}", r"\boxed{\text{Alice and Bob}}", T),
        ("2", r"\boxed{1}, \boxed{2}", F),
        ("-3, 3", r"The roots are $\boxed{-3}$ and $\boxed{3}$.", T),
        ("-3, 3", r"The roots are $\boxed{-3}$ and $\boxed{4}$.", F),
        ("1,2,3", r"\boxed{1},\boxed{2},\boxed{3}", T),
        ("3", r"We get $\boxed{2}$ apples. The final answer is $\boxed{3}$", T),
        ("2, 3",
         r"We have $y=\boxed{2}$, and then in the second part we compute the final value"
         r" is \boxed{3}", F),
    ],
    "units_words": [
        ("125", r"125\textnormal{ miles}", T),
        ("125", r"\boxed{125 \text{ miles}}", T),
        ("126", r"125\textnormal{ miles}", F),
        ("28", "28 percent", T),
        ("28", "28 pct", T),
        ("28", r"28\%", T),
        (r"28\%", "28 percent", T),
        ("29", r"28\%", F),
        ("50", r"\boxed{50\text{ square units}}", T),
        ("90", r"90^\circ", T),
        ("80", r"90^\circ", F),
        ("20", r"\boxed{20\text{ cm}^2}", T),
        ("20", r"\boxed{20 \mbox{ inches}}", T),
        ("15", r"\boxed{\$15}", T),
        ("15", r"\boxed{15 \text{ dollars}}", T),
        ("16", r"\boxed{15 \text{ dollars}}", F),
        ("45", r"\boxed{45\%}", T),
        ("0.45", r"\boxed{45\%}", F),
        ("3", r"\boxed{3\text{ hours}}", T),
    ],
    "currency_decimal_comma": [
        ("1000.99", r"1,000.99$", T),
        ("1000.99", r"\$1,000.99", T),
        ("1000.98", r"1,000.99$", F),
        ("2.74", "2,74", T),
        ("2,74", "2.74", T),
        ("2.75", "2,74", F),
        ("1000", "1 000", T),
        ("1000000", "1 000 000", T),
        ("10000", "1 000", F),
        ("10000", r"10{,}000", T),
        ("10000", r"10,\!000", T),
        ("32, 349", r"\boxed{32, 349}", T),
        ("32349", r"\boxed{32, 349}", F),
        ("32349", r"\boxed{32,349}", T),
        ("18.50", r"\boxed{\$18.50}", T),
        ("1234567", r"\boxed{1,234,567}", T),
        ("1234567", r"\boxed{1 234 567}", T),
        ("0.5", "0,5", T),
        ("0.6", "0,5", F),
        ("12, 345", r"\boxed{12,345}", F),
    ],
    "labels": [
        ("11", "x = 11", T),
        ("11", "x = 12", F),
        ("(3,2)", "(p,q)=(3,2)", T),
        ("(2,3)", "(p,q)=(3,2)", F),
        ("4, 5", "AB=4,CD=5", T),
        ("4, 6", "AB=4,CD=5", F),
        ("11:21", r"V_1:V_2=11:21", T),
        ("11:20", r"V_1:V_2=11:21", F),
        ("11", "x = 5+5+1 = 7 = 11", T),
        ("7", "x = 5+5+1 = 7 = 11", F),
        ("3", r"f(2) = 3", T),
        (r"\frac{\pi}{3}", r"\theta = \frac{\pi}{3}", T),
        ("(3,-1)", "x=3, y=-1", T),
        ("(-1,3)", "x=3, y=-1", F),
        ("1, 2", "x = 1, 2", T),
        ("x = 3", "3", T),
        ("x = 3", "y = 4", F),
        ("5", r"\boxed{n=5}", T),
        ("5", r"\boxed{n=6}", F),
        ("(1,-2)", r"\boxed{(x, y) = (1, -2)}", T),
        ("(1,-2)", r"\boxed{(x, y) = (-2, 1)}", F),
        ("12", r"\boxed{AB = 12}", T),
        ("2:3", r"\boxed{a:b = 2:3}", T),
        ("2:3", r"\boxed{a:b = 3:2}", F),
        ("9", r"\boxed{3^2 = 9}", T),
        ("20", r"\boxed{4 \cdot 5 = 20}", T),
        ("21", r"\boxed{4 \cdot 5 = 20}", F),
    ],
    "relations": [
        (r"x \geq 5", r"5 \leq x", T),
        (r"x \geq 5", "x >= 5", T),
        (r"x \ge 5", r"x \geqslant 5", T),
        (r"x \geq 5", "x > 5", F),
        (r"x \geq 5", r"x \leq 5", F),
        (r"x \neq 3", "x != 3", T),
        (r"x \neq 3", r"3 \ne x", T),
        (r"x \neq 3", "x != 4", F),
        (r"-2 \le x \le 7", r"x \in [-2,7]", T),
        (r"-2 \le x \le 7", "[-2,7]", T),
        (r"-2 \le x \le 7", "(-2,7]", F),
        (r"-2 \le x \le 7", r"x \in [-2,7)", F),
        ("0<f(x)<1", "(0,1)", T),
        ("0<f(x)<1", "[0,1)", F),
        ("x > 5", r"(5, \infty)", T),
        ("x > 5", r"[5, \infty)", F),
        (r"x < 2", r"(-\infty, 2)", T),
        (r"(-\infty, 2) \cup (3, \infty)", r"x < 2 \text{ or } x > 3", T),
        (r"(-\infty, 2) \cup (3, \infty)", r"(3, \infty) \cup (-\infty, 2)", T),
        (r"(-\infty, 2) \cup (3, \infty)", r"(-\infty, 2] \cup (3, \infty)", F),
        (r"(-\infty, 2) \cup (3, \infty)", r"(-\infty, 3)", F),
        (r"[1, 2) \cup (2, 5]", r"[1,2)\cup(2,5]", T),
        (r"[1, 2) \cup (2, 5]", r"[1,5]", F),
        ("x > -1", r"\boxed{-1 < x}", T),
        ("x > -1", r"\boxed{x>-1}", T),
        ("x > -1", r"\boxed{x \ge -1}", F),
        ("[-3, 5]", r"\boxed{-3 \leq x \leq 5}", T),
        ("[-3, 5]", r"\boxed{-3 < x \leq 5}", F),
        (r"(-\infty, -1] \cup [1, \infty)", r"\boxed{x \le -1 \text{ or } x \ge 1}", T),
        (r"(-\infty, -1] \cup [1, \infty)", r"\boxed{(-\infty,-1)\cup(1,\infty)}", F),
        (r"a \neq 0", r"\boxed{a \ne 0}", T),
        ("(2, 5)", r"\boxed{2<x<5}", T),
    ],
    "equations_identities": [
        ("2x+4y-3=0", r"y=-\frac{1}{2}x+\frac{3}{4}", T),
        ("2x+4y-3=0", r"y=-\frac{1}{2}x+\frac{3}{2}", F),
        ("y = 2x + 3", "2x - y + 3 = 0", T),
        ("y = 2x + 3", "2x + y + 3 = 0", F),
        ("y = 2x + 3", "2x+3", T),
        ("x^2+y^2=25", "2x^2+2y^2-50=0", T),
        ("x^2+y^2=25", "x^2+y^2=5", F),
        (r"\tan^2 y + 1", r"\sec^2 y", T),
        (r"\tan^2 y + 1", r"\sec y", F),
        (r"\sin^2 x + \cos^2 x", "1", T),
        (r"2\sin x \cos x", r"\sin 2x", T),
        (r"2\sin x \cos x", r"\sin x", F),
        ("0.0833333", r"\frac{1}{12}", T),
        (r"\frac{1}{12}", "0.08333333", T),
        (r"\frac{1}{12}", "0.08333", F),
        (r"\frac{1}{12}", "0.0833", F),
        (r"\frac{1}{12}", "0.0834333", F),
        (r"\sqrt{2}", "1.414214", T),
        (r"\sqrt{2}", "1.41", F),
        (r"\pi", "3.141593", T),
        (r"\pi", "3.14", F),
        (r"\cfrac{1}{2}", "0.5", T),
        (r"\cfrac{1}{1+\cfrac{1}{2}}", r"\frac{2}{3}", T),
        (r"\cfrac{1}{1+\cfrac{1}{2}}", r"\frac{1}{3}", F),
        ("y = -x + 4", r"\boxed{x + y = 4}", T),
        ("y = -x + 4", r"\boxed{x + y = 5}", F),
        ("3x - 2y = 6", r"\boxed{y = \frac{3}{2}x - 3}", T),
        (r"\frac{\sqrt{3}}{2}", r"\boxed{0.866025}", T),
        (r"\frac{\sqrt{3}}{2}", r"\boxed{0.8660}", F),
        (r"\cos^2 x", r"\boxed{1 - \sin^2 x}", T),
        (r"\cos^2 x", r"\boxed{1 + \sin^2 x}", F),
        ("e^{2}", r"\boxed{e^2}", T),
        (r"\ln 8", r"\boxed{3\ln 2}", T),
    ],
    "matrices_sets": [
        (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
         r"\begin{bmatrix} 1 & 2 \\ 3 & 4 \end{bmatrix}", T),
        (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
         r"\begin{bmatrix} 1 & 2 \\ 4 & 3 \end{bmatrix}", F),
        (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
         r"\left[\begin{array}{cc} 1 & 2 \\ 3 & 4 \end{array}\right]", T),
        (r"\begin{pmatrix} \frac12 \\ 3 \end{pmatrix}",
         r"\left[ \begin{array}{c} 0.5 \\ 3 \end{array} \right]", T),
        (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
         r"\left[\begin{array}{cccc} 1 & 2 & 3 & 4 \end{array}\right]", F),
        (r"\{(1,2), (3,4)\}", r"\{(3,4), (1,2)\}", T),
        (r"\{(1,2), (3,4)\}", r"\{(4,3), (1,2)\}", F),
        (r"(1,2), (3, 4)", r"(3,4),(1,\frac{4}{2})", T),
        (r"\{1,3\}", "{1,3}", T),
        (r"\{1,3\}", "{3, 1}", T),
        (r"\{1,3\}", "{1,4}", F),
        (r"\{1,3\}", "1,3", F),
        (r"(1,3)", "[1,3]", F),
        (r"(1,3)", "(1,3]", F),
        (r"\begin{pmatrix} 2 \\ -1 \end{pmatrix}",
         r"\boxed{\begin{bmatrix} 2 \\ -1 \end{bmatrix}}", T),
        (r"\begin{pmatrix} 2 \\ -1 \end{pmatrix}",
         r"\boxed{\begin{pmatrix} -1 \\ 2 \end{pmatrix}}", F),
        (r"\{(0,0), (1,1), (2,4)\}", r"\boxed{\{(2,4),(0,0),(1,1)\}}", T),
        (r"\{(0,0), (1,1), (2,4)\}", r"\boxed{\{(2,4),(0,0)\}}", F),
        (r"\{2, 5\}", r"\boxed{\{5, 2\}}", T),
        ("(2, 5)", r"\boxed{(5, 2)}", F),
    ],
    "plain": [
        (r"\frac{3}{4}", r"\boxed{0.75}", T),
        (r"\frac{3}{4}", r"\boxed{0.7}", F),
        (r"2\sqrt{3}", r"\boxed{\sqrt{12}}", T),
        (r"2\sqrt{3}", r"\boxed{\sqrt{13}}", F),
        ("5", r"\boxed{5.0}", T),
        ("5", r"\boxed{50}", F),
        ("x^2+2x+1", r"\boxed{(x+1)^2}", T),
        ("x^2+2x+1", r"\boxed{(x-1)^2}", F),
        (r"\text{(C)}", r"\boxed{\text{(C)}}", T),
        (r"\text{(C)}", r"\boxed{\text{(D)}}", F),
    ],
}
PAIRS = [(kind, g, p, e) for kind, rows in CASES.items() for g, p, e in rows]


def grade(gold: str, prediction: str) -> bool:
  """The verdict on a prediction: its extracted answer (or the raw text) against gold."""
  return math_equivalent(gold, extract_math_answer(prediction) or prediction)


def figures() -> dict:
  verdicts = [(e, grade(g, p)) for _, g, p, e in PAIRS]
  unequal = [got for e, got in verdicts if not e]
  return dict(pairs=len(verdicts),
              agreement=sum(e == got for e, got in verdicts) / len(verdicts),
              false_positive_rate=sum(unequal) / len(unequal),
              per_kind={k: len(v) for k, v in CASES.items()})


@pytest.mark.parametrize("kind, gold, prediction, expected", PAIRS,
                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(PAIRS)])
def test_pair(kind, gold, prediction, expected):
  assert grade(gold, prediction) is expected


def test_suite_thresholds_and_coverage():
  start = time.monotonic()
  f = figures()
  assert time.monotonic() - start < 20
  assert f["agreement"] >= 0.95 and f["false_positive_rate"] <= 0.01, f
  for kind, rows in CASES.items():   # every kind has equal and unequal pairs
    assert {e for *_, e in rows} == {True, False}, kind
