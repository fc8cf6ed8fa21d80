"""GSM8K and MATH JSONL files: reading and validating rows, the splits a ``manual_dir``
provides, and ``TextDataSpec`` (the inputs of one prepared dataset, hashed into its config
name). No tensorflow-datasets here; the file layout, the records and the TFDS builders over
them are in ``ttc_jax.data.text_tfds``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

from ttc_jax import grading

__all__ = [
    "DATASET_NAMES",
    "PROMPT_TEMPLATES",
    "TextDataSpec",
    "read_split_rows",
    "split_files",
]

DATASET_NAMES = {"gsm8k": "ttc_gsm8k", "math": "ttc_math"}
PROMPT_TEMPLATES = {
    "gsm8k": "Question: {question}\nAnswer: ",
    "math": "Problem:\n{question}\n\nSolution:\n",
}
TEST500_FILE, TEST500_IDS_FILE = "test500.jsonl", "test500_ids.txt"


# ----------------------------------------------------------------------------- reading rows
def _read_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
  """``(line number, object)`` per non-blank line; errors name file and line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"expected data file {path!r} does not exist")
  rows = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: corrupt JSON line: {e}") from e
      if not isinstance(obj, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
      rows.append((lineno, obj))
  return rows


def _field(row: Mapping[str, Any], names: tuple[str, ...], where: str, types=(str,)) -> Any:
  for name in names:
    if name in row:
      value = row[name]
      if not isinstance(value, types) or isinstance(value, bool):
        expected = "/".join(t.__name__ for t in types)
        raise ValueError(
            f"{where}: field {name!r} should be {expected}, " f"got {type(value).__name__}"
        )
      return value
  raise ValueError(f"{where}: missing field {' or '.join(map(repr, names))} (has {sorted(row)})")


def _gsm8k_record(row: Mapping[str, Any], where: str, default_id: str) -> dict[str, str]:
  question = _field(row, ("question",), where).strip()
  solution = _field(row, ("answer",), where).strip()
  if "####" not in solution:
    raise ValueError(f"{where}: field 'answer' has no '#### N' final answer")
  answer = grading.extract_gsm8k_answer(solution)
  if not answer:
    raise ValueError(f"{where}: empty final answer after '####'")
  return {
      "question": question,
      "solution": solution,
      "answer": answer,
      "level": "",
      "subject": "",
      "unique_id": str(row.get("unique_id", default_id)),
  }


def _math_record(row: Mapping[str, Any], where: str, default_id: str) -> dict[str, str]:
  question = _field(row, ("problem",), where).strip()
  solution = _field(row, ("solution",), where).strip()
  has_answer = row.get("answer") is not None
  answer = _field(row, ("answer",), where) if has_answer else grading.last_boxed(solution)
  if answer is None or not answer.strip():
    raise ValueError(f"{where}: no 'answer' field and no \\boxed{{}} answer in the solution")
  level = _field(row, ("level",), where, types=(str, int))
  if isinstance(level, int) or level.strip().isdigit():
    level = f"Level {int(level)}"
  subject = _field(row, ("subject", "type"), where)
  uid = _field(row, ("unique_id",), where) if "unique_id" in row else default_id
  return {
      "question": question,
      "solution": solution,
      "answer": answer.strip(),
      "level": level.strip(),
      "subject": subject.strip(),
      "unique_id": uid,
  }


_RECORD_FNS = {"gsm8k": _gsm8k_record, "math": _math_record}


def _check_task(task: str) -> None:
  if task not in DATASET_NAMES:
    raise ValueError(f"unknown text task {task!r}; expected one of {sorted(DATASET_NAMES)}")


def _check_manual_dir(manual_dir: Any) -> str:
  if manual_dir is None or not os.path.isdir(os.fspath(manual_dir)):
    raise FileNotFoundError(
        f"manual_dir {manual_dir!r} is not an existing directory: put the task's JSONL files "
        "(train.jsonl, test.jsonl; see ttc_jax/data/text_tfds.py) there"
    )
  return os.fspath(manual_dir)


def split_files(task: str, manual_dir: Any) -> dict[str, str]:
  """``{split: file}`` for the splits this manual_dir provides (required ones
  are listed even when missing, so reading them names the missing file)."""
  _check_task(task)
  d = _check_manual_dir(manual_dir)
  files = {s: os.path.join(d, f"{s}.jsonl") for s in ("train", "test")}
  if task == "math":
    for name in (TEST500_FILE, TEST500_IDS_FILE):
      if os.path.isfile(os.path.join(d, name)):
        files["test500"] = os.path.join(d, name)
        break
  return files


def read_split_rows(task: str, manual_dir: Any, split: str) -> list[dict[str, str]]:
  """The validated records (without ``prompt``) of ``split``, in file order."""
  files = split_files(task, manual_dir)
  if split not in files:
    raise ValueError(
        f"split {split!r} not available for {task} in {manual_dir!r}: " f"have {sorted(files)}"
    )
  path = files[split]
  if path.endswith(TEST500_IDS_FILE):
    return _select_ids(task, manual_dir, path)
  make = _RECORD_FNS[task]
  records = [
      make(row, f"{path}:{lineno}", f"{split}/{lineno}") for lineno, row in _read_jsonl(path)
  ]
  if not records:
    raise ValueError(f"{path}: split {split!r} is empty")
  return records


def _select_ids(task: str, manual_dir: Any, ids_path: str) -> list[dict[str, str]]:
  with open(ids_path, encoding="utf-8") as f:
    ids = [line.strip() for line in f if line.strip()]
  if not ids:
    raise ValueError(f"{ids_path}: split 'test500' is empty")
  by_id = {r["unique_id"]: r for r in read_split_rows(task, manual_dir, "test")}
  missing = [i for i in ids if i not in by_id]
  if missing:
    raise ValueError(
        f"{ids_path}: {len(missing)} unique_id(s) not found in test.jsonl, " f"e.g. {missing[:3]}"
    )
  return [by_id[i] for i in ids]


# ----------------------------------------------------------------------------- dataset inputs
@dataclasses.dataclass(frozen=True)
class TextDataSpec:
  """The inputs of one prepared text dataset: task, files, prompt template."""

  task: str
  manual_dir: str
  prompt_template: str

  def params(self) -> dict[str, Any]:
    """Task, template and a sha256 prefix of every input file (by split)."""
    digests = {}
    for split, path in split_files(self.task, self.manual_dir).items():
      if not os.path.isfile(path):
        raise FileNotFoundError(f"expected data file {path!r} does not exist")
      with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
      digests[split] = f"{os.path.basename(path)}:{digest}"
    return {"task": self.task, "prompt_template": self.prompt_template, "files": digests}

  def config_name(self) -> str:
    """``<task>_<12 hex of sha256(params)>``, e.g. "math_3fa9c2d1e0b4"."""
    blob = json.dumps(self.params(), sort_keys=True).encode()
    return f"{self.task}_{hashlib.sha256(blob).hexdigest()[:12]}"
