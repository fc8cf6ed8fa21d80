"""Experiment configuration: loading and overrides (`loading`), stage hashes (`hashing`) and
checks by section (`arith`, `text`, `revision`, `compute_optimal`, shared ones in `common`;
`validation.validate` runs them). `ConfigError` (`errors`) names the first problem.

Library code (train, search, prm, revision, compute_optimal) does not import this package; it
takes typed frozen settings (`train.loop.FitSettings`, `prm.train.ValueTrainSettings`,
`revision.sft.SFTSettings`, `revision.rl_settings.RLSettings`, `search.sweep.SearchSettings`,
...) that the pipeline builds from a section where it calls the library (`ttc_jax.config.settings`,
imported on its own so that loading a config needs neither jax nor flax).
"""

from ttc_jax.config.arith import REQUIRED, validate_arith, validate_verifiers
from ttc_jax.config.common import VALUE_TRAIN_FIELDS, validate_mesh, validate_search
from ttc_jax.config.compute_optimal import validate_compute_optimal
from ttc_jax.config.errors import ConfigError
from ttc_jax.config.hashing import (
    MODEL_SPEED_FIELDS,
    REVISION_SFT_OPTIONAL_FIELDS,
    RL_SPEED_FIELDS,
    SEARCH_SPEED_FIELDS,
    TRAIN_SPEED_FIELDS,
    VERIFY_EXTRA_FIELDS,
    config_hash,
    model_section,
    prm_section,
    revision_section,
    revision_sft_section,
    rl_section,
    search_section,
    train_section,
    verify_section,
)
from ttc_jax.config.labels import LABEL_SOURCES, ablation_sources, label_source, record_label
from ttc_jax.config.loading import apply_overrides, load_config, load_config_file
from ttc_jax.config.revision import validate_revision
from ttc_jax.config.text import validate_text
from ttc_jax.config.validation import TEXT_TASKS, validate

__all__ = [
    "MODEL_SPEED_FIELDS",
    "REQUIRED",
    "REVISION_SFT_OPTIONAL_FIELDS",
    "RL_SPEED_FIELDS",
    "SEARCH_SPEED_FIELDS",
    "TEXT_TASKS",
    "TRAIN_SPEED_FIELDS",
    "VERIFY_EXTRA_FIELDS",
    "LABEL_SOURCES",
    "ablation_sources",
    "label_source",
    "record_label",
    "prm_section",
    "verify_section",
    "VALUE_TRAIN_FIELDS",
    "ConfigError",
    "apply_overrides",
    "config_hash",
    "load_config",
    "load_config_file",
    "model_section",
    "revision_section",
    "revision_sft_section",
    "rl_section",
    "search_section",
    "train_section",
    "validate",
    "validate_arith",
    "validate_compute_optimal",
    "validate_mesh",
    "validate_revision",
    "validate_search",
    "validate_text",
    "validate_verifiers",
]
