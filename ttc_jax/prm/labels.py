"""Monte Carlo step labels for PRM training (Snell et al. 2024 §5.1 and App. D,
after Math-Shepherd): no human labels, only the policy's own rollouts.

For each training question the policy samples `samples_per_question`
solutions; a solution is kept when it ends with its only `Answer:` line and
that answer parses. Its lines are its steps (newline is the delimiter). From
every step prefix but the last, `rollouts` continuations are sampled with the
same policy; the step's soft label is the fraction of them whose final answer
is right, its hard label whether any is. The last step (the Answer line) is
labelled by the answer's correctness. On the embedded task each step also
gets its exact label ("every step so far is correct", from the task's
checker), which the PRM is later measured against and never trained on.

Rollouts are batched device work: all prefixes of a shard of questions,
grouped by token length, go through `evaluation.sample_texts` (prefill + one
`lax.while_loop` decode over `max_batch` rows per call). Labelling a whole
dataset shard by shard on disk, resumably, is `label_shards`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ttc_jax import evaluation

Extract = Callable[[str], "str | None"]
Equiv = Callable[[Any, Any], bool]


@dataclasses.dataclass(frozen=True)
class LabelSettings:
  """Knobs of the labelling run (paper: 16 samples, 16 rollouts)."""

  samples_per_question: int = 16
  rollouts: int = 16
  temperature: float = 0.7
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 112
  max_batch: int = 2048
  shard_questions: int = 64
  keep_rollouts: bool = False  # store rollout texts in the records (extra PRM/ORM data)
  budget_slack: float = 1.5  # rollout token cap: slack x the sampled rest + 16

  def __post_init__(self):
    for f in ("samples_per_question", "rollouts", "max_new_tokens", "max_batch", "shard_questions"):
      if getattr(self, f) < 1:
        raise ValueError(f"LabelSettings.{f} must be >= 1, got {getattr(self, f)}")


def solution_lines(text: str, extract_answer: Extract) -> list[str] | None:
  """The steps (lines) of a sampled solution, or None when it is unusable.

  Usable: non-empty lines only, the last one is the only `Answer:` line and
  its answer parses. A trailing newline is ignored.
  """
  if not isinstance(text, str):
    return None
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  if not lines or any(not ln.strip() for ln in lines):
    return None
  if extract_answer(lines[-1]) is None:
    return None
  if any(ln.strip().startswith("Answer:") for ln in lines[:-1]):
    return None
  return lines


def prefix_text(lines: Sequence[str], k: int) -> str:
  """The solution text through step k (0-based), ending with the delimiter."""
  return "\n".join(lines[: k + 1]) + "\n"


def _bucket(n_tokens: int, step: int = 16) -> int:
  return int(math.ceil(n_tokens / step) * step)


def rollout_values(
    model,
    tokenizer,
    prompts: Sequence[str],
    prefixes: Sequence[str],
    targets: Sequence[str],
    rng: jax.Array,
    settings: LabelSettings,
    *,
    extract_answer: Extract,
    equivalent: Equiv,
    budgets: Sequence[int] | None = None,
    mesh=None,
    progress: bool = False,
    keep: list | None = None,
) -> tuple[np.ndarray, dict]:
  """Fraction of `settings.rollouts` continuations of each prompt+prefix that are right.

  prompts[i] + prefixes[i] is fed to the policy; a rollout is right when the
  answer extracted from prefixes[i] + continuation equals targets[i].
  budgets[i] (optional) caps the new tokens of prefix i's rollouts (always
  also by `settings.max_new_tokens` and the model's max_len). Prefixes are
  grouped by (prompt length, budget), both rounded up to 16 tokens: one
  compile per group, a KV buffer no longer than the group needs (decode cost
  grows with it), and decode loops that end when the group's longest rollout
  does rather than the longest of all.

  Returns (values float64[P] in [0, 1], stats with rollouts, generated_tokens,
  unparsable rollouts, seconds, calls). When `keep` is a list, keep[i] is set
  to prefix i's rollout continuations (texts) for later use as training data.
  """
  p = len(prompts)
  if not (len(prefixes) == len(targets) == p):
    raise ValueError(
        f"rollout_values: {p} prompts, {len(prefixes)} prefixes, " f"{len(targets)} targets"
    )
  values = np.zeros((p,), np.float64)
  stats = dict(rollouts=0, generated_tokens=0, unparsable=0, seconds=0.0, calls=0)
  if p == 0:
    return values, stats
  if budgets is not None and len(budgets) != p:
    raise ValueError(f"rollout_values: {len(budgets)} budgets for {p} prefixes")
  texts = [a + b for a, b in zip(prompts, prefixes)]
  max_len = model.cfg.max_len
  groups: dict[tuple[int, int], list[int]] = {}
  for i, t in enumerate(texts):
    blen = _bucket(len(tokenizer.encode(t)) + 1)
    want = settings.max_new_tokens if budgets is None else _bucket(max(int(budgets[i]), 1), 32)
    max_new = min(settings.max_new_tokens, want, max_len - blen)
    if max_new < 1:
      raise ValueError(
          f"step prefix {i} ({blen} tokens) leaves no room to roll out within "
          f"the model's max_len={max_len}"
      )
    groups.setdefault((blen, max_new), []).append(i)
  for (blen, max_new), idx in sorted(groups.items()):
    outs, st = evaluation.sample_texts(
        model,
        tokenizer,
        [texts[i] for i in idx],
        jax.random.fold_in(jax.random.fold_in(rng, blen), max_new),
        num_samples=settings.rollouts,
        max_new_tokens=max_new,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        max_batch=settings.max_batch,
        mesh=mesh,
        progress=progress,
        desc=f"rollouts@{blen}",
    )
    for i, conts in zip(idx, outs):
      if keep is not None:
        keep[i] = list(conts)
      answers = [extract_answer(prefixes[i] + c) for c in conts]
      values[i] = float(np.mean([equivalent(a, targets[i]) for a in answers]))
      stats["unparsable"] += sum(a is None for a in answers)
    stats["rollouts"] += len(idx) * settings.rollouts
    stats["generated_tokens"] += st["generated_tokens"]
    stats["seconds"] += st["seconds"]
    stats["calls"] += 1
  return values, stats


def label_problems(
    model,
    tokenizer,
    problems: Sequence[dict],
    rng: jax.Array,
    settings: LabelSettings,
    *,
    extract_answer: Extract,
    equivalent: Equiv,
    check_solution: Callable[[str, str], Any] | None = None,
    mesh=None,
    progress: bool = False,
) -> tuple[list[dict], dict]:
  """Samples solutions for `problems` and labels every step by rollouts.

  problems: dicts with `prompt`, `answer`, and optionally `question`, `level`.
  check_solution(question, text): the task's exact checker (with
  `prefix_correct` and `all_correct`), when the task has one.

  Returns (records, stats). One record per kept solution: question, prompt,
  answer, level, solution, steps[K], soft[K], hard[K], exact[K] (when a
  checker is given), answer_correct, and with `settings.keep_rollouts`
  rollouts[K-1][m] (the continuation texts sampled from each step prefix).
  """
  if not problems:
    raise ValueError("label_problems got no problems")
  t0 = time.perf_counter()
  prompts = [q["prompt"] for q in problems]
  sols, s_stats = evaluation.sample_texts(
      model,
      tokenizer,
      prompts,
      jax.random.fold_in(rng, 0),
      num_samples=settings.samples_per_question,
      max_new_tokens=settings.max_new_tokens,
      temperature=settings.temperature,
      top_k=settings.top_k,
      top_p=settings.top_p,
      max_batch=settings.max_batch,
      mesh=mesh,
      progress=progress,
      desc="label samples",
  )
  kept: list[tuple[dict, str, list[str]]] = []
  for q, texts in zip(problems, sols):
    for t in texts:
      lines = solution_lines(t, extract_answer)
      if lines is not None:
        kept.append((q, t, lines))
  r_prompts, r_prefixes, r_targets, r_budgets, owner = [], [], [], [], []
  for s, (q, _, lines) in enumerate(kept):
    for k in range(len(lines) - 1):
      r_prompts.append(q["prompt"])
      r_prefixes.append(prefix_text(lines, k))
      r_targets.append(str(q["answer"]))
      # room for the rest as this sample wrote it, with slack for longer paths
      rest = len(tokenizer.encode("\n".join(lines[k + 1 :]))) + 1
      r_budgets.append(int(rest * settings.budget_slack) + 16)
      owner.append((s, k))
  kept_texts = [None] * len(r_prompts) if settings.keep_rollouts else None
  vals, r_stats = rollout_values(
      model,
      tokenizer,
      r_prompts,
      r_prefixes,
      r_targets,
      jax.random.fold_in(rng, 1),
      settings,
      extract_answer=extract_answer,
      equivalent=equivalent,
      budgets=r_budgets,
      mesh=mesh,
      progress=progress,
      keep=kept_texts,
  )
  soft = [[0.0] * len(lines) for _, _, lines in kept]
  conts: list[list] = [[None] * (len(lines) - 1) for _, _, lines in kept]
  for j, ((s, k), v) in enumerate(zip(owner, vals)):
    soft[s][k] = float(v)
    if kept_texts is not None:
      conts[s][k] = kept_texts[j]
  records = []
  for s, (q, text, lines) in enumerate(kept):
    tgt = str(q["answer"])
    correct = bool(equivalent(extract_answer(lines[-1]), tgt))
    soft[s][-1] = float(correct)
    hard = [float(v > 0) for v in soft[s]]
    rec = dict(
        question=q.get("question", q["prompt"].strip()),
        prompt=q["prompt"],
        answer=tgt,
        level=q.get("level", ""),
        solution=text,
        steps=lines,
        soft=soft[s],
        hard=hard,
        answer_correct=correct,
    )
    if kept_texts is not None:
      rec["rollouts"] = conts[s]  # [K-1][m] continuation texts from each step prefix
    if check_solution is not None:
      chk = check_solution(rec["question"], text)
      rec["exact"] = [bool(x) for x in chk.prefix_correct] + [bool(chk.all_correct)]
      if len(rec["exact"]) != len(lines):  # the checker saw another step split
        raise ValueError(
            f"checker found {len(rec['exact'])} steps, labeller {len(lines)}: " f"{text!r}"
        )
    records.append(rec)
  stats = dict(
      questions=len(problems),
      solutions_sampled=len(problems) * len(sols[0]),
      solutions_kept=len(kept),
      prefixes=len(r_prompts),
      sample_tokens=s_stats["generated_tokens"],
      sample_seconds=s_stats["seconds"],
      rollouts=r_stats["rollouts"],
      rollout_tokens=r_stats["generated_tokens"],
      rollout_seconds=r_stats["seconds"],
      rollout_calls=r_stats["calls"],
      rollouts_unparsable=r_stats["unparsable"],
      seconds=time.perf_counter() - t0,
  )
  return records, stats


def label_quality(records: Sequence[dict]) -> dict:
  """How the Monte Carlo labels compare with the exact ones (records with `exact`).

  Over every labelled step: AUROC of the soft and hard labels against the
  exact "all steps so far correct" label, their means, and the exact
  positive fraction. NaN where there are no exact labels.
  """
  from ttc_jax.prm.metrics import auroc

  rs = [r for r in records if "exact" in r]
  ex = [bool(v) for r in rs for v in r["exact"]]
  soft = [v for r in rs for v in r["soft"]]
  hard = [v for r in rs for v in r["hard"]]
  return dict(
      steps=len(soft),
      soft_label_auroc=auroc(soft, ex),
      hard_label_auroc=auroc(hard, ex),
      soft_label_mean=float(np.mean(soft)) if soft else float("nan"),
      exact_positive_fraction=float(np.mean(ex)) if ex else float("nan"),
      answer_correct_fraction=float(np.mean([r["answer_correct"] for r in records]))
      if records
      else float("nan"),
  )


def outcome_fn(extract_answer: Extract, equivalent: Equiv) -> Callable[[dict, str], "bool | None"]:
  """outcome(record, text): is a complete solution right (None if it has no usable answer)?"""

  def outcome(record: dict, text: str):
    if solution_lines(text, extract_answer) is None:
      return None
    return bool(equivalent(extract_answer(text), record["answer"]))

  return outcome
