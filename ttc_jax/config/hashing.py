"""Config sections as stage hashes see them (speed-only fields left out) and `config_hash`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import ml_collections

from ttc_jax.config.labels import record_label

# Search fields that change how fast a stage runs (or its memory), never what it computes (the
# kernels return the same results for every value, up to float rounding;
# tests/search/test_search.py, test_prefix_cache.py): left out of stage hashes, so turning them
# does not invalidate finished stages. cache_dtype stores caches at most as narrow as the
# models compute (bfloat16 under a float32 model is refused), so it never rounds them.
SEARCH_SPEED_FIELDS = ("compact_levels", "share_prefix", "cache_dtype")


# Fields of config.train that change speed, not results (up to float summation order).
TRAIN_SPEED_FIELDS = ("microbatches",)

# config.model: the attention implementation (models/attention.py; every one computes the
# reference's attention, up to float rounding).
MODEL_SPEED_FIELDS = ("attention",)

# config.revision.rl: row groups of an update (exact up to float summation order).
RL_SPEED_FIELDS = ("microbatches",)


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


def model_section(model: Any) -> dict:
  """`config.model` as a dict for stage hashes: without `MODEL_SPEED_FIELDS`."""
  return _hashed(model, MODEL_SPEED_FIELDS)


def rl_section(rl: Any) -> dict:
  """`config.revision.rl` as a dict for stage hashes: without `RL_SPEED_FIELDS`."""
  return _hashed(rl, RL_SPEED_FIELDS)


# Options of config.revision.sft added after runs were made without them: unset and 0 hash
# alike, so runs made before a field existed stay reusable.
REVISION_SFT_OPTIONAL_FIELDS = ("replay_fraction", "replay_foreign_fraction")


def revision_sft_section(sft: Any) -> dict:
  """`config.revision.sft` as a dict for stage hashes: without its optional fields at 0."""
  return {
      k: v
      for k, v in _as_dict(sft).items()
      if not (k in REVISION_SFT_OPTIONAL_FIELDS and not float(v or 0.0))
  }


def revision_section(revision: Any) -> dict:
  """All of `config.revision` for stage hashes, its `sft` by `revision_sft_section`."""
  d = _as_dict(revision)
  if "sft" in d:
    d["sft"] = revision_sft_section(d["sft"])
  if "rl" in d:
    d["rl"] = rl_section(d["rl"])
  return d


# config.verify fields that choose extra work of their own stage (`verifier_ablation`), never
# what the other stages reading `verify` compute: left out of their hashes.
VERIFY_EXTRA_FIELDS = ("ablation",)


def prm_section(prm: Any) -> dict:
  """`config.prm` for stage hashes: `label_source` resolved into `label` (the record key), so
  `label_source="monte_carlo"` hashes like `label="soft"`, and both like a config of either."""
  d = _as_dict(prm)
  if "label_source" in d or "label" in d:
    d["label"] = record_label(d)
    d.pop("label_source", None)
  return d


def verify_section(verify: Any) -> dict:
  """`config.verify` for stage hashes: without `VERIFY_EXTRA_FIELDS`."""
  return _hashed(verify, VERIFY_EXTRA_FIELDS)


def config_hash(section: Any) -> str:
  """Stable short hash of a config section (dict/ConfigDict/value)."""
  if isinstance(section, ml_collections.ConfigDict):
    section = section.to_dict()
  blob = json.dumps(section, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]
