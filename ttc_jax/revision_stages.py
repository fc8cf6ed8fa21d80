"""Pipeline stages for revisions: data, SFT, ORM on revision outputs, RL, chain evaluation.

A mixin of `ttc_jax.pipeline.Pipeline` (uses `cfg`, `path`, `_stage`,
`problems`, `load_policy`, `load_lm`, `tokenizer`, `model_cfg`, `mesh`,
`levels`). Run directory:

  revision_data/     trajectories.array_record (+ stats.json)
  revision_sft/      checkpoints/, best/, model/, metrics.jsonl
  revision_chains/   train_chains.jsonl: SFT chains on training questions
  revision_orm/      the ORM on revision outputs (previous attempts in context)
  revision_rl/       checkpoints/, model/, metrics.jsonl
  revision_eval/     eval.json, chains_sft.jsonl, chains_rl.jsonl
"""

from __future__ import annotations

import time

import jax
import numpy as np

from ttc_jax import config as config_lib
from ttc_jax import evaluation, io_utils
from ttc_jax.models.config import ModelConfig
from ttc_jax.tasks import arith


class RevisionStages:
  """revision_data, revision_sft, revision_chains, revision_orm, revision_rl, eval_revision."""

  @property
  def revision_cfg(self) -> ModelConfig:
    """The policy's architecture with a context long enough for previous attempts."""
    return ModelConfig.from_dict(dict(self.cfg.model.to_dict(),
                                      max_len=int(self.cfg.revision.max_len)))

  @property
  def question_position(self) -> str:
    """Where revision prompts put the question (`format.revision_prompt`); "first" if unset."""
    return str(self.cfg.revision.get("question_position", "first"))

  def _rev_sections(self, *parts: str) -> dict:
    r = self.cfg.revision
    common = dict(context_attempts=r.context_attempts, max_len=r.max_len)
    if self.question_position != "first":   # hashed only when set: older runs stay reusable
      common["question_position"] = self.question_position
    out = dict(self._policy_sections(), revision_data=r.data.to_dict(), revision_common=common)
    for p in parts:
      out[f"revision_{p}"] = (config_lib.revision_sft_section(r.sft) if p == "sft"
                              else r[p].to_dict())
    return out

  def _meta(self, sections: dict) -> dict:
    return dict(tokenizer=self.tokenizer.fingerprint(),
                config_hash=config_lib.config_hash(sections))

  # --- trajectories -----------------------------------------------------------------

  def stage_revision_data(self) -> dict:
    return self._stage("revision_data", self._rev_sections(), self._revision_data)

  def _revision_data(self) -> dict:
    from ttc_jax.data import records as records_lib
    from ttc_jax.revision import trajectories
    d, r = self.cfg.revision.data, self.cfg.revision
    probs = self.problems("train", d.questions_per_level)
    texts, stats = evaluation.sample_texts(
        self.load_policy(), self.tokenizer, [p["prompt"] for p in probs],
        jax.random.key(d.seed), num_samples=d.samples_per_question,
        max_new_tokens=d.max_new_tokens, temperature=d.temperature, max_batch=d.max_batch,
        mesh=self.mesh, progress=self.progress, desc="revision samples")
    recs = []
    lucky = 0
    for p, ts in zip(probs, texts):
      ok = [arith.is_correct(t, p["answer"]) for t in ts]
      if d.exact_targets:        # a right answer reached through a wrong step is no target
        keep = [not c or arith.check_solution(p["question"], t).all_correct
                for t, c in zip(ts, ok)]
        lucky += len(keep) - sum(keep)
        ts, ok = [t for t, k in zip(ts, keep) if k], [c for c, k in zip(ok, keep) if k]
      recs.append(dict(question=p["question"], level=p["level"], answer=str(p["answer"]),
                       samples=ts, sample_correct=ok))
    trajs = trajectories.build_dataset(recs, np.random.default_rng(d.seed),
                                       max_context=r.context_attempts,
                                       max_per_question=d.max_per_question,
                                       keep_fraction=float(d.keep_fraction),
                                       question_position=self.question_position,
                                       keep=self._fits_sft)
    records_lib.write_records(self.path("revision_data", "trajectories.array_record"), trajs)
    out = dict(trajectories.summarize(trajs), sampling=stats, dropped_lucky_right=lucky,
               sample_accuracy=float(np.mean([c for x in recs for c in x["sample_correct"]])),
               questions_with_right_and_wrong=int(sum(any(x["sample_correct"]) and
                                                      not all(x["sample_correct"])
                                                      for x in recs)))
    io_utils.atomic_write_json(self.path("revision_data", "stats.json"), out)
    return out

  def _trajectories(self) -> list[dict]:
    from ttc_jax.data import records as records_lib
    return records_lib.read_records(self.path("revision_data", "trajectories.array_record"))

  # --- SFT ------------------------------------------------------------------------------

  def stage_revision_sft(self) -> dict:
    sections = self._rev_sections("sft")

    def run():
      from flax import nnx
      from ttc_jax.models.transformer import create_model
      from ttc_jax import parallel
      from ttc_jax.revision import sft
      with parallel.use_mesh(self.mesh):
        model = create_model(self.revision_cfg, self.cfg.seed, self.mesh)
      nnx.update(model, nnx.state(self.load_policy()))
      trajs = self._trajectories()
      _, summary = sft.train_revision_model(
          model, self.tokenizer, trajs, self.cfg.revision.sft,
          self.path("revision_sft"), seed=self.cfg.seed, mesh=self.mesh,
          meta=self._meta(sections), progress=self.progress,
          replay=self._sft_replay(len(trajs), trajs))
      return summary
    return self._stage("revision_sft", sections, run)

  def _sft_replay(self, num_trajectories: int, trajectories: list[dict] = ()) -> list[dict]:
    """Policy rows (plain prompt, reference solution) for `revision.sft.replay_fraction`:
    f / (1 - f) per trajectory, from training questions after those of the revision data
    and the SFT chains (so RL contexts and ORM data stay on questions SFT never saw).
    With `replay_foreign_fraction`, that share of them get attempts of other questions
    (from the SFT-training `trajectories`' contexts) in context (`sft.foreign_context`)."""
    from ttc_jax.prm import data as prm_data
    from ttc_jax.revision import format as fmt
    from ttc_jax.revision import sft
    r = self.cfg.revision
    frac = float(r.sft.get("replay_fraction", 0.0))
    if frac <= 0.0:
      return []
    want = int(round(frac / (1.0 - frac) * num_trajectories))
    per_level = max(1, -(-want // len(self.levels)))
    skip = max(int(r.data.questions_per_level),
               int(r.chains.skip_questions) + int(r.chains.questions_per_level))
    probs = self.problems("train", per_level, skip=skip)
    rows = [dict(prompt=fmt.revision_prompt(p["question"], [], self.question_position),
                 target=p["solution"], question=p["question"], level=p["level"]) for p in probs]
    foreign = float(r.sft.get("replay_foreign_fraction", 0.0))
    if foreign > 0.0:
      pool = [t for t in trajectories
              if not prm_data.is_heldout(t["question"], float(r.sft.heldout_fraction))]
      rows = sft.foreign_context(
          rows, pool, foreign, max_context=int(r.context_attempts),
          rng=np.random.default_rng(int(r.data.seed) + 1), question_position=self.question_position,
          fits=self._fits_sft)
    return rows

  def _fits_sft(self, t: dict) -> bool:
    """Whether a (prompt, target) row fits `revision.sft.seq_len` (characters are tokens,
    plus BOS and EOS)."""
    return len(t["prompt"]) + len(t["target"]) + 2 <= int(self.cfg.revision.sft.seq_len)

  def load_revision(self, which: str = "sft"):
    return self.load_lm(self.path(f"revision_{which}", "model"), self.revision_cfg)

  # --- chains on training questions: ORM data and RL contexts ---------------------------

  def stage_revision_chains(self) -> dict:
    return self._stage("revision_chains", self._rev_sections("sft", "chains"),
                       self._revision_chains)

  def _revision_chains(self) -> dict:
    ch = self.cfg.revision.chains
    probs = self.problems("train", ch.questions_per_level, skip=ch.skip_questions)
    recs, stats = self._run_chains(self.load_revision("sft"), probs, [ch.steps] * ch.chains,
                                   jax.random.key(ch.seed), ch.temperature)
    io_utils.atomic_write_jsonl(self.path("revision_chains", "train_chains.jsonl"), recs)
    return dict(stats, questions=len(probs),
                accuracy=float(np.mean([c for r in recs for x in r["correct"] for c in x])))

  def _run_chains(self, model, probs: list[dict], lengths, rng, temperature: float):
    """Chains for `probs`; records with attempts, answers and correctness per chain.

    Questions are grouped by attempt budget (`chains.attempt_budget` of their
    reference solution's length, capped by revision.max_new_tokens), so easy
    questions do not pay for the hard ones' prompt and attempt buffers.
    """
    from ttc_jax.revision import chains
    r = self.cfg.revision
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(probs):
      groups.setdefault(chains.attempt_budget(len(p["solution"]), r.max_new_tokens), []).append(i)
    texts: list = [None] * len(probs)
    stats = dict(generated_tokens=0, seconds=0.0, generations=0, groups={})
    for g, (budget, idx) in enumerate(sorted(groups.items())):
      hist, hlen, st = chains.run_chains(
          model, self.tokenizer, [probs[i]["question"] for i in idx], lengths,
          jax.random.fold_in(rng, budget), context=r.context_attempts, max_new_tokens=budget,
          temperature=temperature, max_rows=r.max_rows,
          question_position=self.question_position, mesh=self.mesh)
      for i, t in zip(idx, chains.attempt_texts(self.tokenizer, hist, hlen)):
        texts[i] = t
      for k in ("generated_tokens", "seconds", "generations"):
        stats[k] += st[k]
      stats["groups"][str(budget)] = dict(questions=len(idx), seconds=st["seconds"])
    stats["tokens_per_s"] = stats["generated_tokens"] / max(stats["seconds"], 1e-9)
    recs = []
    for p, chs in zip(probs, texts):
      answers = [[arith.extract_answer(t) for t in c] for c in chs]
      recs.append(dict(question=p["question"], level=p["level"], target=str(p["answer"]),
                       attempts=chs, answers=answers,
                       correct=[[bool(arith.equivalent(a, str(p["answer"]))) for a in c]
                                for c in answers]))
    return recs, stats

  def _score_chains(self, orm, recs: list[dict], batch_size: int) -> float:
    """Sets r["scores"][c][t], the ORM's final score of every attempt; returns seconds."""
    from ttc_jax.prm import evaluate as prm_eval
    rows = self._attempt_rows(recs)
    t0 = time.perf_counter()
    scores = prm_eval.score_solutions(orm, self.tokenizer, [x["prompt"] for x in rows],
                                      [x["solution"] for x in rows], batch_size=batch_size,
                                      mesh=self.mesh)
    it = iter(scores)
    for r in recs:
      r["scores"] = [[(s[-1] if s else 0.0) for s in (next(it) for _ in c)]
                     for c in r["attempts"]]
    return time.perf_counter() - t0

  def _attempt_rows(self, recs: list[dict]) -> list[dict]:
    """One row per attempt: its revision prompt (truncated context) and its lines."""
    from ttc_jax.prm.evaluate import text_steps
    from ttc_jax.revision import format as fmt
    k = self.cfg.revision.context_attempts
    rows = []
    for r in recs:
      for ci, chain in enumerate(r["attempts"]):
        for t, att in enumerate(chain):
          rows.append(dict(question=r["question"], level=r["level"], answer=r["target"],
                           chain=ci, step=t, steps=text_steps(att), solution=att,
                           prompt=fmt.revision_prompt(r["question"], fmt.truncate(chain[:t], k),
                                                      self.question_position),
                           answer_correct=r["correct"][ci][t],
                           previous_correct=bool(r["correct"][ci][t - 1]) if t else None))
    return rows

  # --- ORM on revision outputs ------------------------------------------------------------

  def stage_revision_orm(self) -> dict:
    sections = self._rev_sections("sft", "chains", "orm")

    def run():
      from flax import nnx
      from ttc_jax.prm import train as prm_train
      rows = [x for x in self._attempt_rows(
          io_utils.read_jsonl(self.path("revision_chains", "train_chains.jsonl"))) if x["steps"]]
      return prm_train.train_value_model(
          self.revision_cfg, nnx.state(self.load_revision("sft")), self.tokenizer, rows,
          self.path("revision_orm"), self.cfg.revision.orm, kind="orm", seed=self.cfg.seed,
          mesh=self.mesh, meta=self._meta(sections), progress=self.progress)
    return self._stage("revision_orm", sections, run)

  # --- RL ----------------------------------------------------------------------------------

  def stage_revision_rl(self) -> dict:
    sections = self._rev_sections("sft", "chains", "rl")

    def run():
      from ttc_jax.prm import data as prm_data
      from ttc_jax.revision import rl
      from ttc_jax.tasks.arith import device as arith_device
      rl_cfg = self.cfg.revision.rl
      recs = rl.select_chain_records(
          io_utils.read_jsonl(self.path("revision_chains", "train_chains.jsonl")),
          rl_cfg.contexts)
      contexts = [dict(prompt=x["prompt"], answer=x["answer"], question=x["question"])
                  for x in rl.select_context_rows(self._attempt_rows(recs), rl_cfg.contexts)]
      held = [c for c in contexts if prm_data.is_heldout(c["question"], rl_cfg.heldout_fraction)]
      train = [c for c in contexts if not prm_data.is_heldout(c["question"],
                                                               rl_cfg.heldout_fraction)]
      held = held[:int(rl_cfg.eval_contexts)]
      model, ref = self.load_revision("sft"), self.load_revision("sft")
      t0 = time.perf_counter()
      last = rl.train_rl(model, ref, self.tokenizer, train, held, rl_cfg,
                         self.path("revision_rl"),
                         reward_fn=arith_device.DeviceGrader.from_tokenizer(self.tokenizer),
                         encode_targets=arith_device.encode_targets, seed=self.cfg.seed,
                         mesh=self.mesh, meta=self._meta(sections), progress=self.progress)
      return dict(final_metrics=last, train_contexts=len(train), heldout_contexts=len(held),
                  seconds=time.perf_counter() - t0)
    return self._stage("revision_rl", sections, run)

  # --- evaluation ----------------------------------------------------------------------------

  def stage_eval_revision(self) -> dict:
    sections = dict(self._rev_sections("sft", "chains", "orm", "rl", "eval"))
    return self._stage("eval_revision", sections, self._eval_revision)

  def _eval_revision(self) -> dict:
    from ttc_jax.prm import train as prm_train
    from ttc_jax.revision import chains, evaluate
    ev = self.cfg.revision.eval
    probs = self.problems("test", ev.questions_per_level)
    budgets = tuple(int(b) for b in ev.budgets)
    lengths = chains.chain_lengths(budgets, ev.step_chains, ev.report_steps)
    orm = prm_train.load_value_model(self.path("revision_orm", "model"), self.revision_cfg,
                                     self.tokenizer, kind="orm", seed=self.cfg.seed,
                                     mesh=self.mesh)
    out = dict(budgets=list(budgets), chain_lengths=lengths, questions=len(probs))
    recs_of = {}
    for which in ("sft", "rl"):
      recs, stats = self._run_chains(self.load_revision(which), probs, lengths,
                                     jax.random.key(ev.seed), ev.temperature)
      stats["orm_seconds"] = self._score_chains(orm, recs, ev.score_batch)
      io_utils.atomic_write_jsonl(self.path("revision_eval", f"chains_{which}.jsonl"), recs)
      recs_of[which] = recs
      out[which] = dict(evaluate.summarize(recs, budgets, arith.equivalent, self.levels,
                                           ev.report_steps), stats=stats)
      o = out[which]["overall"]
      steps = [None if v is None else round(v, 3) for v in o["pass_at_step"]]
      print(f"[eval_revision] {which}: pass@1 by step {steps}, "
            f"right->wrong {o['flips']['right_to_wrong']:.3f}")
    # RL minus SFT, sequential at the largest budget, paired by question (with its noise)
    top = max(budgets)
    out["rl_vs_sft"] = dict(budget=top, **{
        sel: evaluate.paired_gain(recs_of["sft"], recs_of["rl"], 1, top, sel, arith.equivalent)
        for sel in evaluate.SELECTIONS})
    io_utils.atomic_write_json(self.path("revision_eval", "eval.json"), out)
    return out
