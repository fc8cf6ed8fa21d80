"""report.json, report.md and plots for a run directory (schema: docs/results.md)."""

from __future__ import annotations

import os

import jax

from ttc_jax import io_utils

SCHEMA_VERSION = 1


def _curve(c: dict) -> dict:
  return {str(n): v for n, v in sorted(c.items(), key=lambda kv: int(kv[0]))}


def _verifier_sections(verifiers: dict) -> tuple[dict, dict, dict]:
  """report["prm"], report["orm"] and the extra curves from the verifier stages."""
  lab, ev = verifiers["labels"], verifiers["eval"]
  label_keys = ("questions", "solutions_sampled", "solutions_kept", "prefixes", "rollouts",
                "rollout_tokens", "rollout_seconds", "rollouts_per_s", "rollout_tokens_per_s",
                "rollouts_unparsable", "sample_tokens", "seconds", "shards", "steps",
                "soft_label_auroc", "hard_label_auroc", "soft_label_mean",
                "exact_positive_fraction", "answer_correct_fraction")
  out = {}
  for kind in ("prm", "orm"):
    q, tr = ev[kind], verifiers[kind]
    out[kind] = dict(
        step_auroc=q["step_auroc"], first_error_accuracy=q["first_error_accuracy"],
        first_error=q["first_error"], num_scored_solutions=q["num_solutions"],
        num_scored_steps=q["num_steps"], exact_positive_fraction=q["positive_fraction"],
        threshold=q["threshold"], scoring_seconds=q["scoring_seconds"],
        first_error_accuracy_fixed=q["first_error_accuracy_fixed"],
        fixed_threshold=q["fixed_threshold"],
        train=dict(best_step=tr["best_step"], best_eval_loss=tr["best_eval_loss"],
                   stopped_early=tr["stopped_early"], train_solutions=tr["train_solutions"],
                   heldout_solutions=tr["heldout_solutions"], train_labels=tr["train_labels"],
                   final_metrics=tr["final_metrics"]))
  out["prm"]["labels"] = {k: lab[k] for k in label_keys if k in lab}
  out["prm"]["aggregation_at_max_n"] = ev["aggregation"]
  curves = {k: _curve(v) for k, v in ev["curves"].items() if k != "majority"}
  by_level = {}
  for lv, cs in ev["curves_by_level"].items():
    for k, v in cs.items():
      if k != "majority":
        by_level.setdefault(k, {})[lv] = _curve(v)
  return out, curves, by_level


def build_report(cfg, levels, data: dict, policy: dict, ev: dict, wall: dict,
                 total_seconds: float, verifiers: dict | None = None,
                 search: dict | None = None, revision: dict | None = None,
                 compute_optimal: dict | None = None) -> dict:
  """Assembles the report dict. Keys named in issues are a stable contract."""
  overall, by_level = ev["overall"], ev["by_level"]
  pass1 = {name: by_level[name]["pass_at_1_greedy"] for name in levels if name in by_level}
  rep = {
      "schema_version": SCHEMA_VERSION,
      "config_name": cfg.name,
      "machine": dict(backend=jax.default_backend(), device_count=jax.device_count(),
                      device_kind=jax.devices()[0].device_kind, cpu_count=os.cpu_count()),
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
      "curves_by_level": {"majority": {k: {str(n): v for n, v in by_level[k]["majority"].items()}
                                       for k in pass1}},
      # total: this invocation's wall time; stages_total: the sum over all stages, also
      # those finished by an earlier (interrupted) invocation
      "wall_seconds": dict(wall, total=total_seconds, stages_total=float(sum(wall.values()))),
  }
  if verifiers is not None:
    sections, curves, by_level = _verifier_sections(verifiers)
    rep.update(sections)
    rep["curves"].update(curves)
    rep["curves_by_level"].update(by_level)
    rep["verify"] = dict(aggregation=cfg.verify.aggregation, label=cfg.prm.label)
  if search is not None:
    for m, c in search["curves"].items():
      rep["curves"][m] = _curve(c)
    for lv, cs in search["curves_by_level"].items():
      for m, c in cs.items():
        rep["curves_by_level"].setdefault(m, {})[lv] = _curve(c)
    rep["search"] = dict(questions=search["questions"], stats=search["stats"],
                         baselines={k: _curve(v) for k, v in search["baselines"].items()})
  if revision is not None:
    from ttc_jax.revision import report as revision_report
    rep["revision"], curves, by_level = revision_report.section(revision)
    rep["curves"].update(curves)
    for k, v in by_level.items():
      rep["curves_by_level"].setdefault(k, {}).update(v)
  if compute_optimal is not None:
    from ttc_jax.compute_optimal import report as co_report
    rep.update(co_report.section(compute_optimal))
  return rep


def _budget_curves(ax, series: dict, style) -> None:
  """Plots {label: {"N": accuracy}} against N on a log2 axis; style(label) -> fmt."""
  for k, curve in series.items():
    ns = sorted(curve, key=int)
    ax.plot([int(n) for n in ns], [curve[n] for n in ns], style(k), label=k)
  ax.set_xscale("log", base=2)


def _save(fig, workdir: str, name: str) -> str:
  """Writes plots/<name> atomically (temporary file, then rename); returns its relative path."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  p = os.path.join(workdir, "plots", name)
  fig.savefig(p + ".tmp.png", dpi=110)
  os.replace(p + ".tmp.png", p)
  plt.close(fig)
  return os.path.relpath(p, workdir)


def _plot(workdir: str, rep: dict) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
  lv = rep["levels"]
  p1 = rep["policy"]
  ax[0].plot(lv, [p1["pass_at_1_by_level"].get(k) for k in lv], "o-", label="greedy pass@1")
  ax[0].plot(lv, [p1["sampled_pass_at_1_by_level"].get(k) for k in lv], "s--",
             label=f"sampled pass@1 (T={p1['temperature']})")
  ax[0].plot(lv, [p1["pass_at_n_by_level"].get(k) for k in lv], "^:",
             label=f"pass@{p1['num_samples']}")
  ax[0].set_ylim(0, 1.02)
  ax[0].set_title("policy by difficulty level")
  ax[0].tick_params(axis="x", rotation=45)
  ax[0].legend(fontsize=8)
  _budget_curves(ax[1], rep["curves_by_level"]["majority"], lambda _: "o-")
  ax[1].set_ylim(0, 1.02)
  ax[1].set_xlabel("samples (generation budget)")
  ax[1].set_title("majority vote accuracy")
  ax[1].legend(fontsize=7)
  paths = [_save(fig, workdir, "policy.png")]
  if "prm" in rep or "prm_best_of_n_weighted" in rep["curves"]:   # a run with PRM scores
    paths.append(_plot_curves(rep, workdir))
  if "search" in rep:
    paths.append(_plot_search(rep, workdir))
  if "revision" in rep:
    from ttc_jax.revision import report as revision_report
    paths += revision_report.plot(rep, workdir)
  if "compute_optimal" in rep:
    from ttc_jax.compute_optimal import report as co_report
    paths += co_report.plot(rep, workdir)
  return paths


def _plot_search(rep: dict, workdir: str) -> str:
  """plots/search.png: accuracy vs generation budget, search kernels and best-of-N baselines."""
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  series = {f"{k} (same questions)": v for k, v in rep["search"]["baselines"].items()}
  series.update({m: rep["curves"][m] for m in rep["search"]["stats"]})
  _budget_curves(ax, series, lambda k: "o--" if "same" in k else "s-")
  ax.grid(alpha=0.3)
  ax.set_xlabel("generation budget")
  ax.set_ylabel(f"accuracy ({rep['search']['questions']} held-out questions)")
  ax.set_title("search vs best-of-N")
  ax.legend(fontsize=7)
  return _save(fig, workdir, "search.png")


def _plot_curves(rep: dict, workdir: str) -> str:
  """plots/verifiers.png: accuracy vs samples for majority and the verifier selections."""
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  styles = {"majority": "o-", "prm_best_of_n_weighted": "s-", "orm_best_of_n_weighted": "^--",
            "prm_best_of_n": "v:", "orm_best_of_n": "d:"}
  # Only curves over the eval_policy samples: the search curves are on a subset of the
  # questions and keyed by generation budget; they have their own plot (search.png).
  _budget_curves(ax, {k: v for k, v in rep["curves"].items() if k in styles},
                 lambda k: styles[k])
  ax.grid(alpha=0.3)
  ax.set_xlabel("samples per question (generation budget)")
  ax.set_ylabel("accuracy (held-out questions)")
  if "prm" in rep:
    ax.set_title(f"best-of-N with verifiers (PRM step AUROC {rep['prm']['step_auroc']:.3f})")
  ax.legend(fontsize=8)
  return _save(fig, workdir, "verifiers.png")


def _markdown(rep: dict) -> str:
  p = rep["policy"]
  lines = [f"# ttc_jax report: {rep['config_name']}", "",
           f"Machine: {rep['machine']['backend']} x{rep['machine']['device_count']} "
           f"({rep['machine']['device_kind']}). Policy: {p['num_params']:,} parameters.", "",
           "| level | greedy pass@1 | sampled pass@1 | pass@N | distinct answers |",
           "|---|---|---|---|---|"]
  for k in rep["levels"]:
    if k in p["pass_at_1_by_level"]:
      lines.append(f"| {k} | {p['pass_at_1_by_level'][k]:.3f} | "
                   f"{p['sampled_pass_at_1_by_level'][k]:.3f} | "
                   f"{p['pass_at_n_by_level'][k]:.3f} | {p['distinct_answers_by_level'][k]:.1f} |")
  lines += [""]
  for k, curve in rep["curves"].items():
    lines.append(f"{k} (all levels): " + ", ".join(f"N={n}: {v:.3f}" for n, v in curve.items()))
  if "revision" in rep:
    r = rep["revision"]["rl_vs_sft"]
    lines.append(f"Revisions at budget {r['budget']}: sequential SFT {r['sequential_sft']:.3f}, "
                 f"RL {r['sequential_rl']:.3f}; right-to-wrong flips SFT "
                 f"{r['right_to_wrong_sft']:.3f}, RL {r['right_to_wrong_rl']:.3f}")
  for kind in ("prm", "orm"):
    if kind in rep:
      q = rep[kind]
      lines.append(f"{kind.upper()}: step AUROC {q['step_auroc']:.3f}, first-error accuracy "
                   f"{q['first_error_accuracy']:.3f} over {q['num_scored_steps']} steps")
  if "compute_optimal" in rep:
    from ttc_jax.compute_optimal import report as co_report
    lines += co_report.markdown(rep)
  lines += ["",
      "Wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in rep["wall_seconds"].items()), ""]
  lines += [f"![{os.path.basename(x)}]({x})" for x in rep.get("plots", [])]
  return "\n".join(lines) + "\n"


def write_report(workdir: str, rep: dict) -> None:
  """Writes plots, report.json and report.md atomically."""
  rep["plots"] = _plot(workdir, rep)
  io_utils.atomic_write_json(os.path.join(workdir, "report.json"), rep)
  io_utils.atomic_write_text(os.path.join(workdir, "report.md"), _markdown(rep))
