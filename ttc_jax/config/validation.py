"""`validate`: every check of a config, by task (arith: `ttc_jax.pipeline`; gsm8k/math: the text
pipeline), raising `ConfigError` naming the first problem."""

from __future__ import annotations

import ml_collections

from ttc_jax.config.arith import validate_arith
from ttc_jax.config.compute_optimal import validate_compute_optimal
from ttc_jax.config.errors import ConfigError
from ttc_jax.config.revision import validate_revision
from ttc_jax.config.text import validate_text

TEXT_TASKS = ("gsm8k", "math")  # validated by ttc_jax.config.text


def validate(cfg: ml_collections.ConfigDict, shapes_only: bool = False) -> None:
  """Checks fields the pipeline relies on; raises ConfigError naming the problem.

  shapes_only: what compiling the config's programs needs (`ttc_jax.aot`): no data files, and
  Hugging Face directories with their config.json alone.
  """
  if "task" in cfg and cfg.task.get("name") in TEXT_TASKS:  # Hugging Face models on text
    validate_text(cfg, ConfigError, shapes_only=shapes_only)
    return
  validate_arith(cfg)
  validate_revision(cfg, ConfigError)
  validate_compute_optimal(cfg, ConfigError)
