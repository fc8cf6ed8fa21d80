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
import os
from typing import Any, Sequence

import ml_collections

from ttc_jax.config.errors import ConfigError
from ttc_jax.config.validation import validate


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config()` from the Python file at `path`."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(
      f"ttc_config_{hashlib.md5(path.encode()).hexdigest()[:8]}", path
  )
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a syntax error etc. in the user's config file
    raise ConfigError(f"config file {path} failed to load: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config()")
  cfg = module.get_config()
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(
        f"{path}: get_config() must return an ml_collections.ConfigDict, "
        f"got {type(cfg).__name__}"
    )
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


def apply_overrides(
    cfg: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
  """Applies `a.b=value` (or `--config.a.b=value`) strings to a copy of cfg."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  for item in overrides:
    item = item[len("--config.") :] if item.startswith("--config.") else item
    if "=" not in item:
      raise ConfigError(f"override {item!r} must look like field=value")
    key, raw = item.split("=", 1)
    node, parts = cfg, key.split(".")
    for i, p in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or p not in node:
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(
            f"unknown config field {'.'.join(parts[:i + 1])!r}"
            + (f"; known here: {known}" if known else "")
        )
      if i < len(parts) - 1:
        node = node[p]
    old = node[parts[-1]]
    if isinstance(old, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{key} names a group, not a field")
    node[parts[-1]] = _coerce(key, raw, old)
  return cfg


def load_config(
    path: str, overrides: Sequence[str] = (), shapes_only: bool = False
) -> ml_collections.ConfigDict:
  """The config of `path` with `--config.<field>=<value>` overrides, validated (`validate`;
  shapes_only: for compiling its programs without data or weights)."""
  cfg = apply_overrides(load_config_file(path), overrides)
  validate(cfg, shapes_only=shapes_only)
  return cfg
