"""The revision part of report.json and its plots (schema in docs/results.md).

Curve keys (accuracy by generation budget N, all levels and per level):
  revision_sequential, revision_parallel, revision_best_ratio            SFT model, ORM selection
  revision_sequential_majority, ..._parallel_majority, ..._best_ratio_majority   majority vote
  revision_rl_sequential, revision_rl_parallel, ... (same with _rl_)    the RL policy
"""

from __future__ import annotations

import os
from typing import Any

from ttc_jax import io_utils
from ttc_jax.report.curves import curve
from ttc_jax.report.plots import budget_curves, save

KINDS = ("sequential", "parallel", "best_ratio")


def _curves_of(curves: dict, prefix: str) -> dict:
  out = {}
  for kind in KINDS:
    for sel, suffix in (("orm", ""), ("majority", "_majority")):
      if sel in curves[kind]:
        out[f"{prefix}_{kind}{suffix}"] = curve(curves[kind][sel])
  return out


def section(rev: dict) -> tuple[dict, dict, dict]:
  """(report["revision"], extra curves, extra curves_by_level) from the revision stages."""
  ev = rev["eval"]
  curves, by_level = {}, {}
  out: dict[str, Any] = dict(
      budgets=ev["budgets"],
      chain_lengths=ev["chain_lengths"],
      questions=ev["questions"],
      pass_at_step={},
      right_to_wrong={},
      wrong_to_right={},
      splits={},
      best_split={},
      stats={},
  )
  for which, prefix in (("sft", "revision"), ("rl", "revision_rl")):
    o = ev[which]["overall"]
    out["pass_at_step"][which] = o["pass_at_step"]
    out["right_to_wrong"][which] = o["flips"]["right_to_wrong"]
    out["wrong_to_right"][which] = o["flips"]["wrong_to_right"]
    out["splits"][which] = {
        sel: {str(n): v for n, v in per.items()} for sel, per in o["curves"]["splits"].items()
    }
    out["best_split"][which] = {
        sel: {str(n): v for n, v in per.items()} for sel, per in o["curves"]["best_split"].items()
    }
    out["stats"][which] = ev[which]["stats"]
    curves.update(_curves_of(o["curves"], prefix))
    for lv, s in ev[which]["by_level"].items():
      for k, c in _curves_of(s["curves"], prefix).items():
        by_level.setdefault(k, {})[lv] = c
    out.setdefault("pass_at_step_by_level", {})[which] = {
        lv: s["pass_at_step"] for lv, s in ev[which]["by_level"].items()
    }
  top = str(max(ev["budgets"]))
  seq = {w: curves[f"{p}_sequential"][top] for w, p in (("sft", "revision"), ("rl", "revision_rl"))}
  out["rl_vs_sft"] = dict(
      budget=int(top),
      sequential_sft=seq["sft"],
      sequential_rl=seq["rl"],
      sequential_gain=seq["rl"] - seq["sft"],
      right_to_wrong_sft=out["right_to_wrong"]["sft"],
      right_to_wrong_rl=out["right_to_wrong"]["rl"],
  )
  paired = ev.get("rl_vs_sft", {})  # absent in runs evaluated before it was added
  if "orm" in paired:
    out["rl_vs_sft"]["sequential_gain_standard_error"] = paired["orm"]["standard_error"]
    out["rl_vs_sft"]["sequential_gain_majority"] = paired["majority"]["gain"]
    out["rl_vs_sft"]["sequential_gain_majority_standard_error"] = paired["majority"][
        "standard_error"
    ]
  out["data"] = rev["data"]
  out["sft_train"] = {
      k: rev["sft"][k]
      for k in ("best_step", "best_eval_loss", "train_trajectories", "heldout_trajectories")
  }
  for key in ("replay_examples", "replay_foreign_examples"):  # only in runs that have them
    if key in rev["sft"]:
      out["sft_train"][key] = rev["sft"][key]
  out["orm_train"] = {
      k: rev["orm"][k]
      for k in ("best_step", "best_eval_loss", "train_solutions", "heldout_solutions")
  }
  out["rl_train"] = rev["rl"]
  return out, curves, by_level


def plot(rep: dict, workdir: str) -> list[str]:
  """plots/revision.png (budget curves, pass@1 by step) and plots/rl.png (RL training)."""
  import matplotlib.pyplot as plt

  rv = rep["revision"]
  fig, ax = plt.subplots(1, 2, figsize=(11, 4))
  styles = {
      "revision_sequential": "s-",
      "revision_parallel": "o-",
      "revision_best_ratio": "^-",
      "revision_sequential_majority": "s:",
      "revision_parallel_majority": "o:",
      "revision_rl_sequential": "s--",
      "revision_rl_parallel": "o--",
  }
  budget_curves(
      ax[0], {k: rep["curves"][k] for k in styles if rep["curves"].get(k)}, lambda k: styles[k]
  )
  ax[0].set_xlabel("generation budget")
  ax[0].set_ylabel(f"accuracy ({rv['questions']} held-out questions)")
  ax[0].set_title("revisions: sequential vs parallel")
  ax[0].grid(alpha=0.3)
  ax[0].legend(fontsize=7)
  for which, fmt_ in (("sft", "o-"), ("rl", "s--")):
    ys = rv["pass_at_step"][which]
    ax[1].plot(range(1, len(ys) + 1), ys, fmt_, label=f"{which} policy")
  ax[1].set_xlabel("revision step")
  ax[1].set_ylabel("pass@1")
  ax[1].set_title("pass@1 by revision step")
  ax[1].grid(alpha=0.3)
  ax[1].legend(fontsize=8)
  paths = [save(fig, workdir, "revision.png")]
  metrics = os.path.join(workdir, "revision_rl", "metrics.jsonl")
  if os.path.exists(metrics):
    rows = io_utils.read_jsonl(metrics)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    st = [r["step"] for r in rows]
    ax[0].plot(st, [r.get("reward") for r in rows], "o-", label="train reward")
    ev = [r for r in rows if "eval_reward" in r]
    ax[0].plot(
        [r["step"] for r in ev], [r["eval_reward"] for r in ev], "s--", label="held-out reward"
    )
    ax[0].set_xlabel("RL step")
    ax[0].set_title("reward (fraction right)")
    ax[0].legend(fontsize=8)
    ax[1].plot(st, [r.get("kl") for r in rows], "o-", label="KL to SFT (k3, per token)")
    ax[1].set_xlabel("RL step")
    ax[1].set_title("KL")
    ax[1].legend(fontsize=8)
    paths.append(save(fig, workdir, "rl.png"))
  return paths
