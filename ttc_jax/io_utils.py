"""Atomic file writes: a temporary file in the same directory, then `os.replace`.

A reader never sees a half-written artifact, and a failed write leaves the
previous version in place.
"""

from __future__ import annotations

import json
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


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n")


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
