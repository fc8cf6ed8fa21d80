"""Typed frozen settings built from a config section where library code is called.

Library code (train, prm, revision, search) takes frozen dataclasses with documented fields and
their defaults (`prm.labels.LabelSettings`, `train.loop.FitSettings`, `train.optim.OptimSettings`,
`prm.train.ValueTrainSettings`, `revision.sft.SFTSettings`, `revision.rl_settings.RLSettings`,
`search.sweep.SearchSettings`) and never reads a ConfigDict; the builders here read a section
into one. A section is flat: a dataclass-typed field (`fit`, `optim`) is filled from the same
section's fields. A field missing from the section takes the dataclass default (none: a
ConfigError); a field the settings do not have, unless the caller names it as read elsewhere
(`extra`, e.g. the pipeline's `label`), and a value of the wrong type are ConfigErrors naming
the field. Stage hashes are still computed from the sections themselves.

Not imported by `ttc_jax.config` itself (loading a config stays free of jax and flax): the
pipeline imports `ttc_jax.config.settings` where it calls the library.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

import ml_collections

from ttc_jax.config.errors import ConfigError
from ttc_jax.prm.labels import LabelSettings
from ttc_jax.prm.train import ValueTrainSettings
from ttc_jax.revision.rl_settings import RLSettings
from ttc_jax.revision.sft import SFTSettings
from ttc_jax.search.sweep import SearchSettings
from ttc_jax.train.loop import FitSettings

# Fields of a section that the pipeline reads itself (not the library's settings).
LABEL_PIPELINE_FIELDS = ("questions_per_level", "seed")
VALUE_PIPELINE_FIELDS = ("label", "label_source", "use_rollouts")  # prm, orm, revision.orm
SFT_PIPELINE_FIELDS = ("replay_fraction", "replay_foreign_fraction")
RL_PIPELINE_FIELDS = ("contexts", "heldout_fraction", "eval_contexts")
SEARCH_PIPELINE_FIELDS = ("questions_per_level", "questions")  # arith, text


def _as_dict(section: Any) -> dict:
  if isinstance(section, ml_collections.ConfigDict):
    return section.to_dict()
  if isinstance(section, types.SimpleNamespace):
    return dict(vars(section))
  if isinstance(section, Mapping):
    return dict(section)
  raise ConfigError(
      f"a config section must be a ConfigDict or a mapping, got " f"{type(section).__name__}"
  )


def field_names(cls) -> set[str]:
  """The section fields `cls` reads: its own, and those of its dataclass-typed fields."""
  hints = typing.get_type_hints(cls)
  out: set[str] = set()
  for f in dataclasses.fields(cls):
    t = hints[f.name]
    out |= field_names(t) if dataclasses.is_dataclass(t) else {f.name}
  return out


def _coerce(value: Any, kind: Any, where: str) -> Any:
  """`value` as `kind` (int, float, bool, str or tuple[<one of those>, ...]); an int is a
  float too, a bool no number; a list or tuple is a tuple."""
  if typing.get_origin(kind) is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"config.{where} must be a tuple, got {value!r} ({type(value).__name__})")
    return tuple(_coerce(v, typing.get_args(kind)[0], f"{where}[{i}]") for i, v in enumerate(value))
  if kind is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif kind is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  else:
    ok = isinstance(value, kind)
  if not ok:
    raise ConfigError(
        f"config.{where} must be {kind.__name__}, got {value!r} " f"({type(value).__name__})"
    )
  return float(value) if kind is float else value


def _build(cls, d: dict, where: str):
  hints = typing.get_type_hints(cls)
  kw = {}
  for f in dataclasses.fields(cls):
    t = hints[f.name]
    if dataclasses.is_dataclass(t):
      kw[f.name] = _build(t, d, where)
    elif f.name in d:
      kw[f.name] = _coerce(d[f.name], t, f"{where}.{f.name}")
    elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
      raise ConfigError(f"config.{where} has no field {f.name!r}")
  try:
    return cls(**kw)
  except ValueError as e:
    raise ConfigError(f"config.{where}: {e}") from e


def from_section(cls, section: Any, where: str, *, extra: tuple[str, ...] = ()):
  """A `cls` (a frozen settings dataclass) from config section `section` (`where` names it in
  errors, e.g. "revision.rl"); `extra`: the section's fields read elsewhere, not by `cls`."""
  d = _as_dict(section)
  unknown = sorted(set(d) - field_names(cls) - set(extra))
  if unknown:
    raise ConfigError(
        f"config.{where}: unknown field(s) {unknown}; {cls.__name__} reads "
        f"{sorted(field_names(cls))}" + (f" and the pipeline {sorted(extra)}" if extra else "")
    )
  return _build(cls, d, where)


def fit_settings(section: Any, where: str = "train", *, extra: tuple[str, ...] = ()) -> FitSettings:
  """`train.loop.FitSettings` from a training section."""
  return from_section(FitSettings, section, where, extra=extra)


def label_settings(section: Any, where: str = "labels") -> LabelSettings:
  """`prm.labels.LabelSettings` from a `labels` section."""
  return from_section(LabelSettings, section, where, extra=LABEL_PIPELINE_FIELDS)


def value_train_settings(section: Any, where: str = "prm") -> ValueTrainSettings:
  """`prm.train.ValueTrainSettings` from a `prm`, `orm` or `revision.orm` section."""
  return from_section(ValueTrainSettings, section, where, extra=VALUE_PIPELINE_FIELDS)


def sft_settings(section: Any, where: str = "revision.sft") -> SFTSettings:
  """`revision.sft.SFTSettings` from a `revision.sft` section."""
  return from_section(SFTSettings, section, where, extra=SFT_PIPELINE_FIELDS)


def rl_settings(section: Any, where: str = "revision.rl") -> RLSettings:
  """`revision.rl_settings.RLSettings` from a `revision.rl` section."""
  return from_section(RLSettings, section, where, extra=RL_PIPELINE_FIELDS)


def search_settings(section: Any, where: str = "search") -> SearchSettings:
  """`search.sweep.SearchSettings` from a `search` section (arith or text)."""
  return from_section(SearchSettings, section, where, extra=SEARCH_PIPELINE_FIELDS)
