"""The main job for a local Hugging Face policy + PRM on GSM8K / MATH: its stages and the
`TextPipeline` facade.

  <workdir>/tfds/                    stage `data`: the task's TFDS dataset from data.manual_dir
  <workdir>/eval/                    stage `eval_policy`: policy_eval.json, samples.jsonl
                                     (greedy + eval.num_samples samples per test question)
  <workdir>/verifiers/               stage `score_samples`: scores.jsonl (per question
                                     {question, prm: [per-sample step scores]}), eval.json
  <workdir>/search/                  stage `eval_search`: eval.json, results.jsonl
  <workdir>/large_eval/              stage `eval_large` (only with hf.large_policy): greedy.jsonl
  <workdir>/compute_optimal/         stage `compute_optimal`: analysis.json
  <workdir>/processbench/            stage `processbench` (only with processbench.data_dir):
                                     eval.json, the PRM on ProcessBench's split of the task
  <workdir>/stages/<name>.json, report.json, report.md, plots/*.png

Nothing is trained: the policy, the PRM (a ttc_jax value model or a public PRM
through `models.external_prm`) and the optional larger policy are loaded from
local directories onto `cfg.mesh` (`hf.param_dtype` float32 or bfloat16)
(`text_context.make_context`). eval_policy, eval_search, eval_large and
compute_optimal are the arith pipeline's run functions over the text context.
Prompts come from `cfg.prompt` (`text_context.build_prompt`); the model's text
is cut at `prompt.stop_strings` before grading and scoring. A step ends at
`hf.step_delimiter` ("\\n" for GSM8K, "\\n\\n" for MATH: one token of the
policy's tokenizer), or any token holding it, for the PRM's step scores and the
search kernels alike. An external PRM reads the question and the steps in its own
model-card format with its own tokenizer (`text_context.load_external_prm`): in
score_samples and processbench on the host, in the search through
`text_context.search_prm` (the kernels when the vocabularies agree, else
`search.bridge`).
"""

from __future__ import annotations

import os
import time

import ml_collections
import numpy as np

from ttc_jax import config as config_lib
from ttc_jax import io_utils, report
from ttc_jax.pipeline import compute_optimal, policy, verifiers
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.stage import Stage, StagedRun, by_name
from ttc_jax.pipeline.text_context import (
    build_prompt,
    load_external_prm,
    load_hf_model,
    load_prm,
    make_context,
    shot_answer,
    trim,
)
from ttc_jax.prm import evaluate, processbench, processbench_load
from ttc_jax.selection import best_of_n

__all__ = ["STAGES", "TextPipeline", "build_prompt", "shot_answer"]

_HF_POLICY = (
    "policy",
    "tokenizer",
    "param_dtype",
    "dtype",
    "max_len",
    "eos_token",
    "step_delimiter",
)


# --- sections: the hashes of existing run directories depend on them -------------------------


def data_sections(cfg) -> dict:
  from ttc_jax.data import text_files

  task = cfg.task.name
  spec = text_files.TextDataSpec(
      task, os.path.abspath(cfg.data.manual_dir), text_files.PROMPT_TEMPLATES[task]
  )
  return dict(task=cfg.task.to_dict(), data=spec.config_name())


def policy_sections(cfg) -> dict:
  h = cfg.hf
  return dict(
      data_sections(cfg),
      seed=cfg.seed,
      prompt=cfg.prompt.to_dict(),
      hf={k: h[k] for k in _HF_POLICY},
  )


def prm_sections(cfg) -> dict:
  h = cfg.hf
  return dict(
      policy_sections(cfg),
      eval=cfg.eval.to_dict(),
      verify=cfg.verify.to_dict(),
      prm={k: h[k] for k in h if k.startswith("prm")},
  )


def processbench_sections(cfg) -> dict:
  h = cfg.hf
  return dict(
      hf={k: h[k] for k in _HF_POLICY},
      prm={k: h[k] for k in h if k.startswith("prm")},
      prompt=cfg.prompt.to_dict(),
      processbench=cfg.processbench.to_dict(),
  )


# --- the text pipeline's own stages -----------------------------------------------------------


def _data(ctx: RunContext) -> dict:
  b = ctx.builder()
  return dict(
      data_dir=os.fspath(b.data_dir),
      **{f"num_{s}": int(v.num_examples) for s, v in b.info.splits.items()},
  )


def score_samples(ctx: RunContext) -> dict:
  """The PRM's step scores of the eval_policy samples; best-of-N selection curves."""
  e, v = ctx.cfg.eval, ctx.cfg.verify
  records = io_utils.read_jsonl(ctx.path("eval", "samples.jsonl"))
  t0 = time.perf_counter()
  if ctx.cfg.hf.prm_type == "value_model":
    flat = evaluate.score_solutions(
        ctx.load_prm(),
        ctx.tokenizer,
        [r["prompt"] for r in records for _ in r["samples"]],
        [trim(ctx.cfg, t) for r in records for t in r["samples"]],
        batch_size=v.score_batch,
        mesh=ctx.mesh,
    )
  else:  # an external PRM reads each solution in its own format, with its own tokenizer
    delim = ctx.cfg.hf.step_delimiter
    items = [
        dict(
            problem=r["question"],
            steps=[s for s in evaluate.text_steps(trim(ctx.cfg, t), delim) if s.strip()],
        )
        for r in records
        for t in r["samples"]
    ]
    prm = load_external_prm(ctx.cfg, ctx.mesh)
    flat, _ = processbench_load.score_items(prm, items, batch_size=int(v.score_batch))
  dt = time.perf_counter() - t0
  starts = np.cumsum([0] + [len(r["samples"]) for r in records])
  per_q = [flat[s : s + len(r["samples"])] for r, s in zip(records, starts)]
  io_utils.atomic_write_jsonl(
      ctx.path("verifiers", "scores.jsonl"),
      [dict(question=r["question"], prm=s) for r, s in zip(records, per_q)],
  )
  ns, eq = tuple(int(n) for n in e.majority_ns), ctx.equivalent

  def curves(idx):
    return best_of_n.selection_curves(
        [records[i] for i in idx],
        {"prm": [s for i in idx for s in per_q[i]]},
        ns,
        eq,
        v.aggregation,
    )

  out = dict(
      curves=curves(range(len(records))),
      scoring_seconds=dt,
      scored_solutions=sum(bool(s) for s in flat),
      solutions=len(flat),
      curves_by_level={
          lv: curves([i for i, r in enumerate(records) if r["level"] == lv]) for lv in ctx.levels
      },
  )
  io_utils.atomic_write_json(ctx.path("verifiers", "eval.json"), out)
  return out


def run_processbench(ctx: RunContext) -> dict:
  """The PRM's ProcessBench F1 on the task's split (`prm.processbench`): problems written
  with the run's prompt (no few-shot examples); the threshold is processbench.threshold,
  or (when negative) the best one on the other split."""
  c, pb = ctx.cfg, ctx.cfg.processbench
  pc, task = c.prompt, c.task.name
  if c.hf.prm_type == "value_model":  # the run's prompt, read at our delimiters
    prm = processbench_load.LoadedPRM(
        load_prm(c, ctx.tokenizer, ctx.model_cfg, ctx.mesh),
        ctx.tokenizer,
        c.hf.prm_type,
        lambda problem: build_prompt(pc, task, problem),
    )
  else:  # its own tokenizer and model-card format
    prm = load_external_prm(c, ctx.mesh)
  threshold = float(pb.get("threshold", -1.0))
  out = processbench.run(
      prm,
      [task],
      pb.data_dir,
      threshold if threshold >= 0 else None,
      int(pb.get("limit", 0)) or None,
      int(c.verify.score_batch),
  )
  io_utils.atomic_write_json(ctx.path("processbench", "eval.json"), processbench.json_safe(out))
  return processbench.json_safe(out)


STAGES: tuple[Stage, ...] = (
    Stage("data", data_sections, _data, (), ("tfds",)),
    Stage(
        "eval_policy",
        lambda c: dict(policy_sections(c), eval=c.eval.to_dict()),
        policy.eval_policy,
        ("data",),
        ("eval",),
    ),
    Stage("score_samples", prm_sections, score_samples, ("eval_policy",), ("verifiers",)),
    Stage(
        "eval_search",
        lambda c: dict(prm_sections(c), search=config_lib.search_section(c.search)),
        verifiers.eval_search,
        ("score_samples",),
        ("search",),
    ),
    Stage(
        "eval_large",
        lambda c: dict(policy_sections(c), eval=c.eval.to_dict(), large_policy=c.hf.large_policy),
        policy.eval_large,
        ("data",),
        ("large_eval",),
    ),
    Stage(
        "compute_optimal",
        lambda c: dict(
            prm_sections(c),
            search=config_lib.search_section(c.search),
            compute_optimal=c.compute_optimal.to_dict(),
            large_policy=c.hf.large_policy,
        ),
        lambda ctx: compute_optimal.analysis(ctx, revisions=False),
        ("eval_search", "eval_large"),
        ("compute_optimal",),
    ),
    Stage("processbench", processbench_sections, run_processbench, (), ("processbench",)),
)
STAGE = by_name(STAGES)


class TextPipeline(StagedRun):
  """Runs `STAGES` for `cfg` (configs/gsm8k_hf.py, configs/math_hf.py) in `workdir`."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str, progress: bool = True):
    config_lib.validate(cfg)
    self.cfg, self.progress = cfg, progress
    self.task = cfg.task.name
    self.ctx = make_context(cfg, workdir, progress)
    self.tokenizer, self.model_cfg, self.mesh = (
        self.ctx.tokenizer,
        self.ctx.model_cfg,
        self.ctx.mesh,
    )
    self._init_run(workdir)

  @property
  def levels(self) -> list[str]:
    """The eval questions' levels (set by `run` once the data stage ran)."""
    return self.ctx.levels

  @levels.setter
  def levels(self, value: list[str]) -> None:
    self.ctx.levels = value

  # --- models, data and prompts -----------------------------------------------------

  def load_policy(self, path: str | None = None):
    """The policy (or the model at `path`) as a `Transformer` on this run's mesh."""
    return load_hf_model(self.cfg, self.mesh, path or self.cfg.hf.policy)

  def load_prm(self, remap: bool = True):
    """The PRM named by cfg.hf (see `text_context.load_prm`)."""
    return load_prm(self.cfg, self.tokenizer, self.model_cfg, self.mesh, remap=remap)

  def builder(self):
    return self.ctx.builder()

  def problems(self, limit: int | None = None) -> list[dict]:
    """The first `limit` (default eval.questions) questions of task.split with their prompts."""
    return self.ctx.problems(limit)

  def trim(self, text: str) -> str:
    return trim(self.cfg, text)

  def extract(self, text: str):
    return self.ctx.extract_answer(text)

  def _policy_sections(self) -> dict:
    return policy_sections(self.cfg)

  def _prm_sections(self) -> dict:
    return prm_sections(self.cfg)

  # --- stages -----------------------------------------------------------------------

  def stage_data(self) -> dict:
    return self._run(STAGE["data"])

  def stage_eval_policy(self) -> dict:
    return self._run(STAGE["eval_policy"])

  def stage_score_samples(self) -> dict:
    return self._run(STAGE["score_samples"])

  def stage_eval_search(self) -> dict:
    return self._run(STAGE["eval_search"])

  def stage_eval_large(self) -> dict:
    """Greedy pass@1 of hf.large_policy on the eval questions (large_eval/greedy.jsonl)."""
    return self._run(STAGE["eval_large"])

  def stage_compute_optimal(self) -> dict:
    return self._run(STAGE["compute_optimal"])

  def stage_processbench(self) -> dict | None:
    """The PRM's ProcessBench F1 (`run_processbench`) when processbench.data_dir is set;
    None otherwise."""
    pb = self.cfg.get("processbench")
    if pb is None or not pb.get("data_dir"):
      return None
    return self._run(STAGE["processbench"])

  # --- everything -------------------------------------------------------------------

  def run(self) -> dict:
    t0 = time.perf_counter()
    c = self.cfg
    data = self.stage_data()
    self.levels = sorted({p["level"] for p in self.problems()}, key=lambda s: (len(s), s))
    ev = self.stage_eval_policy()
    scored = self.stage_score_samples()
    search = self.stage_eval_search()
    optimal = {}
    if c.hf.large_policy:  # the analysis reads large_eval/greedy.jsonl
      optimal.update(
          large_eval=self.stage_eval_large(),
          large=dict(
              checkpoint=c.hf.large_policy, train_tokens=float(c.compute_optimal.pretrain_tokens)
          ),
      )
    optimal["analysis"] = self.stage_compute_optimal()
    bench = self.stage_processbench()
    pol = dict(num_params=self.model_cfg.num_params, final_metrics=None, checkpoint=c.hf.policy)
    rep = report.build_report(
        c,
        self.levels,
        data,
        pol,
        ev,
        dict(self.wall),
        time.perf_counter() - t0,
        search=search,
        compute_optimal=optimal,
    )
    report.merge_curves(
        rep, *report.curve_sets(scored["curves"], scored["curves_by_level"], skip=("majority",))
    )
    rep["policy"]["checkpoint"] = c.hf.policy
    rep["verifier"] = dict(
        prm=c.hf.prm,
        prm_type=c.hf.prm_type,
        aggregation=c.verify.aggregation,
        scoring_seconds=scored["scoring_seconds"],
        scored_solutions=scored["scored_solutions"],
        solutions=scored["solutions"],
    )
    if bench is not None:
      rep["processbench"] = {
          s: {
              k: v[k]
              for k in ("acc_err", "acc_cor", "f1", "threshold", "threshold_source", "items")
          }
          for s, v in bench["splits"].items()
      }
    io_utils.atomic_write_json(self.path("config.json"), c.to_dict())
    report.write_report(self.workdir, rep)
    return rep
