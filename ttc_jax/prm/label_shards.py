"""Monte Carlo step labels of a whole dataset, shard by shard on disk.

Each shard of `LabelSettings.shard_questions` questions is labelled by
`labels.label_problems` and written as an array_record file
(`ttc_jax.data.records`) with a JSON sidecar of stats, so an interrupted
labelling run resumes at the first missing shard and produces the same labels
(the RNG is folded per shard). `load_labels` reads a labelled directory back.
"""

from __future__ import annotations

import glob
import math
import os
from typing import Callable, Sequence

import jax

from ttc_jax import io_utils
from ttc_jax.prm.labels import Equiv, Extract, LabelSettings, label_problems


def shard_path(out_dir: str, i: int) -> str:
  return os.path.join(out_dir, f"labels-{i:05d}.array_record")


def label_dataset(
    model,
    tokenizer,
    problems: Sequence[dict],
    out_dir: str,
    rng: jax.Array,
    settings: LabelSettings,
    *,
    extract_answer: Extract,
    equivalent: Equiv,
    check_solution=None,
    mesh=None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
  """Labels `problems` shard by shard into `out_dir`; resumes at the first missing shard.

  A shard is finished when both `labels-XXXXX.array_record` and its stats
  sidecar `labels-XXXXX.json` exist (the sidecar is written last, both
  atomically). Returns the summed stats with throughput figures.
  """
  from ttc_jax.data import records as records_lib

  n_shards = int(math.ceil(len(problems) / settings.shard_questions))
  totals: dict[str, float] = {}
  for i in range(n_shards):
    side = shard_path(out_dir, i)[: -len(".array_record")] + ".json"
    if os.path.exists(side) and os.path.exists(shard_path(out_dir, i)):
      st = io_utils.read_json(side)
      log(f"[prm_labels] shard {i + 1}/{n_shards} done before; skipped")
    else:
      part = problems[i * settings.shard_questions : (i + 1) * settings.shard_questions]
      recs, st = label_problems(
          model,
          tokenizer,
          part,
          jax.random.fold_in(rng, i),
          settings,
          extract_answer=extract_answer,
          equivalent=equivalent,
          check_solution=check_solution,
          mesh=mesh,
          progress=progress,
      )
      records_lib.write_records(shard_path(out_dir, i), recs)
      io_utils.atomic_write_json(side, st)
      log(
          f"[prm_labels] shard {i + 1}/{n_shards}: {st['solutions_kept']} solutions, "
          f"{st['rollouts']} rollouts, {st['rollout_tokens']} tokens in "
          f"{st['rollout_seconds']:.1f}s ({st['rollouts'] / max(st['rollout_seconds'], 1e-9):.0f}"
          f" rollouts/s, {st['rollout_tokens'] / max(st['rollout_seconds'], 1e-9):.0f} tok/s)"
      )
    for k, v in st.items():
      totals[k] = totals.get(k, 0) + v
  totals["shards"] = n_shards
  totals["rollouts_per_s"] = totals.get("rollouts", 0) / max(totals.get("rollout_seconds", 0), 1e-9)
  totals["rollout_tokens_per_s"] = totals.get("rollout_tokens", 0) / max(
      totals.get("rollout_seconds", 0), 1e-9
  )
  return totals


def load_labels(out_dir: str) -> list[dict]:
  """All label records of a labelled directory, in shard order."""
  from ttc_jax.data import records as records_lib

  paths = sorted(glob.glob(os.path.join(out_dir, "labels-*.array_record")))
  if not paths:
    raise ValueError(f"no label shards (labels-*.array_record) in {out_dir}")
  return records_lib.read_records(paths)
