"""ProcessBench (Zheng et al. 2024): does a PRM find the earliest wrong step?

  python -m ttc_jax.prm.processbench --prm DIR --split gsm8k|math|all [--threshold T]
      [--data-dir D] [--limit N]

Data: ``<data-dir>/{gsm8k,math}.json`` (default ``../shared/data/processbench`` next to
the repository root; its README defines the metric). Each item has ``problem``,
``steps`` and ``label`` (index of the earliest wrong step, -1 when all are right).

Each item's steps are written the way the PRM reads them (``prm.processbench_load``:
a ttc_jax value model reads a value at each step's delimiter, an external adapter at
its step tag, ``external_prm.StepFormat``), every step is scored, and the prediction is
the earliest step scored below the threshold (-1 if none). Per split:

  acc_err = share of erroneous items (label >= 0) whose prediction equals the label
  acc_cor = share of correct items (label == -1) predicted -1
  f1      = 2 acc_err acc_cor / (acc_err + acc_cor)     (0 when both are 0)

and the headline is the unweighted mean over the splits. The threshold is the one
given, or, for each reported split, the one with the best F1 on the *other* split
(scored for that purpose when only one is reported): never chosen on the items it is
reported on. Steps past the PRM's max_len are unscored (counted as ``truncated``);
items the tokenizer cannot encode are left unscored (predicted -1, counted).
Prints one JSON object; exit status 2 with a message naming the path on missing
data or PRM directories.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np

SPLITS = ("gsm8k", "math")
THRESHOLD_GRID = tuple(float(t) for t in np.round(np.arange(0.01, 1.0, 0.01), 2))


class DataError(FileNotFoundError):
  """ProcessBench data is missing or malformed (the message names the path)."""


def default_data_dir() -> str:
  """``../shared/data/processbench`` relative to the repository holding this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data", "processbench"))


def load_split(split: str, data_dir: str | None = None, limit: int | None = None) -> list[dict]:
  """The items of ``split`` (first ``limit``); DataError naming the missing/bad path."""
  if split not in SPLITS:
    raise ValueError(f"unknown ProcessBench split {split!r}; expected one of {SPLITS}")
  data_dir = data_dir or default_data_dir()
  if not os.path.isdir(data_dir):
    raise DataError(
        f"ProcessBench data directory {data_dir} does not exist (expected "
        f"{' and '.join(s + '.json' for s in SPLITS)} there; pass --data-dir)"
    )
  path = os.path.join(data_dir, f"{split}.json")
  if not os.path.isfile(path):
    raise DataError(f"ProcessBench file {path} does not exist (in data directory {data_dir})")
  try:
    with open(path) as fh:
      items = json.load(fh)
  except (OSError, ValueError) as e:
    raise DataError(f"ProcessBench file {path} is not readable JSON: {e}") from e
  if not isinstance(items, list):
    raise DataError(f"ProcessBench file {path} must hold a JSON list of items")
  for i, it in enumerate(items):
    ok = (
        isinstance(it, dict)
        and isinstance(it.get("problem"), str)
        and isinstance(it.get("steps"), list)
        and it["steps"]
        and all(isinstance(s, str) for s in it["steps"])
        and isinstance(it.get("label"), int)
        and -1 <= it["label"] < len(it["steps"])
    )
    if not ok:
      raise DataError(
          f"ProcessBench file {path}: item {i} needs problem (str), steps "
          f"(non-empty list of str) and label (-1 or a step index)"
      )
  return items[:limit] if limit else items


def first_error(scores: Sequence[float], threshold: float) -> int:
  """Index of the first step scored below ``threshold``; -1 when none is."""
  return next((k for k, s in enumerate(scores) if s < threshold), -1)


def split_metrics(predictions: Sequence[int], labels: Sequence[int]) -> dict:
  """acc_err, acc_cor and their harmonic mean f1 (the benchmark's definition)."""
  if len(predictions) != len(labels):
    raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
  err = [p == y for p, y in zip(predictions, labels) if y >= 0]
  cor = [p == -1 for p, y in zip(predictions, labels) if y < 0]
  acc_err = float(np.mean(err)) if err else float("nan")
  acc_cor = float(np.mean(cor)) if cor else float("nan")
  total = acc_err + acc_cor
  f1 = 2 * acc_err * acc_cor / total if total > 0 else (0.0 if total == 0 else float("nan"))
  return dict(acc_err=acc_err, acc_cor=acc_cor, f1=f1, erroneous=len(err), correct=len(cor))


def metrics_at(
    step_scores: Sequence[Sequence[float]], labels: Sequence[int], threshold: float
) -> dict:
  return split_metrics([first_error(s, threshold) for s in step_scores], labels)


def choose_threshold(
    step_scores: Sequence[Sequence[float]],
    labels: Sequence[int],
    grid: Sequence[float] = THRESHOLD_GRID,
) -> float:
  """The grid threshold with the best F1 on these items (ties: the smallest)."""
  best, best_f1 = grid[0], -1.0
  for t in grid:
    f1 = metrics_at(step_scores, labels, t)["f1"]
    if f1 == f1 and f1 > best_f1 + 1e-12:
      best, best_f1 = float(t), f1
  return best


def summarize(
    scores: dict[str, list[list[float]]],
    labels: dict[str, list[int]],
    report: Sequence[str],
    threshold: float | None = None,
) -> dict:
  """Per reported split: metrics, the threshold and where it came from; their means.

  ``scores``/``labels`` hold every scored split (reported ones and those used only to
  choose a threshold); without ``threshold`` each reported split's threshold is chosen
  on the other scored splits.
  """
  out = {}
  for split in report:
    if threshold is not None:
      t, source = float(threshold), "given"
    else:
      others = [s for s in scores if s != split]
      if not others:
        raise ValueError(
            f"no split other than {split} to choose the threshold on: "
            f"pass --threshold or score another split"
        )
      t = choose_threshold(
          [x for s in others for x in scores[s]], [y for s in others for y in labels[s]]
      )
      source = "chosen (max F1) on " + "+".join(others)
    out[split] = dict(
        metrics_at(scores[split], labels[split], t),
        threshold=t,
        threshold_source=source,
        items=len(labels[split]),
    )
  mean = {k: float(np.mean([out[s][k] for s in report])) for k in ("acc_err", "acc_cor", "f1")}
  return dict(
      splits=out,
      mean=mean,
      f1_mean=mean["f1"],
      threshold=(
          float(threshold) if threshold is not None else {s: out[s]["threshold"] for s in report}
      ),
      threshold_source=(
          "given" if threshold is not None else "chosen per split on the other split"
      ),
  )


def run(
    prm,
    splits: Sequence[str],
    data_dir: str | None = None,
    threshold: float | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    max_batch_tokens: int = 32768,
) -> dict:
  """Loads and scores ``splits`` (plus the other split when a threshold must be chosen)
  with ``prm`` (a ``processbench_load.LoadedPRM``) and returns the ``summarize`` dict with
  each split's counts of truncated and unencodable items."""
  from ttc_jax.prm import processbench_load

  scored = list(splits) if threshold is not None or len(splits) > 1 else list(SPLITS)
  data = {s: load_split(s, data_dir, limit) for s in scored}
  scores, labels, counts = {}, {}, {}
  for s in scored:
    scores[s], counts[s] = processbench_load.score_items(prm, data[s], batch_size, max_batch_tokens)
    labels[s] = [int(it["label"]) for it in data[s]]
  out = summarize(scores, labels, splits, threshold)
  for s in splits:
    out["splits"][s].update(counts[s])
  out["scored_splits"] = scored
  return out


def _args(argv):
  p = argparse.ArgumentParser(
      prog="python -m ttc_jax.prm.processbench",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
      "--prm",
      required=True,
      help="a PRM: a Hugging Face PRM directory (classifier "
      "or token-prob adapter), a ttc_jax value-model checkpoint, or a run directory",
  )
  p.add_argument("--split", required=True, choices=SPLITS + ("all",))
  p.add_argument(
      "--threshold",
      type=float,
      default=None,
      help="score below which a step is wrong; default: chosen on the other split",
  )
  p.add_argument("--data-dir", default=None, help=f"default: {default_data_dir()}")
  p.add_argument("--limit", type=int, default=None, help="first N items of each split")
  p.add_argument("--batch-size", type=int, default=8, help="rows per scoring batch")
  p.add_argument(
      "--max-batch-tokens",
      type=int,
      default=32768,
      help="fewer rows for long sequences: at most this many tokens a batch",
  )
  from ttc_jax.prm import processbench_load

  processbench_load.add_arguments(p)
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = _args(argv)
  from ttc_jax.prm import processbench_load

  splits = list(SPLITS) if args.split == "all" else [args.split]
  try:
    for s in (SPLITS if args.threshold is None else splits):  # data errors before loading
      load_split(s, args.data_dir, 1)
    prm = processbench_load.load_from_args(args)
    out = run(
        prm,
        splits,
        args.data_dir,
        args.threshold,
        args.limit,
        args.batch_size,
        args.max_batch_tokens,
    )
  except (DataError, processbench_load.PRMLoadError) as e:
    print(f"processbench: {e}", file=sys.stderr)
    return 2
  out = dict(prm=os.path.abspath(args.prm), prm_type=prm.kind, **out)
  print(json.dumps(json_safe(out), indent=1))
  return 0


def json_safe(obj):
  """``obj`` with NaN/inf floats (a split without erroneous or correct items) as None."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  return obj


if __name__ == "__main__":
  sys.exit(main())
