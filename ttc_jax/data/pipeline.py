"""grain input pipeline over the arith TFDS data (array_record, no TensorFlow).

Train pipeline (``make_train_dataset``)::

    tfds data source (train split)              records, text as bytes
    -> [process_index::process_count]            this host's shard of the records
    -> shuffle(seed) -> repeat()                 reshuffled every epoch, forever
    -> map(TokenizeExample)                      inputs/targets/loss_mask [n], n <= seq_len
    -> to_iter_dataset(ReadOptions)              in-process threads
    -> FirstFitPackIterDataset                   rows [seq_len] + *_segment_ids, *_positions
    -> batch(per_host_batch, drop_remainder)     [per_host_batch, seq_len]
    -> map(_to_batch_dict)                       the batch dict of ``ttc_jax.data.packing``

Batches match ``ttc_jax.data.packing``: ``inputs``, ``targets``, ``positions``,
``segment_ids`` (int32) and ``loss_mask`` (float32), all [per_host_batch, seq_len].
grain's FirstFit packer gives segment ids 1, 2, ... per row (0 on padding) and
positions restarting at 0 per example, i.e. exactly our convention.

Global vs per-host batch: ``batch_size`` is the *global* batch. With
``process_count`` P > 1 each process reads records ``process_index::P`` and
yields ``batch_size // P`` rows; the trainer assembles the global array with
``jax.make_array_from_process_local_data``. Pass
``process_index=jax.process_index(), process_count=jax.process_count()``.

Everything runs in the calling process by default (``worker_count=0``), so no
absl flag parsing is needed. ``worker_count > 0`` uses grain's multiprocess
prefetch, whose workers read absl flags: call it under ``absl.app.run`` or
after ``absl.flags.FLAGS.mark_as_parsed()``. Each worker then reads its own
slice of the records, so the batches differ from the in-process ones (they
are still deterministic for a fixed ``worker_count``).
"""

from __future__ import annotations

from typing import Any, Iterator

import grain
import numpy as np

from ttc_jax.data import arith_tfds
from ttc_jax.data import packing

_PACKED_KEYS = ("inputs", "targets", "loss_mask")


class TokenizeExample(grain.transforms.Map):
  """Record -> ``packing.make_example`` dict; ValueError if longer than seq_len.

  Output: {"inputs": int32[n], "targets": int32[n], "loss_mask": float32[n]}
  with n = 1 + len(prompt ids) + len(solution ids) <= seq_len.
  """

  def __init__(self, tokenizer: Any, seq_len: int):
    self.tokenizer = tokenizer
    self.seq_len = int(seq_len)

  def map(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
    rec = arith_tfds.decode_record(record)
    ex = packing.tokenize_example(self.tokenizer, rec["prompt"], rec["solution"])
    packing.check_length(
        int(ex["inputs"].shape[0]), self.seq_len, what=f"problem {rec['question']!r}"
    )
    return ex


class _PadRow(grain.transforms.Map):
  """One example -> one padded row (``pack=False``), keyed like grain's packer
  output (``inputs_positions``, ``inputs_segment_ids``): arrays [seq_len]."""

  def __init__(self, seq_len: int):
    self.seq_len = int(seq_len)

  def map(self, ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    row = {k: v[0] for k, v in packing.pad_rows([ex], self.seq_len).items()}
    row["inputs_positions"] = row.pop("positions")
    row["inputs_segment_ids"] = row.pop("segment_ids")
    return row


def _to_batch_dict(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames grain's packing outputs to the batch dict; fixes dtypes."""
  return {
      "inputs": b["inputs"].astype(np.int32),
      "targets": b["targets"].astype(np.int32),
      "positions": b["inputs_positions"].astype(np.int32),
      "segment_ids": b["inputs_segment_ids"].astype(np.int32),
      "loss_mask": b["loss_mask"].astype(np.float32),
  }


def per_host_batch_size(batch_size: int, process_count: int) -> int:
  """``batch_size // process_count``; ValueError unless it divides evenly."""
  if batch_size <= 0 or process_count <= 0 or batch_size % process_count:
    raise ValueError(
        f"global batch_size {batch_size} must be a positive multiple "
        f"of process_count {process_count}"
    )
  return batch_size // process_count


def make_train_dataset(
    data: Any,
    tokenizer: Any,
    batch_size: int,
    seq_len: int,
    seed: int,
    *,
    pack: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    num_packing_bins: int | None = None,
    num_threads: int = 2,
    prefetch_buffer_size: int = 64,
    worker_count: int = 0,
) -> grain.IterDataset:
  """The grain train pipeline (see the module docstring); infinite.

  Args:
    data: a prepared builder, a TFDS path, or the args mapping accepted by
      ``arith_tfds.resolve_builder``.
    tokenizer: has ``encode(text)``, ``BOS`` and ``EOS``.
    batch_size: global batch B (rows); this process yields B // process_count.
    seq_len: row length T.
    seed: shuffle and bin-shuffle seed, in [0, 2**32).
    pack: first-fit pack examples into rows; False gives one example per row.
    process_index, process_count: this host's shard of the records.
    num_packing_bins: rows packed at once (default: the per-host batch).
    num_threads, prefetch_buffer_size: in-process read threads and buffer.
    worker_count: > 0 adds grain multiprocess prefetch (needs absl flags parsed).

  Returns:
    IterDataset of batch dicts, arrays [B // process_count, T].
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  local_batch = per_host_batch_size(batch_size, process_count)
  source = arith_tfds.load_split(data, "train")
  if len(source) < process_count:
    raise ValueError(
        f"train split has {len(source)} records, fewer than " f"process_count {process_count}"
    )
  ds = grain.MapDataset.source(source)
  if process_count > 1:
    ds = ds[process_index::process_count]
  ds = ds.shuffle(seed=seed).repeat(None).map(TokenizeExample(tokenizer, seq_len))
  ids = ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
  )
  if pack:
    ids = grain.experimental.FirstFitPackIterDataset(
        ids,
        length_struct={k: seq_len for k in _PACKED_KEYS},
        num_packing_bins=num_packing_bins or local_batch,
        seed=seed,
        shuffle_bins=True,
    )
  else:
    ids = ids.map(_PadRow(seq_len))
  ids = ids.batch(local_batch, drop_remainder=True).map(_to_batch_dict)
  if worker_count > 0:
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ids


def make_train_iterator(
    data: Any, tokenizer: Any, batch_size: int, seq_len: int, seed: int, **kwargs
) -> Iterator[dict[str, np.ndarray]]:
  """``iter(make_train_dataset(...))``: yields batch dicts [B // P, T] forever.

  The iterator is a grain ``DatasetIterator``: ``get_state()`` /
  ``set_state()`` checkpoint its position.
  """
  return iter(make_train_dataset(data, tokenizer, batch_size, seq_len, seed, **kwargs))


def load_test_problems(data: Any, split: str = "test") -> list[dict[str, Any]]:
  """The held-out problems as plain dicts, in stored (generation) order.

  Each dict: question, prompt, solution (str), answer (int), level (str,
  e.g. "ops3_d1"), num_ops, digits (int).
  """
  return arith_tfds.load_problems(data, split)
