"""Checks of the optional `compute_optimal` config section (called from `ttc_jax.config.validate`).

compute_optimal.num_bins     difficulty bins (paper: 5 quantiles)
compute_optimal.num_folds    cross-validation folds inside each bin (paper: 2)
compute_optimal.seed         fold assignment seed
compute_optimal.r_values     D_inference / D_pretrain ratios (paper: 0.16, 0.79, 22)
compute_optimal.large_model  ModelConfig fields overriding `model` for the larger model
"""

from __future__ import annotations

FIELDS = ("num_bins", "num_folds", "seed", "r_values", "large_model")
NEEDS = ("labels", "search", "revision")


def validate_compute_optimal(cfg, error=ValueError) -> None:
  """Raises `error` naming the first bad field of cfg.compute_optimal (absent: no-op)."""
  if "compute_optimal" not in cfg:
    return
  co = cfg.compute_optimal
  for f in FIELDS:
    if f not in co:
      raise error(f"config.compute_optimal has no field {f!r}")
  for sec in NEEDS:
    if sec not in cfg:
      raise error(
          f"config.compute_optimal needs the {sec!r} section (the analysis reads its " f"results)"
      )
  if int(co.num_bins) < 1 or int(co.num_folds) < 2:
    raise error(
        f"config.compute_optimal needs num_bins >= 1 and num_folds >= 2, got "
        f"{co.num_bins} and {co.num_folds}"
    )
  rs = list(co.r_values)
  if not rs or any(float(r) <= 0 for r in rs):
    raise error(f"config.compute_optimal.r_values must be positive ratios, got {rs}")
  model = cfg.model.to_dict()
  unknown = [k for k in co.large_model.to_dict() if k not in model]
  if unknown:
    raise error(
        f"config.compute_optimal.large_model sets unknown model fields {unknown}; "
        f"known: {sorted(model)}"
    )
  bad = [
      k for k in ("vocab_size", "max_len") if k in co.large_model and co.large_model[k] != model[k]
  ]
  if bad:
    raise error(
        f"config.compute_optimal.large_model must keep the policy's {bad} "
        f"(same tokenizer and data)"
    )
  per_level = int(cfg.search.questions_per_level)
  if per_level > int(cfg.eval.questions_per_level):
    raise error(
        f"config.search.questions_per_level ({per_level}) exceeds "
        f"eval.questions_per_level ({cfg.eval.questions_per_level}): the analysis needs "
        f"the policy's samples for every searched question"
    )
