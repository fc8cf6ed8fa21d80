"""Checks shared by the arith and the text configs: the mesh, the search section, and the fields
of a value-model (PRM/ORM) training section."""

from __future__ import annotations

import math
import os

import ml_collections

from ttc_jax.config.errors import ConfigError
from ttc_jax.search.budgets import METHODS, plan

VALUE_TRAIN_FIELDS = (
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
    "use_rollouts",
)


def validate_mesh(cfg: ml_collections.ConfigDict) -> None:
  """Checks cfg.mesh.shape against the device count (when that is known)."""
  shape = tuple(cfg.mesh.shape)
  if len(shape) != 3:
    raise ConfigError(f"config.mesh.shape must have 3 entries, got {cfg.mesh.shape}")
  if (
      any(isinstance(s, bool) or not isinstance(s, int) or (s < 1 and s != -1) for s in shape)
      or shape.count(-1) > 1
  ):
    raise ConfigError(
        f"config.mesh.shape={shape}: entries must be positive integers, with at "
        "most one -1 (filled in from jax.device_count())"
    )
  # The device count is only asked for when that cannot pre-empt jax.distributed.initialize
  # (a multi-host launch checks in parallel.make_mesh, with the same numbers).
  import jax

  try:
    from jax._src.xla_bridge import backends_are_initialized
  except ImportError:  # private API: only an optimisation
    backends_are_initialized = lambda: False  # noqa: E731
  env = os.environ
  distributed = env.get("TTC_JAX_DISTRIBUTED", "") == "1" or env.get("JAX_COORDINATOR_ADDRESS")
  if backends_are_initialized() or not distributed:
    n = jax.device_count()
    known = math.prod(s for s in shape if s != -1)
    if (-1 in shape and n % known) or (-1 not in shape and known != n):
      need = f"a multiple of {known}" if -1 in shape else str(known)
      raise ConfigError(
          f"config.mesh.shape={shape} needs {need} devices, but "
          f"jax.device_count() is {n} ({jax.default_backend()}); use -1 for one "
          "axis to take all devices, e.g. (-1, 1, 1)"
      )


def validate_search(search: ml_collections.ConfigDict) -> None:
  """Checks a `search` section: known methods, budgets each method can spend, sizes.

  Its questions field is `questions_per_level` (arith) or `questions` (text tasks).
  """
  bad = [m for m in search.methods if m not in METHODS]
  if bad:
    raise ConfigError(f"config.search.methods: unknown {bad}; known: {METHODS}")
  if not search.budgets or any(int(b) < 1 for b in search.budgets):
    raise ConfigError(f"config.search.budgets must be positive, got {search.budgets}")
  for m in search.methods:  # N beams must split into beams of width M (budgets.plan)
    for b in search.budgets:
      if plan(m, int(b)) is None:
        if m == "beam_sqrt":
          rule = (
              f"N = G beams of width M = round(sqrt(G)) = "
              f"{max(1, round(math.sqrt(int(b))))}, which must divide G"
          )
        elif m.startswith("lookahead"):
          rule = (
              f"N = G / {int(m[-1]) + 1} beams of width min(4, N): G must be a "
              f"multiple of {int(m[-1]) + 1} and N of min(4, N)"
          )
        else:
          rule = "N = G beams in groups of M = 4: G must be a multiple of 4"
        fits = [g for g in range(1, 4 * int(b) + 9) if plan(m, g)]
        near = [g for g in fits if g < int(b)][-1:] + [g for g in fits if g > int(b)][:1]
        raise ConfigError(
            f"config.search.budgets: method {m!r} cannot spend a generation budget of {b} "
            f"({rule}); nearest budgets it can: {near}; remove {b} or the method"
        )
  for f in (
      "questions_per_level",
      "questions",
      "max_rounds",
      "max_step_tokens",
      "max_new_tokens",
      "max_beams",
  ):
    if f in search and int(search[f]) < 1:
      raise ConfigError(f"config.search.{f} must be positive, got {search[f]}")
  if "compact_levels" in search and int(search.compact_levels) < 0:
    raise ConfigError(f"config.search.compact_levels must be >= 0, got {search.compact_levels}")
  if "cache_dtype" in search and str(search.cache_dtype) not in ("", "bfloat16", "float32"):
    raise ConfigError(
        f"config.search.cache_dtype={search.cache_dtype!r}: use '' (each model's compute "
        "dtype), 'bfloat16' (models computing in bfloat16) or 'float32'"
    )
  if "share_prefix" in search and not isinstance(search.share_prefix, bool):
    raise ConfigError(
        f"config.search.share_prefix must be True or False, got {search.share_prefix!r}"
    )
