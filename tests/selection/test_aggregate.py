"""Majority vote and curves, grouping answers by the task's equivalence."""

import pytest

from ttc_jax.selection import aggregate
from ttc_jax.tasks.arith import equivalent


def test_majority_groups_equivalent_answers():
  # "+3" and "3" are one answer under integer equivalence: 3 wins over 5, 5
  assert aggregate.majority_vote(["5", "3", "+3", "5", " 3"], equivalent) == "3"
  assert aggregate.majority_vote([None, None], equivalent) is None
  assert aggregate.majority_vote([None, "7"], equivalent) == "7"
  assert aggregate.majority_vote(["1", "2"], equivalent) == "1"  # tie: first seen


def test_weighted_vote():
  assert aggregate.weighted_vote(["1", "2", "2"], [0.9, 0.3, 0.3], equivalent) == "1"
  assert aggregate.weighted_vote(["1", "2", "02"], [0.5, 0.3, 0.3], equivalent) == "2"


def test_majority_curve_uses_disjoint_groups():
  answers = [["1", "2", "1", "1"], ["3", "3", "4", "4"]]
  curve = aggregate.majority_curve(answers, ["1", "4"], [1, 2, 4], equivalent)
  assert curve[1] == pytest.approx((0.75 + 0.5) / 2)
  # q1 groups (1,2)->tie, first seen 1: right; (1,1): right. q2: (3,3) wrong, (4,4) right
  assert curve[2] == pytest.approx((1.0 + 0.5) / 2)
  assert curve[4] == pytest.approx((1 + 0) / 2)
  with pytest.raises(ValueError, match="exceeds"):
    aggregate.majority_curve(answers, ["1", "4"], [8], equivalent)
