"""The compute-optimal study of a finished run: artifacts in, analysis dict out.

Reads from the run directory: eval/samples.jsonl (policy samples: oracle
difficulty and the best-of-N baseline), verifiers/scores.jsonl (PRM scores:
predicted difficulty, best-of-N weighted), search/results.jsonl (search
kernels), revision_eval/chains_{sft,rl}.jsonl (revision chains with ORM
scores) and large_eval/greedy.jsonl (the larger model). The analysed
questions are those present in all of them (the first `search.questions_per_level`
of each level). Both families use the same difficulty bins, from the policy's
samples (oracle) or their PRM scores (predicted).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ttc_jax import io_utils
from ttc_jax.compute_optimal import analysis, difficulty, flops, tables
from ttc_jax.search.sweep import METHODS
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer


@dataclasses.dataclass(frozen=True)
class StudySettings:
  """What the study reads of a run's configuration.

  num_bins, num_folds, seed: the difficulty bins and the cross-validation of the per-bin
  choice (config `compute_optimal`); r_values: the ratios R of inference to pre-training
  tokens of the FLOPs-matched comparison; aggregation: step scores -> a solution's score
  (config `verify.aggregation`); best_of_n_budgets: the best-of-N baseline's N (config
  `eval.majority_ns`); revision_budgets: the revision families' budgets (config
  `revision.eval.budgets`; read only with revisions); pretrain_tokens: D_pretrain of both
  models, needed only with a larger model (None without one).
  """

  num_bins: int
  num_folds: int
  seed: int
  r_values: tuple[float, ...]
  aggregation: str
  best_of_n_budgets: tuple[int, ...]
  revision_budgets: tuple[int, ...] = ()
  pretrain_tokens: float | None = None


def _read(workdir: str, *parts: str) -> list[dict]:
  path = os.path.join(workdir, *parts)
  if not os.path.exists(path):
    raise FileNotFoundError(f"compute-optimal analysis needs {path}: run its stage first")
  return io_utils.read_jsonl(path)


def _search_family(samples, scores, results, questions, co: StudySettings, equivalent):
  """(sample rows, difficulty measures, search-family analysis) over `questions`: oracle bins
  from the policy samples, predicted bins from the PRM scores (key "prm"), best-of-N weighted
  (baseline) and the search kernels' results."""
  rows = tables.by_question(samples, questions, "eval_policy samples")
  final = tables.final_scores(scores, questions, "prm", co.aggregation)
  measures = dict(
      oracle=difficulty.oracle_pass_at_1([r["sample_correct"] for r in rows]),
      predicted=difficulty.predicted_score(final),
  )
  bon_budgets = list(co.best_of_n_budgets)
  search = tables.search_table(results, questions)
  search[tables.BASELINE] = tables.best_of_n_table(rows, final, questions, bon_budgets, equivalent)
  s_budgets = sorted(set(search[tables.BASELINE]) | {n for m in search.values() for n in m})
  s_order = [tables.BASELINE] + [m for m in METHODS if m in search]
  analysed = analysis.analyse(
      search,
      s_order,
      s_budgets,
      {n: tables.BASELINE for n in search[tables.BASELINE]},
      measures,
      num_bins=co.num_bins,
      num_folds=co.num_folds,
      seed=co.seed,
  )
  return rows, measures, analysed


def search_study(
    samples: list[dict],
    scores: list[dict],
    results: list[dict],
    settings: StudySettings,
    equivalent=arith.equivalent,
    questions: list[str] | None = None,
) -> dict:
  """The search family alone, from in-memory rows (eval_policy samples, scores.jsonl rows of
  one PRM, search results.jsonl rows guided by it): {questions, search}, as strict JSON.
  `questions` (default: those common to the three) fixes the analysed questions, e.g. to
  compare PRMs on the same ones. The verifier ablation's analysis of each PRM."""
  if questions is None:
    questions = search_questions(samples, scores, results)
  if len(questions) < settings.num_bins * settings.num_folds:
    raise ValueError(
        f"only {len(questions)} questions are common to the search and policy evaluations: "
        f"too few for {settings.num_bins} bins x {settings.num_folds} folds"
    )
  _, _, search = _search_family(samples, scores, results, questions, settings, equivalent)
  return io_utils.as_json(dict(questions=len(questions), search=search))


def search_questions(samples: list[dict], scores: list[dict], results: list[dict]) -> list[str]:
  """The questions common to policy samples, PRM scores and search results."""
  return tables.common_questions(
      [r["question"] for r in results],
      [r["question"] for r in samples],
      [r["question"] for r in scores],
  )


def run_study(
    workdir: str,
    settings: StudySettings,
    model_cfg,
    large_cfg=None,
    tokenizer=None,
    equivalent=arith.equivalent,
    revisions: bool = True,
) -> dict:
  """The analysis as strict JSON: string keys; difficulty bins "0" (easiest) .. "4".

  revisions=False leaves out the revision families (a run without revision
  stages); large_cfg=None leaves out the FLOPs-matched comparison (no larger
  model). `tokenizer` counts tokens for the difficulty cost (default: the
  arith character tokenizer); `equivalent` is the task's answer equivalence.
  """
  co = settings
  tokenizer = tokenizer or CharTokenizer()
  samples = _read(workdir, "eval", "samples.jsonl")
  scores = _read(workdir, "verifiers", "scores.jsonl")
  results = _read(workdir, "search", "results.jsonl")
  chains = (
      {w: _read(workdir, "revision_eval", f"chains_{w}.jsonl") for w in ("sft", "rl")}
      if revisions
      else {}
  )
  large = _read(workdir, "large_eval", "greedy.jsonl") if large_cfg is not None else None
  questions = tables.common_questions(
      [r["question"] for r in results],
      [r["question"] for r in samples],
      [r["question"] for r in scores],
      *[[r["question"] for r in c] for c in chains.values()],
      *([[r["question"] for r in large]] if large else []),
  )
  if len(questions) < co.num_bins * co.num_folds:
    raise ValueError(
        f"only {len(questions)} questions are common to the search, revision and "
        f"policy evaluations: too few for {co.num_bins} bins x {co.num_folds} folds"
    )
  rows, measures, search = _search_family(samples, scores, results, questions, co, equivalent)
  kw = dict(num_bins=co.num_bins, num_folds=co.num_folds, seed=co.seed)
  out = dict(questions=len(questions), search=search)

  # Revision family: C x L splits with the revision ORM; parallel (N x 1) is the baseline.
  r_budgets = list(co.revision_budgets) if revisions else []
  for which in chains:
    table, order = tables.revision_table(chains[which], questions, r_budgets, equivalent)
    key = "revision" if which == "sft" else "revision_rl"
    out[key] = analysis.analyse(
        table, order, r_budgets, {n: f"{n}x1" for n in r_budgets}, measures, **kw
    )

  # Difficulty estimation cost (policy samples; PRM scoring for the predicted bins).
  s_tokens = sum(len(tokenizer.encode(t)) + 1 for r in rows for t in r["samples"])
  p_tokens = sum((len(tokenizer.encode(r["prompt"])) + 1) * len(r["samples"]) for r in rows)
  out["difficulty"] = dict(
      cost=difficulty.estimation_cost(
          len(rows),
          len(rows[0]["samples"]),
          s_tokens,
          p_tokens,
          model_cfg.num_params,
          model_cfg.num_params,
      ),
      oracle_mean_by_bin=dict(out["search"]["oracle"]["bin_mean_value"]),
      predicted_mean_by_bin=dict(out["search"]["predicted"]["bin_mean_value"]),
      bin_agreement=float(
          np.mean(
              np.asarray(out["search"]["oracle"]["bins"])
              == np.asarray(out["search"]["predicted"]["bins"])
          )
      ),
  )

  if large is None:
    return io_utils.as_json(out)
  # FLOPs-matched: the small model's compute-optimal strategy (oracle bins) vs large greedy.
  if co.pretrain_tokens is None:
    raise ValueError("the FLOPs-matched comparison needs StudySettings.pretrain_tokens")
  pretrain_tokens = co.pretrain_tokens
  large_ok = tables.per_question(large, questions, "greedy_correct")
  small_greedy = tables.per_question(rows, questions, "greedy_correct")
  bins = np.asarray(out["search"]["oracle"]["bins"])
  large_by_bin = {int(b): float(np.mean(large_ok[bins == b])) for b in np.unique(bins)}
  r_values = list(co.r_values)
  out["flops"] = dict(
      small_params=model_cfg.num_params,
      large_params=large_cfg.num_params,
      M=large_cfg.num_params / model_cfg.num_params,
      pretrain_tokens=pretrain_tokens,
      pretrain_flops_small=flops.pretrain_flops(model_cfg.num_params, pretrain_tokens),
      pretrain_flops_large=flops.pretrain_flops(large_cfg.num_params, pretrain_tokens),
      exchange={
          f"{r:g}": v
          for r, v in flops.exchange(
              model_cfg.num_params, large_cfg.num_params, pretrain_tokens, r_values
          ).items()
      },
      large_greedy=float(np.mean(large_ok)),
      small_greedy=float(np.mean(small_greedy)),
      large_greedy_by_bin=dict(large_by_bin),
      small_greedy_by_bin=dict(
          {int(b): float(np.mean(small_greedy[bins == b])) for b in np.unique(bins)}
      ),
  )
  for key, fam in (("flops_matched", "search"), ("flops_matched_revision", "revision")):
    if fam not in out:
      continue
    fm = flops.flops_matched(
        out[fam]["oracle"]["by_bin"],
        large_by_bin,
        model_cfg.num_params,
        large_cfg.num_params,
        pretrain_tokens,
        r_values,
    )
    out[key] = {f"{r:g}": dict(v) for r, v in fm.items()}
  return io_utils.as_json(out)
