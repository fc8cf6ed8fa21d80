"""The main job for a local Hugging Face policy + PRM on GSM8K / MATH, as resumable stages.

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
local directories onto `cfg.mesh` (`hf.param_dtype` float32 or bfloat16).
Prompts come from `cfg.prompt` (plain template, few-shot from the first
training examples, or chat markup; `tokenizers.hf` templates); the model's text
is cut at `prompt.stop_strings` before grading and scoring. A step ends at
`hf.step_delimiter` ("\\n" for GSM8K, "\\n\\n" for MATH: one token of the
policy's tokenizer), for the PRM's step scores and the search kernels alike.
Stage bookkeeping (skip when done, error on another config) is `stages.Stages`.
"""

from __future__ import annotations

import os
import re
import time

import jax
import ml_collections
import numpy as np

from ttc_jax import config as config_lib
from ttc_jax import evaluation, grading, io_utils, parallel, report
from ttc_jax.tokenizers.hf import HFTokenizer, chat_prompt, few_shot_prompt
from ttc_jax.models import hf
from ttc_jax.stages import Stages


def shot_answer(task: str, solution: str) -> str:
  """A reference solution as a few-shot answer: GSM8K's `<<a*b=c>>` calculator notes
  dropped and its `#### N` line written as "The answer is N."."""
  if task != "gsm8k":
    return solution
  text = re.sub(r"<<[^>]*>>", "", solution)
  return re.sub(r"\n?####\s*(.+)\s*$", lambda m: f"\nThe answer is {m.group(1).strip()}.", text)


def build_prompt(pc, task: str, question: str, shots=()) -> str:
  """The prompt for `question` under cfg.prompt `pc`; shots: ((question, solution), ...)."""
  if pc.style == "plain":
    return pc.template.replace("{question}", question)
  if pc.style == "few_shot":
    return few_shot_prompt([(q, shot_answer(task, s)) for q, s in shots], question,
                           question_format=pc.question_format,
                           answer_format=pc.answer_format, separator=pc.separator)
  messages = ([dict(role="system", content=pc.system)] if pc.system else []) + [
      dict(role="user", content=pc.user_format.replace("{question}", question))]
  return chat_prompt(messages, pc.chat_style)


class TextPipeline(Stages):
  """Runs the stages above for `cfg` (configs/gsm8k_hf.py, configs/math_hf.py) in `workdir`."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str, progress: bool = True):
    config_lib.validate(cfg)
    self.cfg, self.progress = cfg, progress
    h = cfg.hf
    self.task = cfg.task.name
    self.grader = grading.get_grader(self.task)
    self.tokenizer = HFTokenizer.from_file(h.tokenizer or h.policy,
                                           step_delimiter=h.step_delimiter,
                                           **({"eos_token": h.eos_token} if h.eos_token else {}))
    self.model_cfg = self._hf_config(h.policy)
    if self.tokenizer.vocab_size > self.model_cfg.vocab_size:
      raise ValueError(f"tokenizer {h.tokenizer or h.policy} has {self.tokenizer.vocab_size} "
                       f"tokens, more than the policy's vocab_size={self.model_cfg.vocab_size}")
    self.mesh = parallel.make_mesh(tuple(cfg.mesh.shape))
    self.levels: list[str] = []
    self._init_stages(workdir)

  # --- models --------------------------------------------------------------------

  def _dtypes(self) -> dict:
    h = self.cfg.hf
    return dict(param_dtype=h.param_dtype, dtype=h.dtype or None, max_len=int(h.max_len))

  def _hf_config(self, path: str):
    return hf.config_from_hf(io_utils.read_json(os.path.join(path, "config.json")),
                              **self._dtypes())

  def load_policy(self, path: str | None = None):
    """The policy (or the model at `path`) as a `Transformer` on this run's mesh."""
    return hf.load_model(path or self.cfg.hf.policy, mesh=self.mesh, **self._dtypes())

  def load_prm(self, remap: bool = True):
    """The PRM named by cfg.hf: a ttc_jax `ValueModel` or an external adapter (with
    `remap`, reading at our step delimiters; without, at its own tags only)."""
    from ttc_jax.models import external_prm
    h, tok = self.cfg.hf, self.tokenizer
    if h.prm_type == "value_model":
      from ttc_jax.prm import train as prm_train
      d = os.path.join(h.prm, "model") if os.path.isdir(os.path.join(h.prm, "model")) else h.prm
      base = self._hf_config(h.prm_base) if h.prm_base else self.model_cfg
      return prm_train.load_value_model(d, base, tok, kind="prm", seed=self.cfg.seed,
                                        mesh=self.mesh)
    self._check_prm_vocabulary()
    kw = dict(step_token_id=tok.id_of(h.prm_step_tag),
              delimiter_ids=(tok.newline_id, tok.EOS) if remap else (),
              mesh=self.mesh, **self._dtypes())
    if h.prm_type == "token_prob":
      return external_prm.load_token_prm(h.prm, good_token_id=tok.id_of(h.prm_good_token),
                                         bad_token_id=tok.id_of(h.prm_bad_token), **kw)
    return external_prm.load_classifier_prm(h.prm, positive_class=int(h.prm_positive_class),
                                            **kw)

  def _check_prm_vocabulary(self) -> None:
    """The search feeds the policy's token ids to the PRM: their vocabularies must agree."""
    from tokenizers import Tokenizer
    mine = self.cfg.hf.tokenizer or self.cfg.hf.policy
    mine = mine if mine.endswith(".json") else os.path.join(mine, "tokenizer.json")
    theirs = os.path.join(self.cfg.hf.prm, "tokenizer.json")
    if os.path.isfile(theirs) and os.path.isfile(mine) and (
        Tokenizer.from_file(theirs).get_vocab() != Tokenizer.from_file(mine).get_vocab()):
      raise ValueError(f"the PRM's tokenizer ({theirs}) differs from the policy's ({mine}); "
                       "PRM search needs one shared vocabulary")

  # --- data and prompts ----------------------------------------------------------

  def builder(self):
    from ttc_jax.data import text_tfds   # tfds is only needed here
    return text_tfds.build_text_dataset(self.task, self.path("tfds"), self.cfg.data.manual_dir)

  def _data_sections(self) -> dict:
    from ttc_jax.data import text_tfds
    spec = text_tfds.TextDataSpec(self.task, os.path.abspath(self.cfg.data.manual_dir),
                                  text_tfds.PROMPT_TEMPLATES[self.task])
    return dict(task=self.cfg.task.to_dict(), data=spec.config_name())

  def stage_data(self) -> dict:
    def run():
      b = self.builder()
      return dict(data_dir=os.fspath(b.data_dir),
                  **{f"num_{s}": int(v.num_examples) for s, v in b.info.splits.items()})
    return self._stage("data", self._data_sections(), run)

  def problems(self, limit: int | None = None) -> list[dict]:
    """The first `limit` (default eval.questions) questions of task.split with their prompts.

    Dicts: question, prompt, answer, level ("Level 3"; "all" for GSM8K), subject, solution.
    """
    from ttc_jax.data import text_tfds
    c = self.cfg
    b = self.builder()
    rows = text_tfds.load_problems(b, c.task.split)[:int(limit or c.eval.questions)]
    shots = []
    if c.prompt.style == "few_shot" and int(c.prompt.shots) > 0:
      src = text_tfds.load_split(b, "train")
      shots = [(r["question"], r["solution"]) for r in
               (text_tfds.decode_record(src[i]) for i in range(min(len(src), c.prompt.shots)))]
    return [dict(r, level=r["level"] or "all",
                 prompt=build_prompt(c.prompt, self.task, r["question"], shots)) for r in rows]

  def trim(self, text: str) -> str:
    """`text` up to the first of prompt.stop_strings (e.g. a few-shot model's next question)."""
    for s in self.cfg.prompt.stop_strings:
      if s and s in text:
        text = text[:text.index(s)]
    return text

  def extract(self, text: str):
    return self.grader.extract_answer(self.trim(text))

  # --- stages ----------------------------------------------------------------------

  def _policy_sections(self) -> dict:
    h = self.cfg.hf
    return dict(self._data_sections(), seed=self.cfg.seed, prompt=self.cfg.prompt.to_dict(),
                hf={k: h[k] for k in ("policy", "tokenizer", "param_dtype", "dtype", "max_len",
                                      "eos_token", "step_delimiter")})

  def _prm_sections(self) -> dict:
    h = self.cfg.hf
    return dict(self._policy_sections(), eval=self.cfg.eval.to_dict(),
                verify=self.cfg.verify.to_dict(),
                prm={k: h[k] for k in h if k.startswith("prm")})

  def stage_eval_policy(self) -> dict:
    return self._stage("eval_policy", dict(self._policy_sections(), eval=self.cfg.eval.to_dict()),
                       self._eval_policy)

  def _eval_policy(self) -> dict:
    e = self.cfg.eval
    summary, records = evaluation.evaluate_policy(
        self.load_policy(), self.tokenizer, self.problems(), self.levels,
        jax.random.key(self.cfg.seed + 1), extract_answer=self.extract,
        equivalent=self.grader.equivalent, num_samples=e.num_samples,
        majority_ns=tuple(e.majority_ns), max_new_tokens=e.max_new_tokens,
        temperature=e.temperature, top_k=e.top_k, top_p=e.top_p, max_batch=e.max_batch,
        mesh=self.mesh, progress=self.progress)
    io_utils.atomic_write_jsonl(self.path("eval", "samples.jsonl"), records)
    io_utils.atomic_write_json(self.path("eval", "policy_eval.json"), summary)
    return summary

  def stage_score_samples(self) -> dict:
    return self._stage("score_samples", self._prm_sections(), self._score_samples)

  def _score_samples(self) -> dict:
    from ttc_jax.prm import evaluate
    e, v = self.cfg.eval, self.cfg.verify
    records = io_utils.read_jsonl(self.path("eval", "samples.jsonl"))
    t0 = time.perf_counter()
    flat = evaluate.score_solutions(
        self.load_prm(), self.tokenizer, [r["prompt"] for r in records for _ in r["samples"]],
        [self.trim(t) for r in records for t in r["samples"]], batch_size=v.score_batch,
        mesh=self.mesh)
    dt = time.perf_counter() - t0
    starts = np.cumsum([0] + [len(r["samples"]) for r in records])
    per_q = [flat[s:s + len(r["samples"])] for r, s in zip(records, starts)]
    io_utils.atomic_write_jsonl(self.path("verifiers", "scores.jsonl"), [
        dict(question=r["question"], prm=s) for r, s in zip(records, per_q)])
    ns, eq = tuple(int(n) for n in e.majority_ns), self.grader.equivalent

    def curves(idx):
      return evaluate.selection_curves([records[i] for i in idx],
                                       {"prm": [s for i in idx for s in per_q[i]]},
                                       ns, eq, v.aggregation)
    out = dict(curves=curves(range(len(records))), scoring_seconds=dt,
               scored_solutions=sum(bool(s) for s in flat), solutions=len(flat),
               curves_by_level={lv: curves([i for i, r in enumerate(records)
                                            if r["level"] == lv]) for lv in self.levels})
    io_utils.atomic_write_json(self.path("verifiers", "eval.json"), out)
    return out

  def stage_eval_search(self) -> dict:
    return self._stage("eval_search", dict(self._prm_sections(), search=config_lib.search_section(self.cfg.search)),
                       self._eval_search)

  def _eval_search(self) -> dict:
    from ttc_jax.search import sweep
    sc, e = self.cfg.search, self.cfg.eval
    chosen = self.problems(int(sc.questions))
    policy, prm = self.load_policy(), self.load_prm()
    records, out = sweep.evaluate_search(
        policy, prm, self.tokenizer, chosen, sc, self.levels,
        io_utils.read_jsonl(self.path("eval", "samples.jsonl")),
        io_utils.read_jsonl(self.path("verifiers", "scores.jsonl")),
        num_samples=e.num_samples, aggregation=self.cfg.verify.aggregation,
        extract_answer=self.extract, equivalent=self.grader.equivalent, mesh=self.mesh)
    io_utils.atomic_write_jsonl(self.path("search", "results.jsonl"), records)
    io_utils.atomic_write_json(self.path("search", "eval.json"), out)
    return out

  def stage_eval_large(self) -> dict:
    """Greedy pass@1 of hf.large_policy on the eval questions (large_eval/greedy.jsonl)."""
    e, path = self.cfg.eval, self.cfg.hf.large_policy

    def run():
      chosen = self.problems()
      texts, stats = evaluation.sample_texts(
          self.load_policy(path), self.tokenizer, [p["prompt"] for p in chosen],
          jax.random.key(self.cfg.seed), num_samples=1, max_new_tokens=e.max_new_tokens,
          temperature=0.0, max_batch=e.max_batch, mesh=self.mesh, progress=self.progress,
          desc="large greedy")
      recs = [dict(question=p["question"], level=p["level"], answer=str(p["answer"]),
                   greedy=t[0], greedy_answer=self.extract(t[0]),
                   greedy_correct=bool(self.grader.equivalent(self.extract(t[0]),
                                                              str(p["answer"]))))
              for p, t in zip(chosen, texts)]
      io_utils.atomic_write_jsonl(self.path("large_eval", "greedy.jsonl"), recs)
      ok = lambda rs: float(np.mean([r["greedy_correct"] for r in rs]))  # noqa: E731
      return dict(pass_at_1=ok(recs), num_params=self._hf_config(path).num_params,
                  pass_at_1_by_level={lv: ok([r for r in recs if r["level"] == lv])
                                      for lv in self.levels}, sampling=stats)
    return self._stage("eval_large", dict(self._policy_sections(), eval=e.to_dict(),
                                          large_policy=path), run)

  def stage_compute_optimal(self) -> dict:
    c = self.cfg
    sections = dict(self._prm_sections(), search=config_lib.search_section(c.search),
                    compute_optimal=c.compute_optimal.to_dict(), large_policy=c.hf.large_policy)

    def run():
      from ttc_jax.compute_optimal import study
      large_cfg = self._hf_config(c.hf.large_policy) if c.hf.large_policy else None
      out = study.run_study(self.workdir, c, self.model_cfg, large_cfg, self.tokenizer,
                            equivalent=self.grader.equivalent, revisions=False)
      io_utils.atomic_write_json(self.path("compute_optimal", "analysis.json"), out)
      return out
    return self._stage("compute_optimal", sections, run)

  def stage_processbench(self) -> dict | None:
    """The PRM's ProcessBench F1 on the task's split (gsm8k or math), when
    processbench.data_dir is set; None otherwise. Problems are written with the
    run's prompt (no few-shot examples); the threshold is processbench.threshold, or
    (when negative) the best one on the other split (`prm.processbench`)."""
    pb = self.cfg.get("processbench")
    if pb is None or not pb.get("data_dir"):
      return None
    h = self.cfg.hf
    sections = dict(hf={k: h[k] for k in ("policy", "tokenizer", "param_dtype", "dtype",
                                          "max_len", "eos_token", "step_delimiter")},
                    prm={k: h[k] for k in h if k.startswith("prm")},
                    prompt=self.cfg.prompt.to_dict(), processbench=pb.to_dict())

    def run():
      from ttc_jax.prm import processbench, processbench_load
      pc, task = self.cfg.prompt, self.task
      prm = processbench_load.LoadedPRM(
          self.load_prm(remap=False), self.tokenizer, h.prm_type,
          lambda problem: build_prompt(pc, task, problem), h.prm_step_tag or None)
      threshold = float(pb.get("threshold", -1.0))
      out = processbench.run(prm, [task], pb.data_dir, threshold if threshold >= 0 else None,
                             int(pb.get("limit", 0)) or None,
                             int(self.cfg.verify.score_batch))
      io_utils.atomic_write_json(self.path("processbench", "eval.json"),
                                 processbench.json_safe(out))
      return processbench.json_safe(out)
    return self._stage("processbench", sections, run)

  # --- everything ----------------------------------------------------------------------

  def run(self) -> dict:
    t0 = time.perf_counter()
    c = self.cfg
    data = self.stage_data()
    self.levels = sorted({p["level"] for p in self.problems()}, key=lambda s: (len(s), s))
    ev = self.stage_eval_policy()
    scored = self.stage_score_samples()
    search = self.stage_eval_search()
    optimal = {}
    if c.hf.large_policy:                      # the analysis reads large_eval/greedy.jsonl
      optimal.update(large_eval=self.stage_eval_large(),
                     large=dict(checkpoint=c.hf.large_policy,
                                train_tokens=float(c.compute_optimal.pretrain_tokens)))
    optimal["analysis"] = self.stage_compute_optimal()
    bench = self.stage_processbench()
    policy = dict(num_params=self.model_cfg.num_params, final_metrics=None,
                  checkpoint=c.hf.policy)
    rep = report.build_report(c, self.levels, data, policy, ev, dict(self.wall),
                              time.perf_counter() - t0, search=search, compute_optimal=optimal)
    report.merge_curves(rep, *report.curve_sets(scored["curves"], scored["curves_by_level"],
                                                skip=("majority",)))
    rep["policy"]["checkpoint"] = c.hf.policy
    rep["verifier"] = dict(prm=c.hf.prm, prm_type=c.hf.prm_type,
                           aggregation=c.verify.aggregation,
                           scoring_seconds=scored["scoring_seconds"],
                           scored_solutions=scored["scored_solutions"],
                           solutions=scored["solutions"])
    if bench is not None:
      rep["processbench"] = {s: {k: v[k] for k in ("acc_err", "acc_cor", "f1", "threshold",
                                                   "threshold_source", "items")}
                             for s, v in bench["splits"].items()}
    io_utils.atomic_write_json(self.path("config.json"), c.to_dict())
    report.write_report(self.workdir, rep)
    return rep
