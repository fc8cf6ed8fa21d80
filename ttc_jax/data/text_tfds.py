"""TFDS builders for GSM8K and MATH from local JSONL files (array_record, no TensorFlow).

The user provides the data (nothing is downloaded) in a ``manual_dir``, one JSON
object per line; blank lines are skipped:

GSM8K (as in openai/grade-school-math ``grade_school_math/data/``)::

    <manual_dir>/train.jsonl   {"question": "...", "answer": "... #### 72"}
    <manual_dir>/test.jsonl

MATH (e.g. hendrycks/math converted to JSONL, or PRM800K ``math_splits``)::

    <manual_dir>/train.jsonl   {"problem": "...", "solution": "... \\boxed{5} ...",
    <manual_dir>/test.jsonl     "answer": "5" (optional: else last \\boxed{} of the
                                solution), "level": "Level 3" or 3,
                                "subject": "Algebra" (or "type"), "unique_id" (optional)}
    <manual_dir>/test500.jsonl      optional: the paper's 500-question test split
                                    (PRM800K math_splits/test.jsonl), rows as above
    <manual_dir>/test500_ids.txt    optional, instead: one unique_id per line, picking
                                    rows of test.jsonl by their "unique_id"

Splits: ``train``, ``test``, and for MATH ``test500`` when one of the two
optional files exists. Like ``arith_tfds``, the ``BuilderConfig`` name hashes
the parameters (task, prompt template, sha256 of every input file), so other
files or another template go to another directory::

    <data_dir>/ttc_gsm8k|ttc_math/<config name>/1.0.0/...array_record-*

Records (text comes back as bytes; ``decode_record`` gives ``str``)::

    question  the problem text          prompt    PROMPT_TEMPLATES[task] filled in
    solution  the full reference text   answer    final answer (GSM8K: cleaned number)
    level     "Level 3" ("" for GSM8K)  subject   "Algebra" ("" for GSM8K)
    unique_id the row's unique_id, else "<split>/<line number>"

Errors name the problem: a missing manual_dir or file (``FileNotFoundError``),
a corrupt JSON line or missing/ill-typed field (``ValueError`` with file and
line number), an empty split (``ValueError``). Splits keep file order.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from etils import epath
import tensorflow_datasets as tfds

from ttc_jax.data.arith_tfds import (
    FILE_FORMAT,
    _quiet,
    decode_record,
    is_prepared,
    open_data_source,
)
from ttc_jax.data.text_files import (
    DATASET_NAMES,
    PROMPT_TEMPLATES,
    TextDataSpec,
    _check_manual_dir,
    _check_task,
    read_split_rows,
    split_files,
)

__all__ = [
    "build_text_dataset",
    "decode_record",
    "load_problems",
    "load_split",
    "make_builder",
]

VERSION = "1.0.0"
_MODULE_DOC = __doc__


# ----------------------------------------------------------------------------- builders
class TextConfig(tfds.core.BuilderConfig):
  """A BuilderConfig carrying a ``TextDataSpec``; its name hashes the spec."""

  def __init__(self, spec: TextDataSpec):
    super().__init__(name=spec.config_name(), description=f"{spec.task} from {spec.manual_dir}")
    self.spec = spec


class _CustomConfigFilter(logging.Filter):
  """Drops TFDS's "Using custom data configuration" warning for our configs."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (
        str(record.msg).startswith("Using custom data configuration")
        and any(isinstance(a, TextConfig) for a in (record.args or ()))
    )


logging.getLogger("absl").addFilter(_CustomConfigFilter())


class _TextBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared builder for the JSONL text tasks; see the module docstring."""

  VERSION = tfds.core.Version(VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MODULE_DOC
  TASK = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)  # see TtcArith.code_path

  def _info(self) -> tfds.core.DatasetInfo:
    spec = getattr(self.builder_config, "spec", None)
    text = tfds.features.Text
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.TASK} problems with reference solutions, from local JSONL files.",
        features=tfds.features.FeaturesDict(
            {
                k: text()
                for k in (
                    "question",
                    "prompt",
                    "solution",
                    "answer",
                    "level",
                    "subject",
                    "unique_id",
                )
            }
        ),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(spec.params() if spec else {}),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    return {s: self._generate_examples(manual_dir, s) for s in split_files(self.TASK, manual_dir)}

  def _generate_examples(self, manual_dir: str, split: str):
    template = self.builder_config.spec.prompt_template
    for i, rec in enumerate(read_split_rows(self.TASK, manual_dir, split)):
      yield i, dict(rec, prompt=template.format(question=rec["question"]))


class TtcGsm8k(_TextBuilder):
  name = DATASET_NAMES["gsm8k"]
  TASK = "gsm8k"


class TtcMath(_TextBuilder):
  name = DATASET_NAMES["math"]
  TASK = "math"


_BUILDERS = {"gsm8k": TtcGsm8k, "math": TtcMath}


def make_builder(
    task: str, data_dir: Any, manual_dir: Any, prompt_template: str | None = None
) -> _TextBuilder:
  """The builder for these inputs under ``data_dir`` (nothing written)."""
  _check_task(task)
  manual_dir = _check_manual_dir(manual_dir)
  data_dir = os.fspath(data_dir)
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise NotADirectoryError(f"TFDS data_dir {data_dir!r} exists and is not a directory")
  template = PROMPT_TEMPLATES[task] if prompt_template is None else prompt_template
  if "{question}" not in template:
    raise ValueError(f"prompt_template must contain '{{question}}', got {template!r}")
  config = TextConfig(TextDataSpec(task, os.path.abspath(manual_dir), template))
  try:
    return _BUILDERS[task](config=config, data_dir=data_dir, file_format=FILE_FORMAT)
  except Exception as e:
    raise RuntimeError(f"cannot read the TFDS {task} dataset under {data_dir!r}: {e}") from e


def build_text_dataset(
    task: str,
    data_dir: Any,
    manual_dir: Any,
    prompt_template: str | None = None,
    progress: bool = False,
) -> _TextBuilder:
  """Validates the JSONL files, prepares the dataset (once) and returns its builder.

  Idempotent: a prepared config directory is reused; other files or another
  template get another config directory.
  """
  builder = make_builder(task, data_dir, manual_dir, prompt_template)
  if not is_prepared(builder):
    for split in split_files(task, manual_dir):  # errors here, unwrapped by TFDS
      read_split_rows(task, manual_dir, split)
    with _quiet(progress):
      builder.download_and_prepare(
          file_format=FILE_FORMAT,
          download_config=tfds.download.DownloadConfig(
              manual_dir=os.fspath(manual_dir), try_download_gcs=False
          ),
      )
  return builder


def _resolve(builder_or_path: Any) -> tfds.core.DatasetBuilder:
  if isinstance(builder_or_path, tfds.core.DatasetBuilder):
    builder = builder_or_path
  elif isinstance(builder_or_path, Mapping):
    builder = make_builder(**builder_or_path)
  elif isinstance(builder_or_path, (str, os.PathLike)):
    path = os.fspath(builder_or_path)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
      raise FileNotFoundError(
          f"{path!r} is not a prepared TFDS version directory "
          "(no dataset_info.json); call build_text_dataset first"
      )
    try:
      builder = tfds.builder_from_directory(path)
    except Exception as e:
      raise RuntimeError(f"cannot read the TFDS dataset at {path!r}: {e}") from e
  else:
    raise TypeError(f"expected a builder, path or args mapping, got {type(builder_or_path)}")
  if not is_prepared(builder):
    raise FileNotFoundError(
        f"dataset not prepared at {os.fspath(builder.data_dir)!r}; " "call build_text_dataset first"
    )
  return builder


def load_split(builder_or_path: Any, split: str) -> Any:
  """Random-access data source (``len``, ``[i]``) of ``split``; raw records
  (see ``decode_record``). Accepts a builder, a prepared version directory, or
  a mapping of ``make_builder`` arguments (task, data_dir, manual_dir,
  prompt_template), read with ``tfds.data_source`` and never prepared here."""
  builder = _resolve(builder_or_path)
  path = os.fspath(builder.data_dir)
  if split not in builder.info.splits:
    raise ValueError(
        f"split {split!r} not in the dataset at {path!r}: " f"have {sorted(builder.info.splits)}"
    )
  return open_data_source(
      builder, split, builder_or_path["data_dir"] if isinstance(builder_or_path, Mapping) else None
  )


def load_problems(builder_or_path: Any, split: str) -> list[dict[str, Any]]:
  """All records of a split, decoded (``decode_record``), in stored order."""
  source = load_split(builder_or_path, split)
  return [decode_record(source[i]) for i in range(len(source))]
