"""The main job end to end on the smoke config: report contract, resume, errors."""

import json
import os

import pytest

from ttc_jax import run
from ttc_jax.pipeline import StageMismatchError

SMOKE = "configs/arith_smoke.py"
REPORT_KEYS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "fixtures",
    "smoke_report_keys.json",
)
pytestmark = pytest.mark.xdist_group("smoke_run")  # shares conftest.smoke_run's run


def test_report_contract(smoke_run):
  with open(os.path.join(smoke_run, "report.json")) as f:
    rep = json.load(f)
  levels = rep["levels"]
  assert levels == ["ops1_d1", "ops2_d1", "ops3_d1"]
  p1 = rep["policy"]["pass_at_1_by_level"]
  assert list(p1) == levels and all(0.0 <= v <= 1.0 for v in p1.values())
  assert set(rep["curves"]["majority"]) == {"1", "2", "4"}
  for k in ("data", "policy", "eval_policy", "total"):
    assert rep["wall_seconds"][k] >= 0
  for f in (
      "report.md",
      "config.json",
      "plots/policy.png",
      "policy/metrics.jsonl",
      "eval/samples.jsonl",
  ):
    assert os.path.exists(os.path.join(smoke_run, f)), f
  with open(os.path.join(smoke_run, "policy", "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert rows[-1]["step"] == 300 and "tokens_per_s" in rows[-1] and "eval_loss" in rows[-1]


def report_key_paths(rep: dict, prefix: str = "") -> set[str]:
  """Every key path of `rep` ("a.b.c"), numeric keys (budgets, bins, histogram values, R)
  written as "*", so the set depends on the report's structure, not on sampled data."""
  out = set()
  for k, v in rep.items():
    seg = ".".join("*" if part.isdigit() else part for part in str(k).split("."))
    path = f"{prefix}.{seg}" if prefix else seg
    out.add(path)
    if isinstance(v, dict):
      out |= report_key_paths(v, path)
  return out


def test_report_keeps_every_pinned_key_path(smoke_run):
  """report.json keys are a contract: keys may be added, none may go (regenerate the pinned
  file only when adding: `python tests/pipeline/test_pipeline.py RUN_DIR`)."""
  with open(os.path.join(smoke_run, "report.json")) as f:
    got = report_key_paths(json.load(f))
  with open(REPORT_KEYS) as f:
    pinned = set(json.load(f))
  assert len(pinned) > 300
  assert sorted(pinned - got) == []


def test_verifier_report_contract(smoke_run):
  with open(os.path.join(smoke_run, "report.json")) as f:
    rep = json.load(f)
  for kind in ("prm", "orm"):
    q = rep[kind]
    assert q["step_auroc"] is None or 0.0 <= q["step_auroc"] <= 1.0
    assert 0.0 <= q["first_error_accuracy"] <= 1.0 and q["num_scored_steps"] > 0
  lab = rep["prm"]["labels"]
  assert lab["rollouts"] > 0 and lab["rollouts_per_s"] > 0 and lab["rollout_tokens"] > 0
  for m in ("majority", "prm_best_of_n_weighted", "orm_best_of_n_weighted", "prm_best_of_n"):
    assert set(rep["curves"][m]) == {"1", "2", "4"}, m
    assert all(0.0 <= v <= 1.0 for v in rep["curves"][m].values())
    assert set(rep["curves_by_level"][m]) <= set(rep["levels"])
  assert set(rep["prm"]["aggregation_at_max_n"]) == {"last", "min", "prod"}
  for f in (
      "plots/verifiers.png",
      "prm/model",
      "orm/model",
      "prm/metrics.jsonl",
      "prm_labels/labels-00000.array_record",
      "verifiers/eval.json",
      "verifiers/scores.jsonl",
  ):
    assert os.path.exists(os.path.join(smoke_run, f)), f
  for k in ("prm_labels", "prm", "orm", "eval_verifiers"):
    assert rep["wall_seconds"][k] >= 0


def test_search_report_contract(smoke_run):
  with open(os.path.join(smoke_run, "report.json")) as f:
    rep = json.load(f)
  for m in ("beam_m4", "beam_sqrt", "lookahead_k1", "lookahead_k3", "dvts"):
    assert set(rep["curves"][m]) == {"4"}, m  # keyed by generation budget
    assert 0.0 <= rep["curves"][m]["4"] <= 1.0
    assert set(rep["curves_by_level"][m]) <= set(rep["levels"])
  st = rep["search"]["stats"]
  assert (st["lookahead_k1"]["4"]["n"], st["lookahead_k3"]["4"]["n"]) == (2, 1)
  assert set(rep["search"]["baselines"]) == {"majority", "prm_best_of_n_weighted"}
  with open(os.path.join(smoke_run, "search", "results.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 5 * rep["search"]["questions"]
  for r in rows:
    assert r["generations"] == 4 and len(r["candidate_answers"]) == r["n"]
    assert r["policy_flops"] > 0 and r["prm_flops"] > 0
  assert os.path.exists(os.path.join(smoke_run, "plots", "search.png"))


def test_revision_report_contract(smoke_run):
  with open(os.path.join(smoke_run, "report.json")) as f:
    rep = json.load(f)
  rv = rep["revision"]
  for prefix in ("revision", "revision_rl"):
    for kind in ("sequential", "parallel", "best_ratio"):
      for suffix in ("", "_majority"):
        c = rep["curves"][f"{prefix}_{kind}{suffix}"]
        assert set(c) == {"1", "2", "4"} and all(0.0 <= v <= 1.0 for v in c.values())
  for which in ("sft", "rl"):
    assert len(rv["pass_at_step"][which]) == 4
    assert 0.0 <= rv["right_to_wrong"][which] <= 1.0
    assert set(rv["splits"][which]["orm"]["4"]) == {"4x1", "2x2", "1x4"}
  assert rv["rl_vs_sft"]["budget"] == 4
  assert rv["rl_vs_sft"]["sequential_gain_standard_error"] >= 0.0
  assert -1.0 <= rv["rl_vs_sft"]["sequential_gain_majority"] <= 1.0
  assert rv["data"]["trajectories"] > 0 and rv["rl_train"]["final_metrics"]["step"] == 2
  with open(os.path.join(smoke_run, "revision_rl", "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert all("reward" in r and "kl" in r for r in rows) and "eval_reward" in rows[-1]
  for f in (
      "plots/revision.png",
      "plots/rl.png",
      "revision_sft/model",
      "revision_orm/model",
      "revision_rl/model",
      "revision_eval/chains_sft.jsonl",
      "revision_eval/eval.json",
      "revision_data/trajectories.array_record",
  ):
    assert os.path.exists(os.path.join(smoke_run, f)), f
  for k in (
      "revision_data",
      "revision_sft",
      "revision_chains",
      "revision_orm",
      "revision_rl",
      "eval_revision",
  ):
    assert rep["wall_seconds"][k] >= 0


def test_compute_optimal_report_contract(smoke_run):
  with open(os.path.join(smoke_run, "report.json")) as f:
    rep = json.load(f)
  co = rep["compute_optimal"]
  for fam, base in (("search", "best_of_n_weighted"), ("revision", "parallel")):
    for m in ("oracle", "predicted", base):
      assert set(co[fam][m]) == {"1", "2", "4"}, (fam, m)
      assert all(0.0 <= v <= 1.0 for v in co[fam][m].values())
    for m in ("oracle", "predicted"):
      eff = co["efficiency_vs_best_of_n"][fam][m]
      assert set(eff) == {"1", "2", "4", "max_ratio"}
      assert set(co["choices"][fam][m]) == {"0", "1"}  # smoke: 2 bins
  assert sum(co["bin_sizes"]["oracle"].values()) == co["questions"] == 6
  assert co["difficulty"]["cost"]["generations"] == 6 * 4
  assert set(rep["flops_matched"]) == {"0.16", "0.79", "22"}
  for r, row in rep["flops_matched"].items():
    assert set(row) == {"0", "1"}
    for x in row.values():
      assert x["allowed_budget"] > 1 and x["winner"] in ("test_time", "larger_model", "tie")
  f = rep["flops"]
  assert f["large_params"] > 2 * f["small_params"] and f["M"] == pytest.approx(
      f["large_params"] / f["small_params"]
  )
  assert 0.0 <= rep["large_model"]["pass_at_1"] <= 1.0
  for k in ("large_policy", "eval_large", "compute_optimal", "stages_total"):
    assert rep["wall_seconds"][k] >= 0
  for p in (
      "compute_optimal.png",
      "search_by_difficulty.png",
      "revision_by_difficulty.png",
      "flops_matched.png",
  ):
    assert os.path.exists(os.path.join(smoke_run, "plots", p)), p
  assert os.path.exists(os.path.join(smoke_run, "compute_optimal", "analysis.json"))
  with open(os.path.join(smoke_run, "report.md")) as f:
    assert "## Compute-optimal scaling" in f.read()


def test_verifier_ablation_report_contract(smoke_run):
  """verify.ablation=("exact",): a second PRM on the checker's step labels, evaluated,
  searched with and analysed like the main (monte_carlo) one."""
  with open(os.path.join(smoke_run, "report.json")) as f:
    rep = json.load(f)
  ab = rep["verifier_ablation"]
  assert set(ab) == {"monte_carlo", "exact"} and rep["verifier_ablation_main"] == "monte_carlo"
  assert rep["verify"]["label_source"] == "monte_carlo" and rep["verify"]["label"] == "soft"
  # the main source's figures are the main PRM's
  assert ab["monte_carlo"]["step_auroc"] == rep["prm"]["step_auroc"]
  assert ab["monte_carlo"]["first_error_accuracy"] == rep["prm"]["first_error_accuracy"]
  for src, r in ab.items():
    assert r["step_auroc"] is None or 0.0 <= r["step_auroc"] <= 1.0, src
    assert 0.0 <= r["first_error_accuracy"] <= 1.0, src
    for m in ("beam_m4", "dvts", "prm_best_of_n_weighted", "majority"):
      assert set(r["curves"][m]) == {"4"}, (src, m)
      assert all(0.0 <= v <= 1.0 for v in r["curves"][m].values())
    co = r["compute_optimal"]["search"]
    for m in ("oracle", "predicted", "best_of_n_weighted"):
      assert set(co[m]) == {"1", "2", "4"}, (src, m)
      assert all(0.0 <= v <= 1.0 for v in co[m].values())
    assert r["efficiency_max_ratio"] is None or r["efficiency_max_ratio"] > 0
    assert r["search_gain_budget"] == 4 and set(r["search_gain_by_bin"]) <= {"0", "1"}
    assert all(-1.0 <= g <= 1.0 for g in r["search_gain_by_bin"].values())
  # same questions and the same best-of-N baseline for every source; oracle bins alike
  assert ab["exact"]["curves"]["majority"] == ab["monte_carlo"]["curves"]["majority"]
  assert ab["exact"]["compute_optimal"]["questions"] == rep["compute_optimal"]["questions"]
  # on the same questions, the main source's analysis is the compute_optimal stage's
  assert (
      ab["monte_carlo"]["compute_optimal"]["search"]["oracle"]
      == rep["compute_optimal"]["search"]["oracle"]
  )
  assert ab["exact"]["train"]["train_labels"] > 0
  for f in (
      "plots/verifier_ablation.png",
      "prm_exact/model",
      "stages/verifier_ablation.json",
      "verifier_ablation/monte_carlo/analysis.json",
  ) + tuple(
      f"verifier_ablation/exact/{n}"
      for n in ("eval.json", "scores.jsonl", "results.jsonl", "analysis.json")
  ):
    assert os.path.exists(os.path.join(smoke_run, f)), f
  assert rep["wall_seconds"]["verifier_ablation"] >= 0
  with open(os.path.join(smoke_run, "report.md")) as f:
    assert "## Verifier ablation" in f.read()


def test_interrupted_verifier_ablation_resumes_after_finished_sources(smoke_run, capsys):
  """Without the stage marker (an interrupted stage), a source with done.json is not trained
  again and the stage's outputs are the same; another config's done.json is refused."""
  from ttc_jax import config as config_lib
  from ttc_jax.pipeline import Pipeline

  marker = os.path.join(smoke_run, "stages", "verifier_ablation.json")
  with open(marker) as f:
    before = json.load(f)
  os.remove(marker)
  pipe = Pipeline(config_lib.load_config(SMOKE), smoke_run, progress=False)
  try:
    assert pipe.stage_verifier_ablation() == before["outputs"]
    assert "exact: done before; skipped" in capsys.readouterr().out
    done = os.path.join(smoke_run, "verifier_ablation", "exact", "done.json")
    with open(done) as f:
      rec = json.load(f)
    with open(done, "w") as f:
      json.dump(dict(rec, hash="0" * 16), f)
    os.remove(marker)
    with pytest.raises(StageMismatchError, match="another config"):
      pipe.stage_verifier_ablation()
    with open(done, "w") as f:
      json.dump(rec, f)
  finally:
    with open(marker, "w") as f:
      json.dump(before, f)


def test_search_gain_is_the_best_method_minus_best_of_n_at_the_largest_common_budget():
  from ttc_jax.report.ablation import search_gain

  by_bin = {
      "best_of_n_weighted": {"0": {"1": 0.5, "4": 0.6, "16": 0.7}, "1": {"1": 0.1, "4": 0.2}},
      "beam_m4": {"0": {"4": 0.9, "64": 1.0}, "1": {"4": 0.1}},
      "dvts": {"0": {"4": 0.65}, "1": {"4": 0.4}},
  }
  g, gains = search_gain(by_bin)
  assert g == 4 and gains == pytest.approx({"0": 0.3, "1": 0.2})
  assert search_gain({"best_of_n_weighted": {"0": {"1": 0.5}}}) == (None, {})


def test_compute_optimal_policy_from_the_run(smoke_run):
  import jax
  from ttc_jax import config as config_lib
  from ttc_jax.pipeline import Pipeline

  pipe = Pipeline(config_lib.load_config(SMOKE), smoke_run, progress=False)
  pol = pipe.compute_optimal_policy()
  probs = pipe.problems("test", 1)
  recs = pol.solve(probs, 4, jax.random.key(0))
  assert len(recs) == len(probs) and all(r["generations"] == 4 for r in recs)
  assert {r["strategy"] for r in recs} <= set(pipe.cfg.search.methods) | {"best_of_n_weighted"}
  rev = pipe.compute_optimal_policy(family="revision")
  recs = rev.solve(probs, 4, jax.random.key(1))
  assert len(recs) == len(probs) and {r["strategy"] for r in recs} <= {"4x1", "2x2", "1x4"}


def test_rerun_skips_finished_stages(smoke_run, capsys):
  mtime = os.path.getmtime(os.path.join(smoke_run, "stages", "policy.json"))
  assert run.main(["--config", SMOKE, "--workdir", smoke_run, "--no_progress"]) == 0
  out = capsys.readouterr().out
  assert "[policy] done before" in out and "[eval_policy] done before" in out
  assert "[prm_labels] done before" in out and "[eval_verifiers] done before" in out
  assert "[revision_rl] done before" in out and "[eval_revision] done before" in out
  assert "[large_policy] done before" in out and "[compute_optimal] done before" in out
  assert os.path.getmtime(os.path.join(smoke_run, "stages", "policy.json")) == mtime


def test_changed_config_in_same_workdir_is_refused(smoke_run):
  with pytest.raises(StageMismatchError, match="stage 'policy'"):
    run.main(["--config", SMOKE, "--workdir", smoke_run, "--no_progress", "--config.train.lr=0.5"])
  # nothing finished was overwritten
  assert os.path.exists(os.path.join(smoke_run, "report.json"))
  with open(os.path.join(smoke_run, "config.json")) as f:
    assert json.load(f)["train"]["lr"] != 0.5


def test_bad_config_exits_with_message(tmp_path, capsys):
  assert run.main(["--config", SMOKE, "--workdir", str(tmp_path), "--config.train.stepz=1"]) == 2
  assert "unknown config field 'train.stepz'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    run.main(["--config", SMOKE, "--bogus"])


def test_verifier_plot_leaves_search_curves_out(tmp_path, monkeypatch):
  """The search curves (a question subset) are drawn only in search.png, not verifiers.png."""
  import matplotlib.axes
  from ttc_jax import report

  drawn = []
  monkeypatch.setattr(
      matplotlib.axes.Axes, "plot", lambda self, *a, **kw: drawn.append(kw.get("label"))
  )
  os.makedirs(tmp_path / "plots")
  rep = {
      "curves": {
          "majority": {"1": 0.5},
          "prm_best_of_n_weighted": {"1": 0.6},
          "beam_m4": {"4": 0.4},
      },
      "prm": {"step_auroc": 0.8},
  }
  report.plot_verifiers(rep, str(tmp_path))
  assert drawn == ["majority", "prm_best_of_n_weighted"]


def test_sft_replay_rows_are_plain_policy_rows_of_unused_questions(smoke_run):
  """`revision.sft.replay_fraction`: f / (1 - f) rows per trajectory, a plain prompt and a
  step-exact reference solution each, from questions neither the revision data nor the SFT
  chains use."""
  from ttc_jax import config as config_lib
  from ttc_jax.pipeline import Pipeline
  from ttc_jax.revision import format as fmt
  from ttc_jax.tasks import arith

  cfg = config_lib.load_config(SMOKE, ["--config.revision.sft.replay_fraction=0.0"])
  assert Pipeline(cfg, smoke_run, progress=False)._sft_replay(10) == []
  cfg = config_lib.load_config(SMOKE, ["--config.revision.sft.replay_fraction=0.5"])
  pipe = Pipeline(cfg, smoke_run, progress=False)
  rows = pipe._sft_replay(10)
  n_levels = len(pipe.levels)
  assert 10 <= len(rows) < 10 + n_levels
  r = cfg.revision
  used = {p["question"] for p in pipe.problems("train", r.data.questions_per_level)}
  used |= {
      p["question"]
      for p in pipe.problems("train", r.chains.questions_per_level, skip=r.chains.skip_questions)
  }
  for row in rows:
    q = row["prompt"][:-1]
    assert row["prompt"] == q + "\n" and q not in used
    assert arith.check_solution(q, row["target"]).all_correct
  # replay_foreign_fraction: some rows read their question back across other questions'
  # attempts (from the training trajectories); the targets stay the same rows'
  trajs = pipe._trajectories()
  cfg = config_lib.load_config(
      SMOKE,
      [
          "--config.revision.sft.replay_fraction=0.5",
          "--config.revision.sft.replay_foreign_fraction=1.0",
      ],
  )
  foreign = Pipeline(cfg, smoke_run, progress=False)._sft_replay(10, trajs)
  assert [r["target"] for r in foreign] == [r["target"] for r in rows]
  assert any(r.get("foreign") for r in foreign)
  attempts = {a for t in trajs for a in t["attempts"]}
  for r in foreign:
    if r.get("foreign"):
      assert (
          r["prompt"].startswith(r["question"] + "\n")
          and len(r["prompt"]) <= cfg.revision.sft.seq_len
      )
      ctx = r["prompt"][len(r["question"]) + 1 :].split(fmt.SEPARATOR)[:-1]
      assert len(ctx) == r["foreign"] and set(ctx) <= attempts


if __name__ == "__main__":
  import sys

  with open(os.path.join(sys.argv[1], "report.json")) as f:
    print(json.dumps(sorted(report_key_paths(json.load(f))), indent=0))
