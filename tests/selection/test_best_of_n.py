"""Step aggregation, best-of-N (plain and weighted by equivalent answers), curves; metrics."""

import itertools

import numpy as np
import pytest

from ttc_jax.prm import metrics
from ttc_jax.selection import best_of_n
from ttc_jax.tasks.arith import equivalent


def test_aggregate_steps():
  s = [0.9, 0.2, 0.5]
  assert best_of_n.aggregate_steps(s, "last") == 0.5
  assert best_of_n.aggregate_steps(s, "min") == 0.2
  assert best_of_n.aggregate_steps(s, "prod") == pytest.approx(0.09)
  with pytest.raises(ValueError, match="no scored steps"):
    best_of_n.aggregate_steps([], "last")
  with pytest.raises(ValueError, match="unknown step aggregation"):
    best_of_n.aggregate_steps(s, "mean")


def test_best_of_n_picks_top_parsable():
  assert best_of_n.best_of_n(["1", None, "3"], [0.2, 0.99, 0.5]) == "3"  # None never wins
  assert best_of_n.best_of_n(["1", "2"], [0.5, 0.5]) == "1"  # ties: first
  assert best_of_n.best_of_n([None], [1.0]) is None


def test_weighted_groups_by_equivalence():
  # "+4" and "4" are one answer: 0.3 + 0.3 beats the single 0.5
  answers, scores = ["7", "+4", "4"], [0.5, 0.3, 0.3]
  assert best_of_n.best_of_n_weighted(answers, scores, equivalent) in ("+4", "4")
  assert best_of_n.best_of_n(answers, scores) == "7"
  assert best_of_n.select("majority", ["7", "+4", "4"], None, equivalent) in ("+4", "4")
  with pytest.raises(ValueError, match="needs verifier scores"):
    best_of_n.select("best_of_n", answers, None, equivalent)


def test_curves_over_disjoint_groups():
  answers = [["1", "2", "2", "1"]]
  scores = [[0.9, 0.4, 0.4, 0.1]]
  # N=1: accuracy of single samples; N=2: groups (1,2)->1 wins, (2,1): 2 beats 1 under
  # best_of_n (0.4 > 0.1); N=4 weighted: 1 -> 1.0 vs 2 -> 0.8
  assert best_of_n.curve("best_of_n", answers, ["1"], [1, 2, 4], equivalent, scores) == {
      1: 0.5,
      2: 0.5,
      4: 1.0,
  }
  assert best_of_n.curve("best_of_n_weighted", answers, ["1"], [4], equivalent, scores) == {4: 1.0}
  assert best_of_n.curve("majority", answers, ["2"], [4], equivalent) == {4: 0.0}  # tie: "1" first
  with pytest.raises(ValueError, match="unknown selection method"):
    best_of_n.curve("beam", answers, ["1"], [1], equivalent, scores)


def test_auroc_matches_pairwise_definition():
  rng = np.random.default_rng(0)
  s = rng.integers(0, 5, 40) / 4.0  # many ties
  y = rng.random(40) < 0.5
  pairs = [
      (1.0 if a > b else 0.5 if a == b else 0.0)
      for (a, ya), (b, yb) in itertools.product(zip(s, y), zip(s, y))
      if ya and not yb
  ]
  assert metrics.auroc(s, y) == pytest.approx(np.mean(pairs))
  assert metrics.auroc([0.1, 0.9], [False, True]) == 1.0
  assert np.isnan(metrics.auroc([0.1, 0.2], [True, True]))


def test_first_error_accuracy():
  scores = [[0.9, 0.2, 0.1], [0.9, 0.8], [0.3, 0.9]]
  exact = [[True, False, False], [True, True], [True, True]]
  fe = metrics.first_error_accuracy(scores, exact)
  # right: error at 1; right: no error; wrong: predicted 0, truly none
  assert fe["accuracy"] == pytest.approx(2 / 3)
  assert fe["with_error"] == 1.0 and fe["without_error"] == 0.5 and fe["num_with_error"] == 1
  with pytest.raises(ValueError):
    metrics.first_error_accuracy([[0.1]], [[True, False]])
