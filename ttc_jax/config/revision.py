"""Checks of the optional `revision` config section (called from `ttc_jax.config.validate`)."""

from __future__ import annotations

from ttc_jax.config.common import VALUE_TRAIN_FIELDS
from ttc_jax.revision.format import QUESTION_POSITIONS

SECTIONS = {
    "data": (
        "questions_per_level",
        "samples_per_question",
        "temperature",
        "max_new_tokens",
        "max_batch",
        "max_per_question",
        "exact_targets",
        "keep_fraction",
        "seed",
    ),
    "sft": (
        "steps",
        "batch_size",
        "seq_len",
        "lr",
        "warmup_steps",
        "weight_decay",
        "clip_norm",
        "b1",
        "b2",
        "final_lr_fraction",
        "log_every",
        "eval_every",
        "patience",
        "heldout_fraction",
    ),
    "chains": ("questions_per_level", "skip_questions", "chains", "steps", "temperature", "seed"),
    "rl": (
        "steps",
        "prompts_per_step",
        "group_size",
        "temperature",
        "max_new_tokens",
        "lr",
        "warmup_steps",
        "clip_norm",
        "clip_eps",
        "kl_coef",
        "advantage",
        "loss",
        "updates_per_batch",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "heldout_fraction",
        "eval_contexts",
        "contexts",
    ),
    "eval": (
        "questions_per_level",
        "budgets",
        "temperature",
        "report_steps",
        "step_chains",
        "score_batch",
        "seed",
    ),
}


def validate_revision(cfg, error=ValueError) -> None:
  """Raises `error` naming the first bad field of cfg.revision (absent section: no-op)."""
  if "revision" not in cfg:
    return
  from ttc_jax.revision import algo

  r = cfg.revision
  for f in ("context_attempts", "max_len", "max_new_tokens", "max_rows"):
    if f not in r:
      raise error(f"config.revision has no field {f!r}")
  fields = dict(SECTIONS, orm=VALUE_TRAIN_FIELDS)
  for sec, names in fields.items():
    if sec not in r:
      raise error(f"config.revision has no {sec!r} section (needs {sorted(fields)})")
    for f in names:
      if f not in r[sec]:
        raise error(f"config.revision.{sec} has no field {f!r}")
  if r.get("question_position", "first") not in QUESTION_POSITIONS:
    raise error(
        f"config.revision.question_position must be one of {QUESTION_POSITIONS}, got "
        f"{r.question_position!r}"
    )
  if int(r.context_attempts) < 0:
    raise error(f"config.revision.context_attempts must be >= 0, got {r.context_attempts}")
  for f in ("max_len", "max_new_tokens", "max_rows"):
    if int(r[f]) < 1:
      raise error(f"config.revision.{f} must be positive, got {r[f]}")
  for sec in ("sft", "orm"):
    if int(r[sec].seq_len) > int(r.max_len):
      raise error(
          f"config.revision.{sec}.seq_len={r[sec].seq_len} exceeds "
          f"config.revision.max_len={r.max_len}"
      )
  if int(r.rl.max_new_tokens) >= int(r.max_len):
    raise error(
        f"config.revision.rl.max_new_tokens={r.rl.max_new_tokens} leaves no room for "
        f"a prompt in config.revision.max_len={r.max_len}"
    )
  for sec, f in (
      ("data", "questions_per_level"),
      ("data", "samples_per_question"),
      ("chains", "questions_per_level"),
      ("chains", "chains"),
      ("chains", "steps"),
      ("rl", "steps"),
      ("rl", "prompts_per_step"),
      ("rl", "updates_per_batch"),
      ("eval", "questions_per_level"),
      ("eval", "report_steps"),
  ):
    if int(r[sec][f]) < 1:
      raise error(f"config.revision.{sec}.{f} must be positive, got {r[sec][f]}")
  if int(r.rl.group_size) < 2:
    raise error(
        f"config.revision.rl.group_size must be >= 2 (advantages are normalised within "
        f"a group), got {r.rl.group_size}"
    )
  if r.rl.advantage not in algo.ADVANTAGES:
    raise error(
        f"config.revision.rl.advantage {r.rl.advantage!r} is not registered; "
        f"known: {sorted(algo.ADVANTAGES)}"
    )
  from ttc_jax.revision.rl_settings import RL_CONTEXTS

  if r.rl.contexts not in RL_CONTEXTS:
    raise error(
        f"config.revision.rl.contexts must be one of {RL_CONTEXTS}, got " f"{r.rl.contexts!r}"
    )
  if r.rl.loss not in algo.LOSSES:
    raise error(
        f"config.revision.rl.loss {r.rl.loss!r} is not registered; " f"known: {sorted(algo.LOSSES)}"
    )
  if int(r.rl.checkpoint_every) % int(r.rl.updates_per_batch):
    raise error(
        f"config.revision.rl.checkpoint_every={r.rl.checkpoint_every} must be a multiple "
        f"of updates_per_batch={r.rl.updates_per_batch} (exact resume needs "
        "checkpoints between rollout batches)"
    )
  if not 0.0 <= float(r.sft.get("replay_fraction", 0.0)) < 1.0:
    raise error(
        f"config.revision.sft.replay_fraction must lie in [0, 1), got " f"{r.sft.replay_fraction}"
    )
  if not 0.0 <= float(r.sft.get("replay_foreign_fraction", 0.0)) <= 1.0:
    raise error(
        f"config.revision.sft.replay_foreign_fraction must lie in [0, 1], got "
        f"{r.sft.replay_foreign_fraction}"
    )
  if not 0.0 <= float(r.data.keep_fraction) <= 1.0:
    raise error(
        f"config.revision.data.keep_fraction must lie in [0, 1], got " f"{r.data.keep_fraction}"
    )
  budgets = tuple(int(b) for b in r.eval.budgets)
  if not budgets or any(b < 1 or b & (b - 1) for b in budgets):
    raise error(f"config.revision.eval.budgets must be powers of two, got {r.eval.budgets}")
  for sec in ("sft", "orm", "rl"):
    if not 0 < float(r[sec].heldout_fraction) < 1:
      raise error(f"config.revision.{sec}.heldout_fraction must lie in (0, 1)")
