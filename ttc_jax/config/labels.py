"""PRM label sources: which step labels of the labelled records a PRM trains on.

config.prm.label_source   "monte_carlo" (soft Monte Carlo labels: the fraction of rollouts
                          reaching the right answer, the paper's choice), "monte_carlo_hard"
                          (1 when any rollout does) or "exact" (the task checker's labels: 1
                          while every step so far is right; the analogue of human step labels
                          such as PRM800K)
config.prm.label          the older field naming the record key directly ("soft", "hard",
                          "exact"); a config with only `label` behaves as before, and one
                          with both must name the same labels
config.verify.ablation    further label sources: the `verifier_ablation` stage trains one more
                          PRM per source (ttc_jax/pipeline/ablation.py)
"""

from __future__ import annotations

from typing import Any, Mapping

from ttc_jax.config.errors import ConfigError

# LABEL_SOURCES: label source -> the key of the labelled records (prm/labels.py) holding its
# per-step targets; prm.data imports numpy alone, so loading a config stays free of jax
from ttc_jax.prm.data import LABEL_SOURCES, SOURCE_OF_LABEL


def _get(section: Any, key: str):
  return section.get(key) if isinstance(section, Mapping) or hasattr(section, "get") else None


def label_source(prm: Any) -> str:
  """The label source of a `prm` section (default "monte_carlo"); ConfigError naming both
  fields when `label` and `label_source` contradict, or an unknown value."""
  src, label = _get(prm, "label_source"), _get(prm, "label")
  if src is not None and src not in LABEL_SOURCES:
    raise ConfigError(
        f"config.prm.label_source must be one of {sorted(LABEL_SOURCES)}, got {src!r}"
    )
  if label is not None and label not in SOURCE_OF_LABEL:
    raise ConfigError(
        f"config.prm.label must be one of {sorted(SOURCE_OF_LABEL)} (or use "
        f"config.prm.label_source), got {label!r}"
    )
  if src is not None and label is not None and LABEL_SOURCES[src] != label:
    raise ConfigError(
        f"config.prm.label={label!r} and config.prm.label_source={src!r} contradict "
        f"(label_source {src!r} trains on the {LABEL_SOURCES[src]!r} labels); set one of them"
    )
  if src is not None:
    return src
  return SOURCE_OF_LABEL[label] if label is not None else "monte_carlo"


def record_label(prm: Any) -> str:
  """The record key ("soft", "hard", "exact") a `prm` section trains on."""
  return LABEL_SOURCES[label_source(prm)]


def ablation_sources(cfg: Any) -> tuple[str, ...]:
  """The label sources of config.verify.ablation other than the main PRM's, in order (empty
  without the field); ConfigError for an unknown or repeated entry."""
  if "verify" not in cfg or "ablation" not in cfg.verify:
    return ()
  ab = cfg.verify.ablation
  if isinstance(ab, str) or not isinstance(ab, (list, tuple)):
    raise ConfigError(
        f"config.verify.ablation must be a tuple of label sources, e.g. ('exact',), got {ab!r}"
    )
  bad = [s for s in ab if s not in LABEL_SOURCES]
  if bad:
    raise ConfigError(
        f"config.verify.ablation: unknown label source(s) {bad}; known: {sorted(LABEL_SOURCES)}"
    )
  if len(set(ab)) != len(ab):
    raise ConfigError(f"config.verify.ablation lists a label source twice: {tuple(ab)}")
  main = label_source(cfg.prm)
  return tuple(s for s in ab if s != main)
