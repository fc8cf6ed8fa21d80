"""The run context: everything a stage's run function may use, passed explicitly.

`arith_context.make_context` (the embedded task: models trained by the pipeline) and
`text.make_context` (a local Hugging Face policy + PRM on GSM8K / MATH) build
one; a stage reads only these fields, so the stages shared by both pipelines
(`policy.eval_policy`, `policy.eval_large`, `verifiers.eval_search`,
`compute_optimal.analysis`) are written once and differ only in what the
context supplies (questions, answer functions, model loaders).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import ml_collections

from ttc_jax import config as config_lib
from ttc_jax.models.config import ModelConfig


@dataclasses.dataclass
class RunContext:
  """One run: its config, run directory, tokenizer, mesh and the task's functions.

  problems: the task's own question selection (arith: `(split, per_level, skip=0)`;
    text: `(limit=None)`), for the stages of one pipeline only.
  test_problems: the held-out questions a config section asks for (`cfg.eval`,
    `cfg.search`: arith reads its `questions_per_level`, text its `questions`).
  extract_answer, equivalent: the task's answer functions (text: after `prompt.stop_strings`).
  load_policy, load_prm: the policy and the PRM on this run's mesh.
  large_cfg, load_large: the larger model of the FLOPs-matched comparison (large_cfg()
    is None when a text run has none).
  load_lm: a model saved by a training stage, `(directory, model_cfg)`; None where
    nothing is trained (text).
  levels: difficulty levels, easiest first (text: set once the data stage ran).
  """

  cfg: ml_collections.ConfigDict
  workdir: str
  tokenizer: Any
  model_cfg: ModelConfig
  mesh: Any
  levels: list[str]
  progress: bool
  builder: Callable[[], Any]
  problems: Callable[..., list[dict]]
  test_problems: Callable[[Any], list[dict]]
  extract_answer: Callable[[str], Any]
  equivalent: Callable[[Any, Any], bool]
  load_policy: Callable[[], Any]
  load_prm: Callable[[], Any]
  large_cfg: Callable[[], ModelConfig | None]
  load_large: Callable[[], Any]
  load_lm: Callable[[str, ModelConfig], Any] | None = None

  def path(self, *parts: str) -> str:
    """A path under the run directory."""
    return os.path.join(self.workdir, *parts)

  def meta(self, sections: dict) -> dict:
    """Checkpoint metadata: the tokenizer's fingerprint and the stage's config hash."""
    return dict(
        tokenizer=self.tokenizer.fingerprint(), config_hash=config_lib.config_hash(sections)
    )
