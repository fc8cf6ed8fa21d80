"""Tests for ttc_jax.tasks.arith: generator, canonical solutions, answer grading, step checker."""

import ast
import re

import numpy as np
import pytest

from ttc_jax.tasks import arith
from ttc_jax.tasks.arith import Level


def ref_eval(expr: str) -> int:
  """Reference evaluator (tests only): Python's parser restricted to + - * and unary minus on ints."""

  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
      return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
      return -ev(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
      a, b = ev(node.left), ev(node.right)
      return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}[type(node.op)]
    raise ValueError(f"unsupported node {ast.dump(node)}")

  return ev(ast.parse(expr, mode="eval"))


def paren_pairs(expr: str) -> list[tuple[int, int]]:
  stack, pairs = [], []
  for i, c in enumerate(expr):
    if c == "(":
      stack.append(i)
    elif c == ")":
      pairs.append((stack.pop(), i))
  assert not stack
  return pairs


# ----------------------------------------------------------------------------- levels
def test_level_name_and_validation():
  assert Level(3, 1).name == "ops3_d1"
  with pytest.raises(ValueError):
    Level(0, 1)
  with pytest.raises(ValueError):
    Level(13, 1)
  with pytest.raises(ValueError):
    Level(2, 4)


def test_parse_levels():
  assert arith.parse_levels("ops=1-6,digits=1") == tuple(Level(o, 1) for o in range(1, 7))
  assert arith.parse_levels("ops=2-3,digits=1-2") == (
      Level(2, 1),
      Level(3, 1),
      Level(2, 2),
      Level(3, 2),
  )
  assert arith.parse_levels("1x1, 2x1,3x2") == (Level(1, 1), Level(2, 1), Level(3, 2))
  assert arith.parse_levels("ops3_d1,ops3_d1,4x2") == (Level(3, 1), Level(4, 2))
  for bad in ["", "ops=1-x", "ops=3-1", "foo=1", "digits=1", "1y2", "ops=1-20,digits=1", "0x1"]:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
      arith.parse_levels(bad)


# ----------------------------------------------------------------------------- solve
@pytest.mark.parametrize(
    "q,steps,answer",
    [
        ("3-(4+5)*2", ("4+5=9", "9*2=18", "3-18=-15"), -15),
        ("2-(3-7)", ("3-7=-4", "2--4=6"), 6),
        ("3+(4-6)*2", ("4-6=-2", "-2*2=-4", "3+-4=-1"), -1),
        ("1+2*3", ("2*3=6", "1+6=7"), 7),
        ("8-3-2", ("8-3=5", "5-2=3"), 3),
        ("2*3*4-1", ("2*3=6", "6*4=24", "24-1=23"), 23),
        ("((2+3)*(4-1))-2*3", ("2+3=5", "4-1=3", "5*3=15", "2*3=6", "15-6=9"), 9),
        ("2*(3-(1+9))", ("1+9=10", "3-10=-7", "2*-7=-14"), -14),
        ("(1-5)*(2-9)", ("1-5=-4", "2-9=-7", "-4*-7=28"), 28),
        ("3--3", ("3--3=6",), 6),
        ("-2*4", ("-2*4=-8",), -8),
        ("(7)+1", ("7+1=8",), 8),
        ("5", (), 5),
    ],
)
def test_solve_hand_written(q, steps, answer):
  assert arith.solve(q) == (steps, answer)
  assert answer == ref_eval(q)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "3+",
        "+3",
        "3++4",
        "(3+4",
        "3+4)",
        "()",
        "3 + 4",
        "3/4",
        "3(4)",
        "-(3)",
        "3+x",
        "(3)(4)",
        "٣+1",
    ],
)
def test_solve_malformed(bad):
  with pytest.raises(ValueError, match="malformed expression"):
    arith.solve(bad)


def test_solve_matches_reference_on_random_expressions():
  rng = np.random.default_rng(123)
  count = 0
  for ops in range(1, 9):
    for digits in (1, 2, 3):
      level = Level(ops, digits)
      for _ in range(84):
        q = arith.random_expression(rng, level, paren_prob=float(rng.uniform(0, 0.6)))
        steps, answer = arith.solve(q)
        assert answer == ref_eval(q), q
        assert len(steps) == ops == arith.num_ops(q)
        for s in steps:  # every line is a true equation in the canonical format
          m = re.fullmatch(r"(-?\d+)([+\-*])(-?\d+)=(-?\d+)", s)
          assert m and ref_eval(f"({m[1]}){m[2]}({m[3]})") == int(m[4]), s
        count += 1
  assert count >= 2000


# ----------------------------------------------------------------------------- generation
def test_random_expression_shape():
  rng = np.random.default_rng(0)
  saw_parens = saw_nested = False
  sizes = set()
  for _ in range(1500):
    level = Level(int(rng.integers(1, 13)), int(rng.integers(1, 4)))
    q = arith.random_expression(rng, level, paren_prob=0.5)
    assert " " not in q and not q.startswith("-")
    toks = re.findall(r"\d+|[+\-*()]", q)
    assert "".join(toks) == q
    assert sum(t in "+-*" for t in toks) == level.num_ops
    nums = [int(t) for t in toks if t.isdigit()]
    assert all(0 <= n < 10**level.digits for n in nums)
    if level.digits == 3:  # digit count per operand drawn in 1..3: a mixture
      sizes |= {len(str(n)) for n in nums}
    pairs = paren_pairs(q)
    assert (0, len(q) - 1) not in pairs
    assert not re.search(r"\(\d+\)", q)
    assert not any((i + 1, j - 1) in pairs for i, j in pairs)
    saw_parens |= bool(pairs)
    saw_nested |= "((" in q or any(i < k < l < j for i, j in pairs for k, l in pairs)
    if level.num_ops == 1:
      assert not pairs
  assert saw_parens and saw_nested and sizes == {1, 2, 3}


def test_make_problem_and_format():
  p = arith.make_problem(np.random.default_rng(1), Level(3, 1))
  assert p.prompt == p.question + "\n"
  assert p.solution == "\n".join(p.steps) + "\nAnswer: " + str(p.answer)
  assert (p.steps, p.answer) == arith.solve(p.question)
  assert p.level == Level(3, 1)


def test_split_of_is_stable():
  assert arith.split_of("1+2") == arith.split_of("1+2")
  assert {arith.split_of(q, 0.0) for q in ["1+2", "3*4", "5-6"]} == {"train"}
  assert {arith.split_of(q, 1.0) for q in ["1+2", "3*4", "5-6"]} == {"test"}
  qs = [f"{a}+{b}*{c}" for a in range(10) for b in range(10) for c in range(10)]
  frac = np.mean([arith.split_of(q, 0.1) == "test" for q in qs])
  assert 0.07 < frac < 0.13


def test_generate_deterministic_disjoint_counts():
  levels = arith.parse_levels("ops=1-4,digits=1-2")
  train = arith.generate("train", levels, 40, seed=7)
  test = arith.generate("test", levels, 20, seed=7)
  assert [p.question for p in train] == [
      p.question for p in arith.generate("train", levels, 40, seed=7)
  ]
  assert [p.question for p in train] != [
      p.question for p in arith.generate("train", levels, 40, seed=8)
  ]
  assert len(train) == 40 * len(levels) and len(test) == 20 * len(levels)
  assert not {p.question for p in train} & {p.question for p in test}
  assert len({p.question for p in train}) == len(train)
  assert len({p.question for p in test}) == len(test)
  assert all(arith.split_of(p.question) == "train" for p in train)
  assert all(arith.split_of(p.question) == "test" for p in test)
  for lv in levels:
    assert sum(p.level == lv for p in test) == 20
    assert all(arith.num_ops(p.question) == p.level.num_ops for p in train)


def test_generate_small_level():
  lv = Level(1, 1)
  test = arith.generate("test", [lv], 100, seed=0)
  qs = [p.question for p in test]
  assert 25 <= len(qs) < 100 and len(set(qs)) == len(qs)
  train = arith.generate("train", [lv], 1000, seed=0)
  assert len(train) == 1000 and 250 <= len({p.question for p in train}) <= 300
  assert not {p.question for p in train} & set(qs)
  assert arith.generate("test", [lv], 10, seed=0, test_fraction=0.0) == []


# ----------------------------------------------------------------------------- grading
def test_extract_answer_and_equivalent():
  assert arith.extract_answer("1+2=3\nAnswer: 3") == "3"
  assert arith.extract_answer("Answer: -15\n") == "-15"
  assert arith.extract_answer("Answer: 1\nAnswer: 2") == "2"
  for text in ["", "1+2=3", "Answer: x", "Answer:", None, "answer: 3", "Answer: 3.5"]:
    assert arith.extract_answer(text) is None
  assert (
      arith.equivalent("3", " 3 ") and arith.equivalent("-0", "0") and arith.equivalent("+4", "4")
  )
  assert not arith.equivalent(None, None) and not arith.equivalent("3", None)
  assert not arith.equivalent("3", "4") and not arith.equivalent("x", "x")
  assert not arith.equivalent("9" * 5000, "9" * 5000)  # bounded, never raises
  assert arith.is_correct("4-6=-2\nAnswer: -2", -2) and not arith.is_correct("Answer: 2", -2)


# ----------------------------------------------------------------------------- checker
def test_check_canonical_solutions_all_correct():
  rng = np.random.default_rng(5)
  for ops in range(1, 9):
    p = arith.make_problem(rng, Level(ops, 2))
    c = arith.check_solution(p.question, p.solution)
    assert c.steps == p.steps and all(c.step_correct) and all(c.prefix_correct)
    assert c.first_error is None and c.answer == str(p.answer)
    assert c.answer_correct and c.complete and c.all_correct and c.num_lines == ops + 1


Q = "2+15*9-(3+4)"  # canonical: 3+4=7, 15*9=135, 2+135=137, 137-7=130


def test_check_arithmetic_slip_is_local():
  assert arith.solve(Q) == (("3+4=7", "15*9=135", "2+135=137", "137-7=130"), 130)
  c = arith.check_solution(Q, "3+4=7\n15*9=145\n2+145=147\n147-7=140\nAnswer: 140")
  assert c.step_correct == (True, False, True, True)
  assert c.prefix_correct == (True, False, False, False)
  assert c.first_error == 1 and c.answer == "140"
  assert not c.answer_correct and c.complete


def test_check_wrong_order_and_wrong_operands():
  c = arith.check_solution(Q, "15*9=135\n3+4=7\n15*9=135\n2+135=137\n137-7=130\nAnswer: 130")
  assert c.step_correct == (False, True, True, True, True) and c.first_error == 0
  assert c.answer_correct and c.complete
  c = arith.check_solution(Q, "3+4=7\n2+15=17\n3+4=7\n15*9=135\n2+135=137\n137-7=130\nAnswer: 130")
  assert c.step_correct == (True, False, False, True, True, True) and c.first_error == 1
  c = arith.check_solution(Q, "3-4=-1\n15*9=135\nAnswer: 130")  # wrong operator: state unchanged
  assert c.step_correct == (False, False) and not c.complete and c.answer_correct


def test_check_missing_answer_extra_lines_and_trailing_text():
  c = arith.check_solution(Q, "3+4=7\n15*9=135\n2+135=137\n137-7=130")
  assert all(c.step_correct) and c.answer is None and not c.answer_correct and not c.complete
  c = arith.check_solution(Q, "3+4=7\n15*9=135\n2+135=137\n137-7=130\n1+1=2\nAnswer: 130\n9*9=1\n")
  assert c.step_correct == (True, True, True, True, False) and c.first_error == 4
  assert c.complete and c.answer_correct and c.num_lines == 6
  c = arith.check_solution(Q, "3+4=7\nAnswer: 130")  # early answer: right value, not complete
  assert c.answer_correct and not c.complete
  c = arith.check_solution("1+2", "1+2=3\n\nAnswer: 3")  # blank line is a wrong step
  assert c.step_correct == (True, False)


def test_check_garbage_and_empty():
  c = arith.check_solution(Q, "")
  assert c.steps == () and c.first_error is None and c.answer is None
  assert not c.answer_correct and not c.complete and c.num_lines == 0
  c = arith.check_solution(Q, "hello ∑\n3 + 4 = 7\n(3+4)=7\nAnswer: ∞")
  assert c.step_correct == (False, False, False) and c.answer is None and not c.complete
  c = arith.check_solution(Q, None)
  assert c.steps == ()


def test_check_bounds_never_raise():
  big = "9" * 150
  c = arith.check_solution(Q, f"3+4={big}\n15*9=135\n2+135=137\n137-{big}=1\nAnswer: 1")
  assert c.step_correct == (False, True, True, False)
  assert arith.check_solution(Q, "3+4=" + "7" * 300 + "\nAnswer: 1").step_correct == (False,)
  c = arith.check_solution(Q, "x\n" * 500 + "Answer: 130")
  assert len(c.steps) == arith.MAX_LINES and c.answer is None and c.num_lines == arith.MAX_LINES
  rng = np.random.default_rng(0)
  chars = list("0123456789+-*()=\nAnswer: ") + ["\u2212", "\x00", "é", " ", "\r"]
  p = arith.make_problem(rng, Level(4, 1))
  for _ in range(300):  # random mutations of a right solution
    s = list(p.solution)
    for _ in range(int(rng.integers(1, 6))):
      s.insert(int(rng.integers(0, len(s) + 1)), chars[int(rng.integers(0, len(chars)))])
    c = arith.check_solution(p.question, "".join(s))
    assert len(c.steps) == len(c.step_correct) == len(c.prefix_correct)
  with pytest.raises(ValueError, match="malformed expression"):
    arith.check_solution("1+", "Answer: 1")
