"""Checks of the embedded arithmetic task's configs (`ttc_jax.pipeline`): the required sections,
model, task, train, eval and the optional verifier sections (`labels`, `prm`, `orm`, `verify`)."""

from __future__ import annotations

import ml_collections

from ttc_jax.config.common import VALUE_TRAIN_FIELDS, validate_mesh, validate_search
from ttc_jax.config.errors import ConfigError
from ttc_jax.config.labels import ablation_sources, label_source
from ttc_jax.tasks.arith import parse_levels

REQUIRED = ("name", "seed", "task", "model", "mesh", "train", "eval")


def validate_arith(cfg: ml_collections.ConfigDict) -> None:
  """Checks the fields `ttc_jax.pipeline` relies on, up to the verifier sections (`validate` then
  checks the revision and compute_optimal sections); raises ConfigError naming the problem."""
  for k in REQUIRED:
    if k not in cfg:
      raise ConfigError(f"config has no {k!r} section/field (required: {REQUIRED})")
  from ttc_jax.models.config import ModelConfig

  try:
    ModelConfig.from_dict(cfg.model.to_dict())
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from e
  tk = cfg.task
  for f in ("train_per_level", "test_per_level"):  # an empty split trains/evaluates nothing
    if f in tk and int(tk[f]) <= 0:
      raise ConfigError(f"config.task.{f} must be positive (an empty dataset), got {tk[f]}")
  if tk.get("name", "arith") == "arith" and "levels" in tk:
    try:
      parse_levels(tk.levels)
    except ValueError as e:
      raise ConfigError(f"config.task.levels: {e}") from e
  t = cfg.train
  for f in ("steps", "batch_size", "seq_len"):
    if int(t[f]) <= 0:
      raise ConfigError(f"config.train.{f} must be positive, got {t[f]}")
  if "eval_batches" in t and int(t.eval_batches) <= 0:
    raise ConfigError(f"config.train.eval_batches must be positive, got {t.eval_batches}")
  for f in ("log_every", "eval_every", "checkpoint_every"):
    if f in t and int(t[f]) < 0:
      raise ConfigError(f"config.train.{f} must be >= 0, got {t[f]}")
  mb = int(t.get("microbatches", 1))
  if mb < 1 or t.batch_size % mb:
    raise ConfigError(
        f"config.train.microbatches={t.get('microbatches')} must be a positive "
        f"divisor of config.train.batch_size={t.batch_size}"
    )
  if t.seq_len > cfg.model.max_len:
    raise ConfigError(f"config.train.seq_len={t.seq_len} exceeds model.max_len={cfg.model.max_len}")
  validate_mesh(cfg)
  e = cfg.eval
  for f in ("questions_per_level", "num_samples", "max_new_tokens"):
    if f in e and int(e[f]) <= 0:
      raise ConfigError(f"config.eval.{f} must be positive, got {e[f]}")
  if any(n > e.num_samples or n <= 0 for n in e.majority_ns):
    raise ConfigError(
        f"config.eval.majority_ns {tuple(e.majority_ns)} must lie in "
        f"1..num_samples={e.num_samples}"
    )
  validate_verifiers(cfg)


def validate_verifiers(cfg: ml_collections.ConfigDict) -> None:
  """Checks the optional PRM/ORM sections (`labels`, `prm`, `orm`, `verify`): all or none."""
  present = [k for k in ("labels", "prm", "orm", "verify") if k in cfg]
  if not present:
    return
  if len(present) != 4:
    raise ConfigError(
        f"config has {present} but the verifier stages need all of " "labels, prm, orm and verify"
    )
  lb = cfg.labels
  for f in (
      "questions_per_level",
      "samples_per_question",
      "rollouts",
      "max_new_tokens",
      "max_batch",
      "shard_questions",
  ):
    if int(lb[f]) <= 0:
      raise ConfigError(f"config.labels.{f} must be positive, got {lb[f]}")
  for sec in ("prm", "orm"):
    if cfg[sec].get("use_rollouts") and not lb.get("keep_rollouts"):
      raise ConfigError(f"config.{sec}.use_rollouts needs config.labels.keep_rollouts=True")
  for sec in ("prm", "orm"):
    for f in VALUE_TRAIN_FIELDS:
      if f not in cfg[sec]:
        raise ConfigError(f"config.{sec} has no field {f!r}")
    if cfg[sec].seq_len > cfg.model.max_len:
      raise ConfigError(
          f"config.{sec}.seq_len={cfg[sec].seq_len} exceeds " f"model.max_len={cfg.model.max_len}"
      )
    if not 0 < cfg[sec].heldout_fraction < 1:
      raise ConfigError(f"config.{sec}.heldout_fraction must lie in (0, 1)")
  label_source(cfg.prm)  # known values; label and label_source agree
  ablation_sources(cfg)
  if "search" in cfg:
    validate_search(cfg.search)
  if cfg.verify.aggregation not in ("last", "min", "prod"):
    raise ConfigError(
        f"config.verify.aggregation must be last, min or prod, " f"got {cfg.verify.aggregation!r}"
    )
