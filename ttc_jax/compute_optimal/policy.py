"""ComputeOptimalPolicy: answer new questions with the strategy chosen for their predicted bin.

At inference time nothing about a new question is known but its text, so the
policy (1) predicts its difficulty the way the analysis did without ground
truth: `difficulty_samples` policy samples, scored by the PRM, their mean
final-answer score placed against the analysis' thresholds
(`difficulty.assign`); (2) looks up the strategy chosen for that bin and the
budget (`select.fit_choices` on all analysed questions); (3) runs it:
best-of-N weighted (N samples, PRM-scored), one of the search kernels
(`search.sweep.run_method`), or a revision split "CxL" (C chains of L
attempts, through the `revise(problems, c, l, rng) -> answers` callable the
pipeline builds from its revision model and ORM). Questions are batched per
(bin, strategy).

Cost records separate the difficulty estimate from the strategy's own
generations, as report.json does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from ttc_jax import evaluation
from ttc_jax.compute_optimal import difficulty
from ttc_jax.compute_optimal.tables import revision_split
from ttc_jax.prm import evaluate as prm_eval
from ttc_jax.search import beam, sweep
from ttc_jax.selection import best_of_n

BEST_OF_N = "best_of_n_weighted"


@dataclasses.dataclass(frozen=True)
class PolicySearchSettings:
  """The search kernels' knobs when a bin's strategy is a search method (`sweep.run_method`).

  At most max_rounds steps of at most max_step_tokens tokens, max_new_tokens in all (None:
  the policy's `max_new_tokens`), sampled at `temperature` (None: the policy's); top-k and
  top-p are off. compact_levels: the kernels' cache compaction (speed only).
  """

  max_rounds: int = 12
  max_step_tokens: int = 16
  max_new_tokens: int | None = None
  temperature: float | None = None
  compact_levels: int = beam.COMPACT_LEVELS


@dataclasses.dataclass
class ComputeOptimalPolicy:
  """policy / prm: a Transformer and a ValueModel; choices: {bin: {budget: strategy}};
  search: the knobs of the search strategies."""

  policy: Any
  prm: Any
  tokenizer: Any
  thresholds: Sequence[float]
  choices: Mapping[int, Mapping[int, str | None]]
  extract_answer: Callable[[str], Any]
  equivalent: Callable[[Any, Any], bool]
  difficulty_samples: int = 16
  temperature: float = 0.7
  max_new_tokens: int = 112
  aggregation: str = "last"
  search: PolicySearchSettings = PolicySearchSettings()
  max_batch: int = 1024
  mesh: Any = None
  revise: Callable[[Sequence[dict], int, int, jax.Array], list] | None = None

  @classmethod
  def from_analysis(
      cls,
      analysis: Mapping,
      policy,
      prm,
      tokenizer,
      *,
      measure: str = "predicted",
      family: str = "search",
      **kw,
  ) -> "ComputeOptimalPolicy":
    """From compute_optimal/analysis.json: `family` (search, revision, revision_rl) choices
    under `measure` (predicted or oracle) bins."""
    if family not in analysis:
      raise ValueError(
          f"analysis has no {family!r} family; it has "
          f"{sorted(k for k in analysis if isinstance(analysis[k], dict))}"
      )
    if measure not in ("oracle", "predicted"):
      raise ValueError(f"difficulty measure must be 'oracle' or 'predicted', got {measure!r}")
    a = analysis[family][measure]
    choices = {int(b): {int(n): s for n, s in per.items()} for b, per in a["choices"].items()}
    return cls(
        policy=policy,
        prm=prm,
        tokenizer=tokenizer,
        thresholds=a["thresholds"],
        choices=choices,
        **kw,
    )

  def budgets(self) -> list[int]:
    return sorted({n for per in self.choices.values() for n in per})

  def strategy(self, bin_: int, budget: int) -> str:
    per = self.choices.get(int(bin_), {})
    s = per.get(int(budget))
    if s is None:
      raise ValueError(
          f"no strategy was chosen for budget {budget} in bin {bin_}; "
          f"analysed budgets: {self.budgets()}"
      )
    return s

  def _final_scores(self, problems: Sequence[dict], texts: Sequence[Sequence[str]]):
    prompts = [p["prompt"] for p, ts in zip(problems, texts) for _ in ts]
    flat = prm_eval.score_solutions(
        self.prm, self.tokenizer, prompts, [t for ts in texts for t in ts], mesh=self.mesh
    )
    agg = best_of_n.solution_scores(flat, self.aggregation)
    out, pos = [], 0
    for ts in texts:
      out.append(agg[pos : pos + len(ts)])
      pos += len(ts)
    return out

  def _sample(self, problems, n: int, rng) -> tuple[list[list[str]], dict]:
    return evaluation.sample_texts(
        self.policy,
        self.tokenizer,
        [p["prompt"] for p in problems],
        rng,
        num_samples=n,
        max_new_tokens=self.max_new_tokens,
        temperature=self.temperature,
        max_batch=self.max_batch,
        mesh=self.mesh,
    )

  def predict_bins(self, problems: Sequence[dict], rng: jax.Array) -> tuple[np.ndarray, dict]:
    """Bins [P] (0 = easiest) and the cost of predicting them."""
    texts, st = self._sample(problems, self.difficulty_samples, rng)
    scores = difficulty.predicted_score(self._final_scores(problems, texts))
    return difficulty.assign(scores, self.thresholds), dict(
        generations=len(problems) * self.difficulty_samples,
        generated_tokens=st["generated_tokens"],
        scores=scores.tolist(),
    )

  def solve(self, problems: Sequence[dict], budget: int, rng: jax.Array) -> list[dict]:
    """One record per problem: answer, bin, strategy, generations, difficulty cost share."""
    bins, cost = self.predict_bins(problems, jax.random.fold_in(rng, 0))
    out: list[dict | None] = [None] * len(problems)
    groups: dict[str, list[int]] = {}
    for i, b in enumerate(bins):
      groups.setdefault(self.strategy(int(b), budget), []).append(i)
    for g, (strat, idx) in enumerate(sorted(groups.items())):
      part = [problems[i] for i in idx]
      key = jax.random.fold_in(rng, g + 1)
      split = revision_split(strat)
      if split is not None:
        if self.revise is None:
          raise ValueError(f"strategy {strat!r} needs revision chains: pass `revise`")
        answers = self.revise(part, split[0], split[1], key)
        recs = [dict(answer=a, generations=float(budget)) for a in answers]
      elif strat == BEST_OF_N:
        texts, _ = self._sample(part, budget, key)
        scores = self._final_scores(part, texts)
        recs = [
            dict(
                answer=best_of_n.best_of_n_weighted(
                    [self.extract_answer(t) for t in ts], sc, self.equivalent
                ),
                generations=float(budget),
            )
            for ts, sc in zip(texts, scores)
        ]
      else:
        s = self.search
        res = sweep.run_method(
            self.policy,
            self.prm,
            self.tokenizer,
            part,
            strat,
            budget,
            key,
            extract_answer=self.extract_answer,
            equivalent=self.equivalent,
            max_rounds=s.max_rounds,
            max_step_tokens=s.max_step_tokens,
            max_new_tokens=(self.max_new_tokens if s.max_new_tokens is None else s.max_new_tokens),
            temperature=self.temperature if s.temperature is None else s.temperature,
            compact_levels=s.compact_levels,
            mesh=self.mesh,
        )
        if res is None:
          raise ValueError(f"strategy {strat!r} cannot spend a budget of {budget}")
        recs = [dict(answer=r["answer"], generations=r["generations"]) for r in res[0]]
      for i, r in zip(idx, recs):
        out[i] = dict(
            r,
            bin=int(bins[i]),
            strategy=strat,
            difficulty_generations=self.difficulty_samples,
            predicted_score=cost["scores"][i],
        )
    return out
