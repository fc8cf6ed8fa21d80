"""The verifier part of report.json (report["prm"], report["orm"], the best-of-N curves over
the eval_policy samples) and plots/verifiers.png."""

from __future__ import annotations

from ttc_jax.report.curves import curve_sets
from ttc_jax.report.plots import budget_curves, save

LABEL_KEYS = (
    "questions",
    "solutions_sampled",
    "solutions_kept",
    "prefixes",
    "rollouts",
    "rollout_tokens",
    "rollout_seconds",
    "rollouts_per_s",
    "rollout_tokens_per_s",
    "rollouts_unparsable",
    "sample_tokens",
    "seconds",
    "shards",
    "steps",
    "soft_label_auroc",
    "hard_label_auroc",
    "soft_label_mean",
    "exact_positive_fraction",
    "answer_correct_fraction",
)


def section(verifiers: dict) -> tuple[dict, dict, dict]:
  """report["prm"], report["orm"] and the extra curves from the verifier stages."""
  lab, ev = verifiers["labels"], verifiers["eval"]
  out = {}
  for kind in ("prm", "orm"):
    q, tr = ev[kind], verifiers[kind]
    out[kind] = dict(
        step_auroc=q["step_auroc"],
        first_error_accuracy=q["first_error_accuracy"],
        first_error=q["first_error"],
        num_scored_solutions=q["num_solutions"],
        num_scored_steps=q["num_steps"],
        exact_positive_fraction=q["positive_fraction"],
        threshold=q["threshold"],
        scoring_seconds=q["scoring_seconds"],
        first_error_accuracy_fixed=q["first_error_accuracy_fixed"],
        fixed_threshold=q["fixed_threshold"],
        train=dict(
            best_step=tr["best_step"],
            best_eval_loss=tr["best_eval_loss"],
            stopped_early=tr["stopped_early"],
            train_solutions=tr["train_solutions"],
            heldout_solutions=tr["heldout_solutions"],
            train_labels=tr["train_labels"],
            final_metrics=tr["final_metrics"],
        ),
    )
  out["prm"]["labels"] = {k: lab[k] for k in LABEL_KEYS if k in lab}
  out["prm"]["aggregation_at_max_n"] = ev["aggregation"]
  curves, by_level = curve_sets(ev["curves"], ev["curves_by_level"], skip=("majority",))
  return out, curves, by_level


def plot(rep: dict, workdir: str) -> str:
  """plots/verifiers.png: accuracy vs samples for majority and the verifier selections."""
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  styles = {
      "majority": "o-",
      "prm_best_of_n_weighted": "s-",
      "orm_best_of_n_weighted": "^--",
      "prm_best_of_n": "v:",
      "orm_best_of_n": "d:",
  }
  # Only curves over the eval_policy samples: the search curves are on a subset of the
  # questions and keyed by generation budget; they have their own plot (search.png).
  budget_curves(ax, {k: v for k, v in rep["curves"].items() if k in styles}, lambda k: styles[k])
  ax.grid(alpha=0.3)
  ax.set_xlabel("samples per question (generation budget)")
  ax.set_ylabel("accuracy (held-out questions)")
  if "prm" in rep:
    ax.set_title(f"best-of-N with verifiers (PRM step AUROC {rep['prm']['step_auroc']:.3f})")
  ax.legend(fontsize=8)
  return save(fig, workdir, "verifiers.png")
