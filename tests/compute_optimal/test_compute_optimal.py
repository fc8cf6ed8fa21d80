"""Compute-optimal analysis: difficulty bins, cross-validated selection, FLOPs, the policy."""

import jax
import numpy as np
import pytest

from conftest import tiny_config
from ttc_jax.compute_optimal import analysis, difficulty, flops, select
from ttc_jax.compute_optimal.policy import ComputeOptimalPolicy, PolicySearchSettings
from ttc_jax.models.reward import create_value_model
from ttc_jax.models.transformer import create_model
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer


def test_quantile_bins_equal_sizes_easiest_first_and_assign():
  v = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4, 1.0])
  bins, thr = difficulty.quantile_bins(v, 5)
  assert np.bincount(bins).tolist() == [2] * 5
  assert bins[np.argmax(v)] == 0 and bins[np.argmin(v)] == 4
  np.testing.assert_allclose(thr, [0.85, 0.65, 0.45, 0.25])
  np.testing.assert_array_equal(difficulty.assign(v, thr), bins)
  # ties (many questions at pass@1 = 1) still give equal bins, broken by question order
  tied = np.array([1.0] * 6 + [0.5, 0.2, 0.0, 0.0])
  b2, _ = difficulty.quantile_bins(tied, 5)
  assert np.bincount(b2).tolist() == [2] * 5 and b2[:2].tolist() == [0, 0]
  with pytest.raises(ValueError, match="cannot cut 3 questions into 5 bins"):
    difficulty.quantile_bins([0.1, 0.2, 0.3], 5)
  with pytest.raises(ValueError, match="no samples"):
    difficulty.oracle_pass_at_1([[True], []])


def _synthetic(q=200, seed=0):
  """Two strategies: A is right on easy questions (bins 0-1), B on hard ones (bins 2-4)."""
  rng = np.random.default_rng(seed)
  value = rng.permutation(np.linspace(0, 1, q))
  bins, _ = difficulty.quantile_bins(value, 5)
  p_a = np.where(bins <= 1, 0.9, 0.1)
  p_b = np.where(bins <= 1, 0.4, 0.6)
  table = {
      "A": {4: (rng.random(q) < p_a).astype(float)},
      "B": {4: (rng.random(q) < p_b).astype(float)},
  }
  return table, bins, value


def test_cross_validation_recovers_the_best_strategy_per_bin():
  table, bins, _ = _synthetic()
  cv = select.cross_validated(table, bins, [4], ["A", "B"], num_folds=2, seed=0)
  for f in (0, 1):
    assert [cv["choices"][f][b][4] for b in range(5)] == ["A", "A", "B", "B", "B"]
  assert select.fit_choices(table, bins, [4], ["A", "B"])[3][4] == "B"
  # the curve is the held-out accuracy of those choices, above either strategy alone
  expect = np.mean(np.where(bins <= 1, table["A"][4], table["B"][4]))
  assert cv["curve"][4] == pytest.approx(expect)
  assert cv["curve"][4] > max(np.mean(table["A"][4]), np.mean(table["B"][4]))


def test_no_question_both_selects_and_evaluates():
  """A strategy perfect exactly on the questions it is fitted on scores zero held out."""
  q = 40
  bins = np.repeat(np.arange(2), q // 2)
  folds = select.fold_assignment(bins, 2, seed=3)
  table = {"A": {8: (folds == 0).astype(float)}, "B": {8: (folds == 1).astype(float)}}
  cv = select.cross_validated(table, bins, [8], ["A", "B"], num_folds=2, seed=3)
  np.testing.assert_array_equal(cv["folds"], folds)
  assert cv["curve"][8] == 0.0  # each fold gets the other fold's favourite
  assert select.oracle_best(table, bins, [8], ["A", "B"])[8] == 0.5  # in-sample: optimistic
  seen = []
  orig = select.choose

  def spy(tab, idx, budget, strategies):
    seen.append(set(idx.tolist()))
    return orig(tab, idx, budget, strategies)

  select.choose = spy
  try:
    select.cross_validated(table, bins, [8], ["A", "B"], num_folds=2, seed=3)
  finally:
    select.choose = orig
  assert len(seen) == 4  # one fit per (fold, bin), fold-major
  for (f, b), fit in zip([(0, 0), (0, 1), (1, 0), (1, 1)], seen):
    held = set(np.flatnonzero((bins == b) & (folds == f)).tolist())
    assert held and fit and not held & fit
    assert fit == set(np.flatnonzero((bins == b) & (folds != f)).tolist())


def test_ties_go_to_the_baseline_and_missing_budgets_do_not_compete():
  bins = np.zeros(4, int)
  table = {"base": {1: np.ones(4), 4: np.ones(4)}, "beam": {4: np.ones(4)}}
  cv = select.cross_validated(table, bins, [1, 4], ["base", "beam"])
  assert cv["choices"][0][0] == {1: "base", 4: "base"}
  with pytest.raises(ValueError, match="accuracies of shape"):
    select.cross_validated({"x": {1: np.ones(3)}}, bins, [1], ["x"])


def test_efficiency_against_the_baselines_own_matching_budget():
  base = {1: 0.2, 2: 0.3, 4: 0.4, 8: 0.5, 16: 0.5}
  opt = {1: 0.3, 2: 0.4, 4: 0.5, 8: 0.6, 16: 0.6}
  e = select.efficiency(opt, base)
  assert e[8] == dict(baseline=0.5, baseline_budget=8, matched_budget=4, ratio=2.0)
  assert e[16]["baseline_budget"] == 8 and e[16]["ratio"] == 2.0  # flat baseline: no 4x
  assert e[1]["matched_budget"] == 1 and e["max_ratio"] == 2.0
  assert select.efficiency({1: 0.1}, {1: 0.5})[1]["matched_budget"] is None


def test_analyse_reports_both_measures_and_the_baseline():
  table, bins, value = _synthetic(q=100)
  table["A"][1] = table["A"][4]
  out = analysis.analyse(
      table, ["A", "B"], [1, 4], {1: "A", 4: "A"}, {"oracle": value, "predicted": value[::-1]}
  )
  assert set(out) >= {"oracle", "predicted", "baseline"}
  assert out["baseline"][4] == pytest.approx(np.mean(table["A"][4]))
  assert sum(out["oracle"]["bin_sizes"].values()) == 100
  assert out["oracle"]["curve"][4] >= out["baseline"][4]


def test_flops_formulas_by_hand():
  assert flops.pretrain_flops(1e6, 2e9) == 6 * 1e6 * 2e9
  assert flops.inference_flops(1e6, 3e3) == 2 * 1e6 * 3e3
  assert flops.inference_multiplier(4, 1.0) == 4 + 9
  assert flops.inference_multiplier(14, 0.16) == pytest.approx(14 + 3 * 13 / 0.16)
  assert flops.inference_multiplier(1, 22) == 1.0
  ex = flops.exchange(10, 40, 1000, [0.5, 22])
  for r, e in ex.items():
    # small: 6*10*1000 + 2*10*K*D_i == large: 6*40*1000 + 2*40*D_i
    d_i = r * 1000
    assert e["small_total_flops"] == pytest.approx(6 * 10 * 1000 + 2 * 10 * e["K"] * d_i)
    assert e["small_total_flops"] == pytest.approx(6 * 40 * 1000 + 2 * 40 * d_i)
    assert e["K_with_verifier"] == e["K"] / 2
  assert flops.budget_within([1, 4, 16, 64], 15.9) == 4
  assert flops.budget_within([4], 3.0) is None
  fm = flops.flops_matched(
      {0: {1: 0.5, 16: 0.9}, 1: {1: 0.1, 16: 0.2}}, {0: 0.6, 1: 0.4}, 10, 40, 1000, [0.5]
  )
  assert fm[0.5][0] == dict(
      allowed_budget=pytest.approx(22.0),
      budget=16,
      small=0.9,
      large=0.6,
      gain=pytest.approx(0.3),
      winner="test_time",
  )
  assert fm[0.5][1]["winner"] == "larger_model"
  with pytest.raises(ValueError):
    flops.inference_multiplier(0.5, 1.0)


def test_compute_optimal_policy_runs_on_a_toy_model():
  tok = CharTokenizer()
  cfg = tiny_config(vocab_size=32, num_layers=1, max_len=64)
  policy, prm = create_model(cfg, 0), create_value_model(cfg, 1)
  problems = [
      dict(prompt=q + "\n", answer=str(a))
      for q, a in (("1+2", 3), ("3*4", 12), ("5-1", 4), ("2*2", 4))
  ]
  # two bins split at a score threshold no random PRM reaches: every question is bin 0
  choices = {0: {4: "beam_m4", 2: "best_of_n_weighted"}, 1: {4: "best_of_n_weighted"}}
  pol = ComputeOptimalPolicy(
      policy,
      prm,
      tok,
      thresholds=[-1.0],
      choices=choices,
      extract_answer=arith.extract_answer,
      equivalent=arith.equivalent,
      difficulty_samples=2,
      max_new_tokens=24,
      max_batch=64,
      search=PolicySearchSettings(max_rounds=3, max_step_tokens=8, max_new_tokens=24),
  )
  bins, cost = pol.predict_bins(problems, jax.random.key(0))
  assert bins.tolist() == [0] * 4 and cost["generations"] == 8
  for budget, strat in ((4, "beam_m4"), (2, "best_of_n_weighted")):
    recs = pol.solve(problems, budget, jax.random.key(1))
    assert [r["strategy"] for r in recs] == [strat] * 4
    assert all(r["generations"] == budget and r["difficulty_generations"] == 2 for r in recs)
  hard = ComputeOptimalPolicy(
      policy,
      prm,
      tok,
      thresholds=[2.0],
      choices=choices,
      extract_answer=arith.extract_answer,
      equivalent=arith.equivalent,
      difficulty_samples=2,
      max_new_tokens=24,
      max_batch=64,
  )
  recs = hard.solve(problems[:2], 4, jax.random.key(2))
  assert [r["bin"] for r in recs] == [1, 1]
  assert [r["strategy"] for r in recs] == ["best_of_n_weighted"] * 2
  with pytest.raises(ValueError, match="no strategy was chosen for budget 8"):
    hard.solve(problems[:1], 8, jax.random.key(3))
  # a revision split runs through the `revise` callable with its C x L
  calls = []

  def revise(probs, c, l, rng):
    calls.append((len(probs), c, l))
    return ["3"] * len(probs)

  rev = ComputeOptimalPolicy(
      policy,
      prm,
      tok,
      thresholds=[-1.0],
      choices={0: {4: "2x2"}},
      extract_answer=arith.extract_answer,
      equivalent=arith.equivalent,
      difficulty_samples=2,
      max_new_tokens=24,
      max_batch=64,
      revise=revise,
  )
  recs = rev.solve(problems, 4, jax.random.key(4))
  assert calls == [(4, 2, 2)] and [r["answer"] for r in recs] == ["3"] * 4
  assert all(r["strategy"] == "2x2" and r["generations"] == 4 for r in recs)
  rev.revise = None
  with pytest.raises(ValueError, match="needs revision chains"):
    rev.solve(problems[:1], 4, jax.random.key(5))


def test_policy_from_analysis_names_bad_family_and_measure():
  analysis = {"search": {"predicted": {"choices": {"0": {"4": "beam_m4"}}, "thresholds": []}}}
  kw = dict(extract_answer=arith.extract_answer, equivalent=arith.equivalent)
  pol = ComputeOptimalPolicy.from_analysis(analysis, None, None, CharTokenizer(), **kw)
  assert pol.choices == {0: {4: "beam_m4"}} and pol.budgets() == [4]
  with pytest.raises(ValueError, match="analysis has no 'revision' family"):
    ComputeOptimalPolicy.from_analysis(
        analysis, None, None, CharTokenizer(), family="revision", **kw
    )
  with pytest.raises(ValueError, match="must be 'oracle' or 'predicted', got 'exact'"):
    ComputeOptimalPolicy.from_analysis(analysis, None, None, CharTokenizer(), measure="exact", **kw)
