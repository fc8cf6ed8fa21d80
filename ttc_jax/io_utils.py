"""Atomic file writes: a temporary file in the same directory, then `os.replace`.

A reader never sees a half-written artifact, and a failed write leaves the
previous version in place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any


def atomic_write_text(path: str, text: str) -> None:
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def strict(obj: Any) -> Any:
  """A copy with non-finite floats (NaN, inf) replaced by None: strict JSON."""
  if getattr(obj, "shape", None) == () and getattr(obj, "dtype", None) is not None:
    obj = obj.item()  # numpy / jax scalars
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  return obj


def as_json(obj: Any) -> Any:
  """`obj` as it reads back from strict JSON (string keys, lists, None for NaN)."""
  return json.loads(json.dumps(strict(obj), default=_default, allow_nan=False))


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes strict JSON (NaN/inf become null, e.g. an AUROC with one class absent)."""
  atomic_write_text(
      path,
      json.dumps(strict(obj), indent=2, sort_keys=False, default=_default, allow_nan=False) + "\n",
  )


def atomic_write_jsonl(path: str, rows) -> None:
  atomic_write_text(path, "".join(json.dumps(r, default=_default) + "\n" for r in rows))


def read_json(path: str) -> Any:
  """Reads JSON, naming the file in the error when it is missing or corrupt."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"corrupt JSON file {path}: {e}") from e


def read_jsonl(path: str) -> list:
  """Reads a JSON-lines file, naming the file and line when one is corrupt."""
  out = []
  with open(path, "rb") as f:
    for i, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"line {i} of {path} is not UTF-8 text: {e}") from e
      if not line.strip():
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"corrupt JSON line {i} in {path}: {e}") from e
  return out


def _default(o):
  try:
    import numpy as np

    if isinstance(o, np.generic):
      return o.item()
    if isinstance(o, np.ndarray):
      return o.tolist()
  except ImportError:
    pass
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")
