"""Experiment configs: `get_config()` files plus `--config.<field>=<value>` overrides.

A config file is a Python file defining `get_config() -> ml_collections.ConfigDict`.
Overrides are parsed with `ast.literal_eval` (never `eval`) and coerced to the
type of the field they replace; an unknown field, a malformed value or a
missing file raises `ConfigError` naming it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections


class ConfigError(ValueError):
  """A config file or override is malformed."""


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config()` from the Python file at `path`."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(
      f"ttc_config_{hashlib.md5(path.encode()).hexdigest()[:8]}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a syntax error etc. in the user's config file
    raise ConfigError(f"config file {path} failed to load: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config()")
  cfg = module.get_config()
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict, "
                      f"got {type(cfg).__name__}")
  return cfg


def _coerce(key: str, raw: str, old: Any) -> Any:
  if isinstance(old, str):
    try:
      val = ast.literal_eval(raw)
      return val if isinstance(val, str) else raw
    except (ValueError, SyntaxError):
      return raw
  if isinstance(old, bool):
    low = raw.strip().lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key}: expected a boolean, got {raw!r}")
  try:
    val = ast.literal_eval(raw)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f"--config.{key}: cannot parse value {raw!r}") from e
  if isinstance(old, float) and isinstance(val, int) and not isinstance(val, bool):
    val = float(val)
  if isinstance(old, (tuple, list)) and isinstance(val, (tuple, list)):
    return type(old)(val)
  if isinstance(old, (tuple, list)) and isinstance(val, (int, float)):
    return type(old)([val])
  if old is not None and not isinstance(val, type(old)):
    raise ConfigError(f"--config.{key}: expected {type(old).__name__}, got {raw!r}")
  return val


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]
                    ) -> ml_collections.ConfigDict:
  """Applies `a.b=value` (or `--config.a.b=value`) strings to a copy of cfg."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  for item in overrides:
    item = item[len("--config."):] if item.startswith("--config.") else item
    if "=" not in item:
      raise ConfigError(f"override {item!r} must look like field=value")
    key, raw = item.split("=", 1)
    node, parts = cfg, key.split(".")
    for i, p in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or p not in node:
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(f"unknown config field {'.'.join(parts[:i + 1])!r}"
                          + (f"; known here: {known}" if known else ""))
      if i < len(parts) - 1:
        node = node[p]
    old = node[parts[-1]]
    if isinstance(old, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{key} names a group, not a field")
    node[parts[-1]] = _coerce(key, raw, old)
  return cfg


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  cfg = apply_overrides(load_config_file(path), overrides)
  validate(cfg)
  return cfg


REQUIRED = ("name", "seed", "task", "model", "mesh", "train", "eval")
TEXT_TASKS = ("gsm8k", "math")     # validated by ttc_jax.text_config


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Checks fields the pipeline relies on; raises ConfigError naming the problem."""
  if "task" in cfg and cfg.task.get("name") in TEXT_TASKS:   # Hugging Face models on text
    from ttc_jax import text_config
    text_config.validate_text(cfg, ConfigError)
    return
  for k in REQUIRED:
    if k not in cfg:
      raise ConfigError(f"config has no {k!r} section/field (required: {REQUIRED})")
  from ttc_jax.models.config import ModelConfig
  try:
    ModelConfig.from_dict(cfg.model.to_dict())
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from e
  tk = cfg.task
  for f in ("train_per_level", "test_per_level"):    # an empty split trains/evaluates nothing
    if f in tk and int(tk[f]) <= 0:
      raise ConfigError(f"config.task.{f} must be positive (an empty dataset), got {tk[f]}")
  if tk.get("name", "arith") == "arith" and "levels" in tk:
    from ttc_jax.tasks import arith
    try:
      arith.parse_levels(tk.levels)
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
    raise ConfigError(f"config.train.microbatches={t.get('microbatches')} must be a positive "
                      f"divisor of config.train.batch_size={t.batch_size}")
  if t.seq_len > cfg.model.max_len:
    raise ConfigError(f"config.train.seq_len={t.seq_len} exceeds model.max_len={cfg.model.max_len}")
  validate_mesh(cfg)
  e = cfg.eval
  for f in ("questions_per_level", "num_samples", "max_new_tokens"):
    if f in e and int(e[f]) <= 0:
      raise ConfigError(f"config.eval.{f} must be positive, got {e[f]}")
  if any(n > e.num_samples or n <= 0 for n in e.majority_ns):
    raise ConfigError(f"config.eval.majority_ns {tuple(e.majority_ns)} must lie in "
                      f"1..num_samples={e.num_samples}")
  validate_verifiers(cfg)
  from ttc_jax.revision.settings import validate_revision
  validate_revision(cfg, ConfigError)
  from ttc_jax.compute_optimal.settings import validate_compute_optimal
  validate_compute_optimal(cfg, ConfigError)


VALUE_TRAIN_FIELDS = ("steps", "batch_size", "seq_len", "lr", "warmup_steps", "weight_decay",
                      "clip_norm", "b1", "b2", "final_lr_fraction", "log_every", "eval_every",
                      "patience", "heldout_fraction", "use_rollouts")


def validate_verifiers(cfg: ml_collections.ConfigDict) -> None:
  """Checks the optional PRM/ORM sections (`labels`, `prm`, `orm`, `verify`): all or none."""
  present = [k for k in ("labels", "prm", "orm", "verify") if k in cfg]
  if not present:
    return
  if len(present) != 4:
    raise ConfigError(f"config has {present} but the verifier stages need all of "
                      "labels, prm, orm and verify")
  lb = cfg.labels
  for f in ("questions_per_level", "samples_per_question", "rollouts", "max_new_tokens",
            "max_batch", "shard_questions"):
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
      raise ConfigError(f"config.{sec}.seq_len={cfg[sec].seq_len} exceeds "
                        f"model.max_len={cfg.model.max_len}")
    if not 0 < cfg[sec].heldout_fraction < 1:
      raise ConfigError(f"config.{sec}.heldout_fraction must lie in (0, 1)")
  if cfg.prm.label not in ("soft", "hard"):
    raise ConfigError(f"config.prm.label must be 'soft' or 'hard', got {cfg.prm.label!r}")
  if "search" in cfg:
    validate_search(cfg.search)
  if cfg.verify.aggregation not in ("last", "min", "prod"):
    raise ConfigError(f"config.verify.aggregation must be last, min or prod, "
                      f"got {cfg.verify.aggregation!r}")



def validate_mesh(cfg: ml_collections.ConfigDict) -> None:
  """Checks cfg.mesh.shape against the device count (when that is known)."""
  shape = tuple(cfg.mesh.shape)
  if len(shape) != 3:
    raise ConfigError(f"config.mesh.shape must have 3 entries, got {cfg.mesh.shape}")
  if (any(isinstance(s, bool) or not isinstance(s, int) or (s < 1 and s != -1) for s in shape)
      or shape.count(-1) > 1):
    raise ConfigError(f"config.mesh.shape={shape}: entries must be positive integers, with at "
                      "most one -1 (filled in from jax.device_count())")
  # The device count is only asked for when that cannot pre-empt jax.distributed.initialize
  # (a multi-host launch checks in parallel.make_mesh, with the same numbers).
  import math
  import jax
  try:
    from jax._src.xla_bridge import backends_are_initialized
  except ImportError:                                    # private API: only an optimisation
    backends_are_initialized = lambda: False  # noqa: E731
  env = os.environ
  distributed = env.get("TTC_JAX_DISTRIBUTED", "") == "1" or env.get("JAX_COORDINATOR_ADDRESS")
  if backends_are_initialized() or not distributed:
    n = jax.device_count()
    known = math.prod(s for s in shape if s != -1)
    if (-1 in shape and n % known) or (-1 not in shape and known != n):
      need = f"a multiple of {known}" if -1 in shape else str(known)
      raise ConfigError(f"config.mesh.shape={shape} needs {need} devices, but "
                        f"jax.device_count() is {n} ({jax.default_backend()}); use -1 for one "
                        "axis to take all devices, e.g. (-1, 1, 1)")


def validate_search(search: ml_collections.ConfigDict) -> None:
  """Checks a `search` section: known methods, budgets each method can spend, sizes.

  Its questions field is `questions_per_level` (arith) or `questions` (text tasks).
  """
  import math
  from ttc_jax.search.sweep import METHODS, plan
  bad = [m for m in search.methods if m not in METHODS]
  if bad:
    raise ConfigError(f"config.search.methods: unknown {bad}; known: {METHODS}")
  if not search.budgets or any(int(b) < 1 for b in search.budgets):
    raise ConfigError(f"config.search.budgets must be positive, got {search.budgets}")
  for m in search.methods:      # N beams must split into beams of width M (sweep.plan)
    for b in search.budgets:
      if plan(m, int(b)) is None:
        if m == "beam_sqrt":
          rule = (f"N = G beams of width M = round(sqrt(G)) = "
                  f"{max(1, round(math.sqrt(int(b))))}, which must divide G")
        elif m.startswith("lookahead"):
          rule = (f"N = G / {int(m[-1]) + 1} beams of width min(4, N): G must be a "
                  f"multiple of {int(m[-1]) + 1} and N of min(4, N)")
        else:
          rule = "N = G beams in groups of M = 4: G must be a multiple of 4"
        fits = [g for g in range(1, 4 * int(b) + 9) if plan(m, g)]
        near = ([g for g in fits if g < int(b)][-1:] + [g for g in fits if g > int(b)][:1])
        raise ConfigError(
            f"config.search.budgets: method {m!r} cannot spend a generation budget of {b} "
            f"({rule}); nearest budgets it can: {near}; remove {b} or the method")
  for f in ("questions_per_level", "questions", "max_rounds", "max_step_tokens",
            "max_new_tokens", "max_beams"):
    if f in search and int(search[f]) < 1:
      raise ConfigError(f"config.search.{f} must be positive, got {search[f]}")
  if "compact_levels" in search and int(search.compact_levels) < 0:
    raise ConfigError(f"config.search.compact_levels must be >= 0, got {search.compact_levels}")


# Search fields that change how fast a stage runs, never what it computes (the kernels
# return the same results for every value; tests/test_search.py): left out of stage hashes,
# so turning them does not invalidate finished stages.
SEARCH_SPEED_FIELDS = ("compact_levels",)


# Fields of config.train that change speed, not results (up to float summation order).
TRAIN_SPEED_FIELDS = ("microbatches",)


def _as_dict(section: Any) -> dict:
  return section.to_dict() if isinstance(section, ml_collections.ConfigDict) else dict(section)


def _hashed(section: Any, speed_fields: tuple) -> dict:
  return {k: v for k, v in _as_dict(section).items() if k not in speed_fields}


def search_section(search: Any) -> dict:
  """`config.search` as a dict for stage hashes: without `SEARCH_SPEED_FIELDS`."""
  return _hashed(search, SEARCH_SPEED_FIELDS)


def train_section(train: Any) -> dict:
  """`config.train` as a dict for stage hashes: without `TRAIN_SPEED_FIELDS`."""
  return _hashed(train, TRAIN_SPEED_FIELDS)


# Options of config.revision.sft added after runs were made without them: unset and 0 hash
# alike, so runs made before a field existed stay reusable.
REVISION_SFT_OPTIONAL_FIELDS = ("replay_fraction", "replay_foreign_fraction")


def revision_sft_section(sft: Any) -> dict:
  """`config.revision.sft` as a dict for stage hashes: without its optional fields at 0."""
  return {k: v for k, v in _as_dict(sft).items()
          if not (k in REVISION_SFT_OPTIONAL_FIELDS and not float(v or 0.0))}


def revision_section(revision: Any) -> dict:
  """All of `config.revision` for stage hashes, its `sft` by `revision_sft_section`."""
  d = _as_dict(revision)
  if "sft" in d:
    d["sft"] = revision_sft_section(d["sft"])
  return d


def config_hash(section: Any) -> str:
  """Stable short hash of a config section (dict/ConfigDict/value)."""
  if isinstance(section, ml_collections.ConfigDict):
    section = section.to_dict()
  blob = json.dumps(section, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]
