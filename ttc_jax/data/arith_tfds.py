"""TFDS builder for the embedded arithmetic task (array_record, no TensorFlow).

The generation parameters (levels, problems per level per split, seed) live in
a ``BuilderConfig`` whose *name* is a hash of them, so data prepared with other
parameters sits in another directory and is never read as this data::

    <data_dir>/ttc_arith/<config name>/1.0.0/ttc_arith-{train,test}.array_record-*

The hash also covers a probe of ``arith.generate``'s output (a few problems),
so a change in the generator gives a new config too.

Records (``tfds.data_source`` returns text as bytes; ``decode_record`` turns a
record into plain ``str``/``int``)::

    question  Text    "3+4*2"            prompt  Text  "3+4*2\\n"
    solution  Text    "4*2=8\\n3+8=11\\nAnswer: 11"
    answer    int64   11                  level   Text  "ops2_d1"
    num_ops   int32   2                   digits  int32 1

Splits keep ``arith.generate`` order (``disable_shuffling``), so record ``i``
of a split is problem ``i`` of ``arith.generate(split, ...)``.

TFDS is imported here at module level: import this module only where
tensorflow-datasets is installed (``ttc_jax.data`` itself does not import it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Mapping

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ttc_jax.tasks import arith

DATASET_NAME = "ttc_arith"
VERSION = "1.0.0"
FILE_FORMAT = "array_record"
SPLITS = ("train", "test")
_PROBE_PER_LEVEL = 2


class _CustomConfigFilter(logging.Filter):
  """Drops TFDS's "Using custom data configuration" warning for our configs."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (
        str(record.msg).startswith("Using custom data configuration")
        and any(isinstance(a, ArithConfig) for a in (record.args or ()))
    )


logging.getLogger("absl").addFilter(_CustomConfigFilter())


@contextlib.contextmanager
def _quiet(progress: bool):
  """Turns TFDS progress bars off (unless ``progress``), then restores them."""
  was = getattr(tfds.core.utils.tqdm_utils, "_active", True)
  tfds.display_progress_bar(progress)
  try:
    yield
  finally:
    tfds.display_progress_bar(was)


@dataclasses.dataclass(frozen=True)
class ArithDataSpec:
  """The generation parameters of one prepared dataset.

  Attributes:
    levels: level spec for ``arith.parse_levels``, e.g. "ops=1-6,digits=1".
    train_per_level: problems per level in the train split.
    test_per_level: problems per level in the test split (small levels may
      yield fewer: ``arith.generate`` returns only unique test questions).
    seed: generation seed.
  """

  levels: str
  train_per_level: int
  test_per_level: int
  seed: int

  def level_names(self) -> list[str]:
    return [lv.name for lv in arith.parse_levels(self.levels)]

  def params(self) -> dict[str, Any]:
    """Canonical parameters (levels as parsed names) plus a generator probe."""
    levels = arith.parse_levels(self.levels)
    probe = arith.generate("train", levels, _PROBE_PER_LEVEL, self.seed)
    probe_text = "|".join(p.question + "=" + p.solution for p in probe)
    return {
        "levels": [lv.name for lv in levels],
        "train_per_level": int(self.train_per_level),
        "test_per_level": int(self.test_per_level),
        "seed": int(self.seed),
        "generator_probe": hashlib.sha256(probe_text.encode()).hexdigest()[:16],
    }

  def config_name(self) -> str:
    """``s<seed>_<12 hex of sha256(params)>``, e.g. "s0_3fa9c2d1e0b4"."""
    blob = json.dumps(self.params(), sort_keys=True).encode()
    return f"s{int(self.seed)}_{hashlib.sha256(blob).hexdigest()[:12]}"


class ArithConfig(tfds.core.BuilderConfig):
  """A BuilderConfig carrying an ``ArithDataSpec``; its name hashes the spec."""

  def __init__(self, spec: ArithDataSpec):
    for field in ("train_per_level", "test_per_level", "seed"):
      if int(getattr(spec, field)) < 0:
        raise ValueError(f"{field} must be >= 0, got {getattr(spec, field)}")
    super().__init__(
        name=spec.config_name(),
        description=f"arith levels={spec.levels!r} "
        f"train/test per level={spec.train_per_level}/{spec.test_per_level} "
        f"seed={spec.seed}",
    )
    self.spec = spec


class TtcArith(tfds.core.GeneratorBasedBuilder):
  """Embedded arithmetic problems; see the module docstring for features."""

  name = DATASET_NAME
  VERSION = tfds.core.Version(VERSION)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds's default resolves the path of a builder defined in a package via
    # `importlib_resources`, which is not installed here (ModuleNotFoundError).
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec if hasattr(self.builder_config, "spec") else None
    metadata = tfds.core.MetadataDict(spec.params() if spec else {})
    text = tfds.features.Text
    return tfds.core.DatasetInfo(
        builder=self,
        description="Multi-step integer arithmetic with step-by-step solutions.",
        features=tfds.features.FeaturesDict(
            {
                "question": text(),
                "prompt": text(),
                "solution": text(),
                "answer": tfds.features.Scalar(dtype=np.int64),
                "num_ops": tfds.features.Scalar(dtype=np.int32),
                "digits": tfds.features.Scalar(dtype=np.int32),
                "level": text(),
            }
        ),
        disable_shuffling=True,
        metadata=metadata,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    spec = self.builder_config.spec
    counts = {"train": spec.train_per_level, "test": spec.test_per_level}
    return {s: self._generate_examples(s, counts[s]) for s in SPLITS}

  def _generate_examples(self, split: str, num_per_level: int):
    spec = self.builder_config.spec
    levels = arith.parse_levels(spec.levels)
    problems = arith.generate(split, levels, num_per_level, spec.seed)
    for i, p in enumerate(problems):
      yield i, problem_to_record(p)


def problem_to_record(p: "arith.Problem") -> dict[str, Any]:
  """The feature dict written for one ``arith.Problem``."""
  return {
      "question": p.question,
      "prompt": p.prompt,
      "solution": p.solution,
      "answer": int(p.answer),
      "num_ops": int(p.level.num_ops),
      "digits": int(p.level.digits),
      "level": p.level.name,
  }


def decode_record(rec: Mapping[str, Any]) -> dict[str, Any]:
  """A data-source record with bytes -> str and numpy scalars -> int."""
  out = {}
  for k, v in rec.items():
    if isinstance(v, (bytes, np.bytes_)):
      out[k] = bytes(v).decode("utf-8")
    elif isinstance(v, (np.integer, int)) or (isinstance(v, np.ndarray) and v.ndim == 0):
      out[k] = int(v)
    else:
      out[k] = v
  return out


def make_builder(
    data_dir: str | os.PathLike, levels: str, train_per_level: int, test_per_level: int, seed: int
) -> TtcArith:
  """The builder for these parameters under ``data_dir`` (nothing written)."""
  data_dir = os.fspath(data_dir)
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise NotADirectoryError(f"TFDS data_dir {data_dir!r} exists and is not a directory")
  spec = ArithDataSpec(levels, int(train_per_level), int(test_per_level), int(seed))
  config = ArithConfig(spec)
  path = os.path.join(data_dir, DATASET_NAME, config.name, VERSION)
  try:  # reads dataset_info.json when the config dir is already prepared
    builder = TtcArith(config=config, data_dir=data_dir, file_format=FILE_FORMAT)
  except Exception as e:
    raise RuntimeError(f"cannot read the TFDS dataset at {path!r}: {e}") from e
  if is_prepared(builder):
    stored = dict(builder.info.metadata or {})
    if stored != spec.params():
      raise RuntimeError(
          f"TFDS dataset at {path!r} was written with parameters {stored}, "
          f"not {spec.params()}; delete it and prepare again"
      )
  return builder


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether the builder's version directory holds a finished dataset."""
  return os.path.isfile(os.path.join(os.fspath(builder.data_dir), "dataset_info.json"))


def build_arith_dataset(
    data_dir: str | os.PathLike,
    levels: str,
    train_per_level: int,
    test_per_level: int,
    seed: int,
    progress: bool = False,
) -> TtcArith:
  """Prepares (once) and returns the arith dataset builder.

  Idempotent: a prepared config directory is reused as is; another set of
  parameters gets another config directory.

  Args:
    data_dir: TFDS root, e.g. "<workdir>/tfds".
    levels: level spec, e.g. "ops=1-6,digits=1".
    train_per_level, test_per_level: problems per level per split.
    seed: generation seed.
    progress: show TFDS's progress bars while preparing.
  """
  builder = make_builder(data_dir, levels, train_per_level, test_per_level, seed)
  if not is_prepared(builder):
    with _quiet(progress):
      builder.download_and_prepare(
          file_format=FILE_FORMAT,
          download_config=tfds.download.DownloadConfig(try_download_gcs=False),
      )
  return builder


def _builder_from_dir(path: str) -> tfds.core.DatasetBuilder:
  """A read-only builder from a prepared version dir, or a TFDS root holding
  exactly one ``ttc_arith`` config."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"arith TFDS data dir {path!r} does not exist")
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    root = os.path.join(path, DATASET_NAME)
    found = []
    if os.path.isdir(root):
      for cfg in sorted(os.listdir(root)):
        vdir = os.path.join(root, cfg, VERSION)
        if os.path.isfile(os.path.join(vdir, "dataset_info.json")):
          found.append(vdir)
    if len(found) != 1:
      what = "no prepared" if not found else f"{len(found)} prepared"
      raise FileNotFoundError(
          f"{path!r} holds {what} {DATASET_NAME} datasets (looked for "
          f"{root}/<config>/{VERSION}/dataset_info.json); pass the version "
          f"directory or a builder from build_arith_dataset: {found}"
      )
    path = found[0]
  try:
    return tfds.builder_from_directory(path)
  except Exception as e:  # corrupt dataset_info.json / features.json
    raise RuntimeError(f"cannot read the TFDS dataset at {path!r}: {e}") from e


def resolve_builder(builder_or_args: Any) -> tfds.core.DatasetBuilder:
  """A prepared builder from: a builder; a path (version dir or TFDS root with
  one arith config); or a mapping with ``data_dir`` and the ``ArithDataSpec``
  fields (read with ``tfds.data_source``, never prepared here).

  Raises:
    FileNotFoundError / RuntimeError naming the path when the data is missing,
    unprepared or unreadable.
  """
  if isinstance(builder_or_args, tfds.core.DatasetBuilder):
    builder = builder_or_args
  elif isinstance(builder_or_args, (str, os.PathLike)):
    builder = _builder_from_dir(os.fspath(builder_or_args))
  elif isinstance(builder_or_args, Mapping):
    args = dict(builder_or_args)
    builder = make_builder(args.pop("data_dir"), **args)
  else:
    raise TypeError(f"expected a builder, path or args mapping, got {type(builder_or_args)}")
  if not is_prepared(builder):
    raise FileNotFoundError(
        f"arith dataset not prepared at {os.fspath(builder.data_dir)!r} (no "
        "dataset_info.json); call build_arith_dataset first"
    )
  return builder


def load_split(builder_or_args: Any, split: str) -> Any:
  """Random-access data source (``len``, ``[i]``) for ``split`` ("train"/"test").

  Records are raw (text as bytes); see ``decode_record``. Accepts what
  ``resolve_builder`` accepts.
  """
  builder = resolve_builder(builder_or_args)
  return open_data_source(
      builder, split, builder_or_args["data_dir"] if isinstance(builder_or_args, Mapping) else None
  )


def open_data_source(builder, split: str, data_dir=None):
  """`builder`'s split as a TFDS data source: read through `tfds.data_source` from
  `data_dir` when given, else `builder.as_data_source`. The first record is read here, so
  a missing or corrupt shard fails with a RuntimeError naming the dataset's path."""
  path = os.fspath(builder.data_dir)
  try:
    if data_dir is not None:
      source = tfds.data_source(
          builder.name,
          split=split,
          data_dir=os.fspath(data_dir),
          download=False,
          builder_kwargs={"config": builder.builder_config, "file_format": FILE_FORMAT},
      )
    else:
      source = builder.as_data_source(split=split)
    if len(source) > 0:
      source[0]  # surface missing/corrupt shards here, naming the path
  except Exception as e:
    raise RuntimeError(f"cannot read split {split!r} of the TFDS dataset at {path!r}: {e}") from e
  return source


def load_problems(builder_or_args: Any, split: str) -> list[dict[str, Any]]:
  """All records of a split, decoded (``decode_record``), in stored order."""
  source = load_split(builder_or_args, split)
  return [decode_record(source[i]) for i in range(len(source))]
