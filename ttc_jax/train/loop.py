"""The training loop: steps, periodic eval, JSONL metrics, progress bar, checkpoints.

Host syncs happen only at logging/eval/checkpoint steps, so the device runs
ahead of Python between them. A run resumes from the latest checkpoint in
its directory (model, optimiser and step; the data iterator's state too when
the iterator supports `get_state`/`set_state`, like grain's; any other
iterator is advanced past the batches already trained on, which reproduces
its position when it is deterministic). A resumed run drops the metrics lines
logged after its checkpoint (and a line cut short by a kill), so metrics.jsonl
reads as if the run had never been interrupted; with deterministic data it
ends with the same parameters as an uninterrupted run
(tests/train/test_kill_resume.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from tqdm.auto import tqdm

from ttc_jax import io_utils
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.trainer import Trainer


class MetricsWriter:
  """Appends one JSON object per line to `path` (created with its directory)."""

  def __init__(self, path: str | None):
    self.path = path
    if path:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def truncate_after(self, step: int) -> int:
    """Keeps only the records with `step` <= `step` (rewritten atomically).

    Lines logged after the checkpoint a run resumes from would otherwise
    appear twice, and a kill during a write can leave a partial last line.
    Returns the number of lines dropped.
    """
    if not self.path or not os.path.exists(self.path):
      return 0
    with open(self.path) as f:
      lines = f.read().split("\n")
    keep, dropped = [], 0
    for line in lines:
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
        ok = isinstance(rec, dict) and int(rec.get("step", 0)) <= step
      except (ValueError, TypeError):
        ok = False  # a partial line from a kill
      if ok:
        keep.append(line + "\n")
      else:
        dropped += 1
    if dropped:
      io_utils.atomic_write_text(self.path, "".join(keep))
    return dropped

  def write(self, record: dict) -> None:
    if not self.path:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")


def _host(metrics: dict) -> dict:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def evaluate(trainer: Trainer, batches: Iterable[dict]) -> dict:
  """Loss-token-weighted mean of eval metrics over `batches`."""
  sums: dict[str, float] = {}
  total = 0.0
  for batch in batches:
    m = _host(trainer.eval_step(batch))
    w = m.get("loss_tokens", 1.0)
    total += w
    for k, v in m.items():
      if k != "loss_tokens":
        sums[k] = sums.get(k, 0.0) + v * w
  if not total:
    raise ValueError("evaluation got no batches (or no loss tokens)")
  return {f"eval_{k}": v / total for k, v in sums.items()}


def fit(
    trainer: Trainer,
    data: Iterator[dict],
    *,
    steps: int,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 0,
    eval_batches: Callable[[], Iterable[dict]] | None = None,
    eval_every: int = 0,
    log_every: int = 50,
    metrics_path: str | None = None,
    flops_per_step: float = 0.0,
    tokens_per_step: int = 0,
    lr_schedule: Callable[[int], Any] | None = None,
    meta: dict | None = None,
    desc: str = "train",
    progress: bool = True,
    patience: int = 0,
    select_metric: str = "eval_loss",
    best_checkpointer: Checkpointer | None = None,
) -> dict:
  """Trains `trainer` for `steps` optimiser steps in total (resuming if possible).

  Early stopping: at each eval the `select_metric` (lower is better) is
  compared with the best so far; an improvement saves the state to
  `best_checkpointer` (when given), and `patience` > 0 evals in a row
  without one end training. The best-so-far record travels in checkpoint
  meta, so a resumed run keeps counting.

  Returns the last logged metrics (with eval metrics when evaluated), plus
  `best_step`, `best_<select_metric>` and `stopped_early` when evaluating.
  """
  writer = MetricsWriter(metrics_path)
  start = 0
  skipped = 0
  last: dict = {}
  best = dict(step=None, value=float("inf"), bad=0)
  if checkpointer is not None and checkpointer.latest_step() is not None:
    trainer.state, ck_meta = checkpointer.restore(trainer.state)
    start = int(ck_meta["step"])
    best = ck_meta.get("best", best)
    skipped = int(ck_meta.get("skipped_steps", 0))
    if "data_state" in ck_meta and hasattr(data, "set_state"):
      data.set_state(ck_meta["data_state"])
    else:  # replay a deterministic iterator
      for _ in range(start):
        next(data)
    last = dict(ck_meta.get("last", {}))  # returned as is if no step is left
    print(f"[{desc}] resuming from step {start} ({checkpointer.directory})")
  if checkpointer is not None:
    dropped = writer.truncate_after(start)
    if dropped:
      print(f"[{desc}] dropped {dropped} metrics line(s) logged after step {start}")
  end = steps
  if start and patience > 0 and best.get("bad", 0) >= patience:
    end = start  # it had stopped early at its checkpoint
    print(f"[{desc}] stopped early at step {start} before; not training further")
  bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, leave=False)
  t_last, step_last = time.perf_counter(), start
  pending: list[dict] = []
  for step in range(start + 1, end + 1):
    batch = next(data)
    pending.append(trainer.train_step(batch))
    bar.update(1)
    is_log = step % max(log_every, 1) == 0 or step == steps
    is_eval = eval_batches is not None and eval_every and (step % eval_every == 0 or step == steps)
    is_ckpt = checkpointer is not None and (
        (checkpoint_every and step % checkpoint_every == 0) or step == steps
    )
    if not (is_log or is_eval or is_ckpt):
      continue
    rows = [_host(m) for m in pending]  # the only host sync in the loop
    first = step - len(rows) + 1
    bad = [
        (first + i, [k for k, v in r.items() if not np.isfinite(v)] or ["nonfinite flag"])
        for i, r in enumerate(rows)
        if r.get("nonfinite", 0.0) or not all(np.isfinite(v) for v in r.values())
    ]
    pending.clear()
    if bad and not getattr(trainer, "skip_nonfinite", False):
      s0, what = bad[0]
      raise FloatingPointError(
          f"{desc}: non-finite {', '.join(what)} at step {s0} (first of {len(bad)} bad steps "
          f"up to step {step}); no checkpoint was written after it. "
          "Lower the learning rate, or set skip_nonfinite to skip such steps"
      )
    skipped += len(bad)
    if bad:
      print(f"[{desc}] skipped {len(bad)} non-finite step(s): {[b[0] for b in bad]}")
    bad_steps = {b[0] for b in bad}
    rows = [r for i, r in enumerate(rows) if first + i not in bad_steps] or rows[-1:]
    now = time.perf_counter()
    dt, n = now - t_last, step - step_last
    t_last, step_last = now, step
    last = {k: float(np.mean([r[k] for r in rows])) for k in rows[-1]}
    last.update(step=step, step_time_s=dt / max(n, 1), skipped_steps=skipped)
    if tokens_per_step:
      last["tokens_per_s"] = tokens_per_step * n / dt
    if flops_per_step:
      last["flops_per_s"] = flops_per_step * n / dt
    if lr_schedule is not None:
      last["lr"] = float(lr_schedule(step))
    stop = False
    if is_eval:
      last.update(evaluate(trainer, eval_batches()))
      t_last = time.perf_counter()  # eval time is not training time
      if select_metric not in last:
        raise KeyError(
            f"{desc}: select_metric {select_metric!r} not in eval metrics " f"{sorted(last)}"
        )
      if last[select_metric] < best["value"]:
        best = dict(step=step, value=last[select_metric], bad=0)
        if best_checkpointer is not None:
          best_checkpointer.save(
              step, trainer.state, dict(meta or {}, best=best), force=True, replace=True
          )
      else:
        best["bad"] += 1
        stop = patience > 0 and best["bad"] >= patience
      last.update(
          best_step=best["step"], stopped_early=stop, **{f"best_{select_metric}": best["value"]}
      )
    bar.set_postfix(loss=f"{last['loss']:.3f}")
    writer.write(last)
    if is_ckpt or (stop and checkpointer is not None):
      ck_meta = dict(meta or {}, best=best, skipped_steps=skipped, last=io_utils.strict(last))
      if hasattr(data, "get_state"):
        ck_meta["data_state"] = data.get_state()
      checkpointer.save(step, trainer.state, ck_meta, force=True)
    if stop:
      print(
          f"[{desc}] early stop at step {step}: {select_metric} has not improved on "
          f"{best['value']:.4f} (step {best['step']}) for {patience} evals"
      )
      break
  bar.close()
  if checkpointer is not None:
    checkpointer.wait()
  return last


@dataclasses.dataclass(frozen=True)
class FitSettings:
  """The loop fields of a training section, as `fit_best` reads them.

  steps: optimiser steps in total; eval_every: steps between evals, which are also the
  resumable checkpoints; log_every: steps between metrics lines; patience: evals in a row
  without a better eval loss that end training (0: never); skip_nonfinite: the caller's
  `Trainer` skips a step with a non-finite loss or gradient norm instead of raising.
  """

  steps: int
  eval_every: int
  log_every: int
  patience: int
  skip_nonfinite: bool = False


def fit_best(
    trainer: Trainer,
    data: Iterator[dict],
    eval_batches: Callable[[], Iterable[dict]],
    settings: FitSettings,
    out_dir: str,
    *,
    flops_per_step: float = 0.0,
    tokens_per_step: int = 0,
    meta: dict | None = None,
    desc: str = "train",
    progress: bool = True,
) -> dict:
  """`fit` with early stopping that leaves the best state in `trainer` and on disk.

  settings: steps, eval_every (also the checkpoint interval), log_every, patience
  (`FitSettings`). Writes out_dir/{checkpoints,best,model,metrics.jsonl}: resumable
  checkpoints, the best state so far, and the best model alone (saved at its
  step with `meta`). Returns fit's last metrics.
  """
  from flax import nnx

  s = settings
  ck = Checkpointer(os.path.join(out_dir, "checkpoints"), max_to_keep=1)
  best_ck = Checkpointer(os.path.join(out_dir, "best"), max_to_keep=1, async_save=False)
  last = fit(
      trainer,
      data,
      steps=s.steps,
      checkpointer=ck,
      checkpoint_every=s.eval_every,
      eval_batches=eval_batches,
      eval_every=s.eval_every,
      log_every=s.log_every,
      metrics_path=os.path.join(out_dir, "metrics.jsonl"),
      flops_per_step=flops_per_step,
      tokens_per_step=tokens_per_step,
      meta=meta,
      desc=desc,
      progress=progress,
      patience=s.patience,
      best_checkpointer=best_ck,
  )
  ck.close()
  trainer.state, _ = best_ck.restore(trainer.state)
  best_ck.close()
  model_ck = Checkpointer(os.path.join(out_dir, "model"), max_to_keep=1, async_save=False)
  model_ck.save(int(last["best_step"]), nnx.state(trainer.model), dict(meta or {}), force=True)
  model_ck.close()
  return last
