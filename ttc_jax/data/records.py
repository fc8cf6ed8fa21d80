"""JSON records in array_record files: the on-disk format of derived datasets.

Derived datasets (PRM step labels, revision trajectories) are lists of JSON
objects written as array_record shards, one record per object, so they can be
read by index with grain or `array_record` without TensorFlow. Writes are
atomic (a temporary file in the same directory, then `os.replace`): a shard
either exists whole or not at all, which is what resumable stages rely on.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable, Sequence


def write_records(path: str, records: Iterable[dict[str, Any]]) -> int:
  """Writes `records` (JSON-serialisable dicts) to one array_record file; returns the count."""
  from array_record.python.array_record_module import ArrayRecordWriter

  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
  os.close(fd)
  n = 0
  try:
    writer = ArrayRecordWriter(tmp, "group_size:1")
    try:
      for r in records:
        writer.write(json.dumps(r, separators=(",", ":")).encode())
        n += 1
    finally:
      writer.close()
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return n


def read_records(paths: str | Sequence[str]) -> list[dict[str, Any]]:
  """Reads every record of one or more array_record files, in order.

  Raises ValueError naming the file when it is missing, not an array_record
  file, or holds a record that is not a JSON object.
  """
  from array_record.python.array_record_module import ArrayRecordReader

  out: list[dict[str, Any]] = []
  for path in [paths] if isinstance(paths, str) else list(paths):
    if not os.path.isfile(path):
      raise ValueError(f"record file {path} does not exist")
    try:
      reader = ArrayRecordReader(path)
    except Exception as e:  # the C++ reader raises RuntimeError/ValueError variants
      raise ValueError(f"corrupt record file {path}: {e}") from e
    try:
      raw = reader.read_all() if reader.num_records() else []
      reader.close()
    except Exception as e:
      raise ValueError(f"corrupt record file {path}: {e}") from e
    for i, b in enumerate(raw):
      try:
        rec = json.loads(b)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt record {i} in {path}: {e}") from e
      if not isinstance(rec, dict):
        raise ValueError(f"record {i} in {path} is not a JSON object")
      out.append(rec)
  return out
