"""Checks of the configs for Hugging Face models on GSM8K / MATH (`ttc_jax.pipeline.text`).

Called from `ttc_jax.config.validate` when `cfg.task.name` is "gsm8k" or "math".
Sections (configs/gsm8k_hf.py documents every field):

  task       name ("gsm8k" | "math"), split ("test"; MATH also "test500")
  data       manual_dir: the directory with train.jsonl / test.jsonl
  hf         policy, prm (+ prm_type, prm_step_tag, ...), tokenizer, large_policy,
             param_dtype, dtype, max_len, eos_token, step_delimiter
  prompt     style ("plain" | "few_shot" | "chat") and its template fields
  mesh, eval, verify, search, compute_optimal
  processbench  (optional) data_dir: ProcessBench's gsm8k.json / math.json (empty: the
             stage is skipped), threshold (< 0: chosen on the other split), limit (0: all)

Every local path is a config field, empty by default; an empty required one
or one that does not exist raises `error` naming the field and the path.
"""

from __future__ import annotations

import os

from ttc_jax.config.common import validate_mesh, validate_search

SECTIONS = (
    "name",
    "seed",
    "task",
    "data",
    "hf",
    "prompt",
    "mesh",
    "eval",
    "verify",
    "search",
    "compute_optimal",
)
PRM_TYPES = ("value_model", "token_prob", "classifier")
PROMPT_STYLES = ("plain", "few_shot", "chat")


def _require_dir(value: str, field: str, error, what: str, needs: str | None = None) -> None:
  if not value:
    raise error(f"config.{field} is empty: set it to {what}, e.g. --config.{field}=/path/to/dir")
  if not os.path.isdir(value):
    raise error(
        f"config.{field}={value!r} is not an existing directory ({what}); " f"nothing is downloaded"
    )
  if needs and not os.path.exists(os.path.join(value, needs)):
    raise error(f"config.{field}={value!r} has no {needs} ({what})")


def validate_text(cfg, error=ValueError, shapes_only: bool = False) -> None:
  """Raises `error` naming the first missing section, empty/missing path or bad field.

  shapes_only: the checks of a run that only needs model shapes (`ttc_jax.aot`): no data
  directory, and checkpoint directories need their config.json alone (no tokenizer.json).
  """
  for k in SECTIONS:
    if k not in cfg:
      raise error(f"config has no {k!r} section/field (required: {SECTIONS})")
  h, p, e, s, co = cfg.hf, cfg.prompt, cfg.eval, cfg.search, cfg.compute_optimal
  if cfg.task.get("split", "test") not in ("test", "test500"):
    raise error(f"config.task.split must be 'test' or 'test500', got {cfg.task.split!r}")
  if not shapes_only:
    _require_dir(
        cfg.data.manual_dir,
        "data.manual_dir",
        error,
        f"the directory holding the {cfg.task.name} train.jsonl / test.jsonl",
        needs="test.jsonl",
    )
  _require_dir(
      h.policy,
      "hf.policy",
      error,
      "a local Hugging Face causal LM checkpoint " "(config.json + *.safetensors)",
      needs="config.json",
  )
  tok = h.tokenizer or h.policy
  if not shapes_only and not os.path.exists(
      tok if tok.endswith(".json") else os.path.join(tok, "tokenizer.json")
  ):
    raise error(
        f"no tokenizer.json at config.hf.tokenizer (or, when empty, config.hf.policy) " f"= {tok!r}"
    )
  if h.prm_type not in PRM_TYPES:
    raise error(f"config.hf.prm_type must be one of {PRM_TYPES}, got {h.prm_type!r}")
  _require_dir(
      h.prm,
      "hf.prm",
      error,
      "a ttc_jax value-model checkpoint directory"
      if h.prm_type == "value_model"
      else f"a local Hugging Face PRM checkpoint ({h.prm_type})",
  )
  if h.prm_type != "value_model" and not h.prm_step_tag:
    raise error(
        f"config.hf.prm_step_tag is empty: a {h.prm_type} PRM reads its scores at a "
        "step tag token (e.g. 'ки' for Math-Shepherd, '<extra_0>' for Qwen2.5-Math-PRM)"
    )
  if h.prm_base:
    _require_dir(
        h.prm_base,
        "hf.prm_base",
        error,
        "the HF checkpoint whose config.json " "describes the value model's backbone",
        needs="config.json",
    )
  if h.large_policy:
    _require_dir(
        h.large_policy,
        "hf.large_policy",
        error,
        "a larger HF checkpoint for the " "FLOPs-matched comparison",
        needs="config.json",
    )
    if float(co.get("pretrain_tokens") or 0) <= 0:
      raise error(
          "config.hf.large_policy is set, so config.compute_optimal.pretrain_tokens "
          "(the checkpoints' documented pre-training tokens) must be positive"
      )
  if h.param_dtype not in ("float32", "bfloat16") or h.dtype not in ("", "float32", "bfloat16"):
    raise error(
        f"config.hf.param_dtype/dtype must be float32 or bfloat16, got "
        f"{h.param_dtype!r}/{h.dtype!r}"
    )
  if int(h.max_len) <= int(e.max_new_tokens):
    raise error(
        f"config.hf.max_len={h.max_len} leaves no room for prompts before "
        f"eval.max_new_tokens={e.max_new_tokens}"
    )
  if p.style not in PROMPT_STYLES:
    raise error(f"config.prompt.style must be one of {PROMPT_STYLES}, got {p.style!r}")
  if p.style == "plain" and "{question}" not in p.template:
    raise error(f"config.prompt.template must contain '{{question}}', got {p.template!r}")
  if p.style == "chat" and "{question}" not in p.user_format:
    raise error(f"config.prompt.user_format must contain '{{question}}', got {p.user_format!r}")
  for f in ("questions", "num_samples", "max_new_tokens", "max_batch"):
    if int(e[f]) <= 0:
      raise error(f"config.eval.{f} must be positive, got {e[f]}")
  if any(n > e.num_samples or n <= 0 for n in e.majority_ns):
    raise error(
        f"config.eval.majority_ns {tuple(e.majority_ns)} must lie in "
        f"1..num_samples={e.num_samples}"
    )
  if cfg.verify.aggregation not in ("last", "min", "prod"):
    raise error(
        f"config.verify.aggregation must be last, min or prod, " f"got {cfg.verify.aggregation!r}"
    )
  if int(s.questions) > int(e.questions):
    raise error(
        f"config.search.questions ({s.questions}) exceeds eval.questions "
        f"({e.questions}): the analysis needs the policy's samples for every "
        "searched question"
    )
  validate_search(s)
  validate_mesh(cfg)
  if int(co.num_bins) < 1 or int(co.num_folds) < 2:
    raise error(
        f"config.compute_optimal needs num_bins >= 1 and num_folds >= 2, got "
        f"{co.num_bins} and {co.num_folds}"
    )
  if int(s.questions) < int(co.num_bins) * int(co.num_folds):
    raise error(
        f"config.search.questions={s.questions} is too few for "
        f"{co.num_bins} difficulty bins x {co.num_folds} folds"
    )
  _validate_processbench(cfg, error)
  if not list(co.r_values) or any(float(r) <= 0 for r in co.r_values):
    raise error(
        f"config.compute_optimal.r_values must be positive ratios, got " f"{list(co.r_values)}"
    )


def _validate_processbench(cfg, error) -> None:
  """The optional processbench section: its data files exist when data_dir is set."""
  pb = cfg.get("processbench")
  if pb is None or not pb.get("data_dir"):
    return
  threshold, limit = float(pb.get("threshold", -1.0)), int(pb.get("limit", 0))
  if threshold > 1 or limit < 0:
    raise error(
        f"config.processbench needs threshold <= 1 (< 0: chosen on the other split) "
        f"and limit >= 0, got {threshold} and {limit}"
    )
  needed = ("gsm8k", "math") if threshold < 0 else (cfg.task.name,)
  for split in needed:
    path = os.path.join(pb.data_dir, f"{split}.json")
    if not os.path.isfile(path):
      raise error(
          f"config.processbench.data_dir={pb.data_dir!r} has no {split}.json "
          f"(ProcessBench's {split} split)"
      )
