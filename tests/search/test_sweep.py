"""Budget plans of the search sweep: every method spends exactly the generation budget."""

import pytest

from ttc_jax.search import sweep


def test_plans_spend_the_generation_budget():
  assert sweep.plan("beam_m4", 16) == dict(n=16, m=4, k=0)
  assert sweep.plan("beam_sqrt", 64) == dict(n=64, m=8, k=0)
  assert sweep.plan("beam_sqrt", 4) == dict(n=4, m=2, k=0)
  assert sweep.plan("lookahead_k1", 16) == dict(n=8, m=4, k=1)
  assert sweep.plan("lookahead_k3", 16) == dict(n=4, m=4, k=3)
  assert sweep.plan("lookahead_k3", 4) == dict(n=1, m=1, k=3)
  assert sweep.plan("dvts", 64) == dict(n=64, m=4, k=0)
  for method in sweep.METHODS:
    for budget in (4, 16, 64, 256):
      p = sweep.plan(method, budget)
      assert p is not None and p["n"] * (p["k"] + 1) == budget and p["n"] % p["m"] == 0
  assert sweep.plan("lookahead_k3", 2) is None  # fewer than one beam
  assert sweep.plan("beam_m4", 2) is None  # M does not divide N
  with pytest.raises(ValueError, match="unknown search method"):
    sweep.plan("mcts", 4)


def test_curves_by_method_budget_and_level():
  recs = [
      dict(method="beam_m4", budget=4, level="a", correct=True),
      dict(method="beam_m4", budget=4, level="b", correct=False),
      dict(method="dvts", budget=16, level="a", correct=True),
  ]
  overall, by_level = sweep.curves(recs, ["a", "b", "c"])
  assert overall == {"beam_m4": {4: 0.5}, "dvts": {16: 1.0}}
  assert by_level["b"] == {"beam_m4": {4: 0.0}} and "c" not in by_level
