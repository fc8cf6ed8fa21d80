"""report.json, report.md and plots for a run directory (schema: docs/results.md): the policy
section and the assembly of the per-family sections."""

from __future__ import annotations

import os

import jax

from ttc_jax import io_utils
from ttc_jax.prm.data import LABEL_SOURCES, SOURCE_OF_LABEL
from ttc_jax.report import ablation as ablation_report
from ttc_jax.report import compute_optimal as co_report
from ttc_jax.report import revision as revision_report
from ttc_jax.report import search as search_report
from ttc_jax.report import verifiers as verifier_report
from ttc_jax.report.curves import merge_curves
from ttc_jax.report.plots import budget_curves, save

SCHEMA_VERSION = 1


def build_report(
    cfg,
    levels,
    data: dict,
    policy: dict,
    ev: dict,
    wall: dict,
    total_seconds: float,
    verifiers: dict | None = None,
    search: dict | None = None,
    revision: dict | None = None,
    compute_optimal: dict | None = None,
    verifier_ablation: dict | None = None,
) -> dict:
  """Assembles the report dict. Keys named in issues are a stable contract."""
  overall, by_level = ev["overall"], ev["by_level"]
  pass1 = {name: by_level[name]["pass_at_1_greedy"] for name in levels if name in by_level}
  rep = {
      "schema_version": SCHEMA_VERSION,
      "config_name": cfg.name,
      "machine": dict(
          backend=jax.default_backend(),
          device_count=jax.device_count(),
          device_kind=jax.devices()[0].device_kind,
          cpu_count=os.cpu_count(),
      ),
      "levels": list(levels),
      "data": data,
      "policy": {
          "num_params": policy["num_params"],
          "final_train_metrics": policy["final_metrics"],
          "pass_at_1_by_level": pass1,
          "sampled_pass_at_1_by_level": {k: by_level[k]["pass_at_1_sampled"] for k in pass1},
          "pass_at_n_by_level": {k: by_level[k]["pass_at_n"] for k in pass1},
          "distinct_answers_by_level": {k: by_level[k]["distinct_answers"] for k in pass1},
          "pass_at_1": overall["pass_at_1_greedy"],
          "sampled_pass_at_1": overall["pass_at_1_sampled"],
          "temperature": ev["sampling"]["temperature"],
          "num_samples": ev["sampling"]["num_samples"],
          "sampling_tokens_per_s": ev["sampling"]["sampled"]["tokens_per_s"],
      },
      "curves": {"majority": {str(n): v for n, v in overall["majority"].items()}},
      "curves_by_level": {
          "majority": {k: {str(n): v for n, v in by_level[k]["majority"].items()} for k in pass1}
      },
      # total: this invocation's wall time; stages_total: the sum over all stages, also
      # those finished by an earlier (interrupted) invocation
      "wall_seconds": dict(wall, total=total_seconds, stages_total=float(sum(wall.values()))),
  }
  if verifiers is not None:
    sections, curves, by_level = verifier_report.section(verifiers)
    rep.update(sections)
    rep["curves"].update(curves)
    rep["curves_by_level"].update(by_level)
    # (the config checks guarantee label and label_source agree when both are set)
    source = cfg.prm.get("label_source") or SOURCE_OF_LABEL[cfg.prm.get("label", "soft")]
    rep["verify"] = dict(
        aggregation=cfg.verify.aggregation,
        label=cfg.prm.get("label") or LABEL_SOURCES[source],
        label_source=source,
    )
  if search is not None:
    rep["search"], curves, by_level = search_report.section(search)
    merge_curves(rep, curves, by_level)
  if revision is not None:
    rep["revision"], curves, by_level = revision_report.section(revision)
    merge_curves(rep, curves, by_level)
  if compute_optimal is not None:
    rep.update(co_report.section(compute_optimal))
  if verifier_ablation is not None:
    rep.update(ablation_report.section(verifier_ablation))
  return rep


def _plot(workdir: str, rep: dict) -> list[str]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
  lv = rep["levels"]
  p1 = rep["policy"]
  ax[0].plot(lv, [p1["pass_at_1_by_level"].get(k) for k in lv], "o-", label="greedy pass@1")
  ax[0].plot(
      lv,
      [p1["sampled_pass_at_1_by_level"].get(k) for k in lv],
      "s--",
      label=f"sampled pass@1 (T={p1['temperature']})",
  )
  ax[0].plot(
      lv, [p1["pass_at_n_by_level"].get(k) for k in lv], "^:", label=f"pass@{p1['num_samples']}"
  )
  ax[0].set_ylim(0, 1.02)
  ax[0].set_title("policy by difficulty level")
  ax[0].tick_params(axis="x", rotation=45)
  ax[0].legend(fontsize=8)
  budget_curves(ax[1], rep["curves_by_level"]["majority"], lambda _: "o-")
  ax[1].set_ylim(0, 1.02)
  ax[1].set_xlabel("samples (generation budget)")
  ax[1].set_title("majority vote accuracy")
  ax[1].legend(fontsize=7)
  paths = [save(fig, workdir, "policy.png")]
  if "prm" in rep or "prm_best_of_n_weighted" in rep["curves"]:  # a run with PRM scores
    paths.append(verifier_report.plot(rep, workdir))
  if "search" in rep:
    paths.append(search_report.plot(rep, workdir))
  if "revision" in rep:
    paths += revision_report.plot(rep, workdir)
  if "compute_optimal" in rep:
    paths += co_report.plot(rep, workdir)
  if "verifier_ablation" in rep:
    paths.append(ablation_report.plot(rep, workdir))
  return paths


def _markdown(rep: dict) -> str:
  p = rep["policy"]
  lines = [
      f"# ttc_jax report: {rep['config_name']}",
      "",
      f"Machine: {rep['machine']['backend']} x{rep['machine']['device_count']} "
      f"({rep['machine']['device_kind']}). Policy: {p['num_params']:,} parameters.",
      "",
      "| level | greedy pass@1 | sampled pass@1 | pass@N | distinct answers |",
      "|---|---|---|---|---|",
  ]
  for k in rep["levels"]:
    if k in p["pass_at_1_by_level"]:
      lines.append(
          f"| {k} | {p['pass_at_1_by_level'][k]:.3f} | "
          f"{p['sampled_pass_at_1_by_level'][k]:.3f} | "
          f"{p['pass_at_n_by_level'][k]:.3f} | {p['distinct_answers_by_level'][k]:.1f} |"
      )
  lines += [""]
  for k, curve in rep["curves"].items():
    lines.append(f"{k} (all levels): " + ", ".join(f"N={n}: {v:.3f}" for n, v in curve.items()))
  if "revision" in rep:
    r = rep["revision"]["rl_vs_sft"]
    lines.append(
        f"Revisions at budget {r['budget']}: sequential SFT {r['sequential_sft']:.3f}, "
        f"RL {r['sequential_rl']:.3f}; right-to-wrong flips SFT "
        f"{r['right_to_wrong_sft']:.3f}, RL {r['right_to_wrong_rl']:.3f}"
    )
  for kind in ("prm", "orm"):
    if kind in rep:
      q = rep[kind]
      lines.append(
          f"{kind.upper()}: step AUROC {q['step_auroc']:.3f}, first-error accuracy "
          f"{q['first_error_accuracy']:.3f} over {q['num_scored_steps']} steps"
      )
  if "compute_optimal" in rep:
    lines += co_report.markdown(rep)
  if "verifier_ablation" in rep:
    lines += ablation_report.markdown(rep)
  lines += [
      "",
      "Wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in rep["wall_seconds"].items()),
      "",
  ]
  lines += [f"![{os.path.basename(x)}]({x})" for x in rep.get("plots", [])]
  return "\n".join(lines) + "\n"


def write_report(workdir: str, rep: dict) -> None:
  """Writes plots, report.json and report.md atomically."""
  rep["plots"] = _plot(workdir, rep)
  io_utils.atomic_write_json(os.path.join(workdir, "report.json"), rep)
  io_utils.atomic_write_text(os.path.join(workdir, "report.md"), _markdown(rep))
