"""Turn (prompt, solution) token sequences into fixed-shape training rows.

numpy only: no tfds or grain import, so this runs on machines without them
(e.g. the lent accelerator machines, where training reads in-memory batches).

Conventions (shared with ``ttc_jax.data.pipeline``):

* An example's tokens are ``[BOS] + prompt_ids + solution_ids + [EOS]``
  (``L`` tokens). The model predicts token ``t+1`` from tokens ``<= t``, so an
  example occupies ``n = L - 1`` positions of a row::

      inputs    = tokens[:-1]                      [n]
      targets   = tokens[1:]                       [n]
      loss_mask = 0 for prompt targets,            [n]
                  1 for solution targets and EOS

  The shift happens *within* the example, so packed examples never predict
  across their boundary.
* A batch is a dict of numpy arrays, all of shape ``[batch, seq_len]``:
  ``inputs``, ``targets``, ``positions`` (0-based, restarting per example),
  ``segment_ids`` (1, 2, 3, ... per example within a row; 0 on padding) as
  int32, and ``loss_mask`` as float32 (0 on padding). Padding tokens are 0
  (the char tokenizer's PAD).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Union

import numpy as np

BATCH_KEYS = ("inputs", "targets", "positions", "segment_ids", "loss_mask")
INT_KEYS = ("inputs", "targets", "positions", "segment_ids")
PAD_ID = 0
DEFAULT_MAX_OPEN_ROWS = 64

Example = dict  # {"inputs": int32[n], "targets": int32[n], "loss_mask": float32[n]}
ExampleLike = Union[Example, tuple]  # an Example or (prompt_ids, solution_ids)


def make_example(
    prompt_ids: Sequence[int], solution_ids: Sequence[int], bos_id: int = 1, eos_id: int = 2
) -> Example:
  """Builds one unpacked example from prompt and solution token ids.

  Args:
    prompt_ids: token ids of the prompt (question + "\\n"), length P.
    solution_ids: token ids of the solution text, length S.
    bos_id, eos_id: special ids prepended / appended.

  Returns:
    {"inputs": int32[n], "targets": int32[n], "loss_mask": float32[n]} with
    n = P + S + 1; loss_mask is 1 on the S + 1 targets that are solution
    tokens or EOS.
  """
  prompt = np.asarray(prompt_ids, dtype=np.int32).reshape(-1)
  solution = np.asarray(solution_ids, dtype=np.int32).reshape(-1)
  tokens = np.concatenate(
      [np.array([bos_id], np.int32), prompt, solution, np.array([eos_id], np.int32)]
  )
  mask = np.concatenate([np.zeros(prompt.size, np.float32), np.ones(solution.size + 1, np.float32)])
  return {"inputs": tokens[:-1], "targets": tokens[1:], "loss_mask": mask}


def tokenize_example(tokenizer: Any, prompt: str, solution: str) -> Example:
  """``make_example`` on text, using ``tokenizer.encode`` and its BOS/EOS ids."""
  return make_example(
      tokenizer.encode(prompt),
      tokenizer.encode(solution),
      bos_id=tokenizer.BOS,
      eos_id=tokenizer.EOS,
  )


def _as_example(ex: ExampleLike, bos_id: int, eos_id: int) -> Example:
  if isinstance(ex, dict):
    return ex
  prompt_ids, solution_ids = ex
  return make_example(prompt_ids, solution_ids, bos_id, eos_id)


def check_length(n: int, seq_len: int, what: str = "example") -> None:
  """Raises ValueError when an example of ``n`` positions exceeds ``seq_len``."""
  if n > seq_len:
    raise ValueError(
        f"{what} needs {n} positions ({n + 1} tokens including BOS/EOS) but "
        f"seq_len is {seq_len}; raise seq_len or drop longer problems."
    )
  if n <= 0:
    raise ValueError(f"{what} is empty (length {n}).")


def empty_rows(num_rows: int, seq_len: int) -> dict[str, np.ndarray]:
  """All-padding rows: int32[num_rows, seq_len] (+ float32 loss_mask)."""
  rows = {k: np.full((num_rows, seq_len), PAD_ID, np.int32) for k in INT_KEYS}
  rows["loss_mask"] = np.zeros((num_rows, seq_len), np.float32)
  return rows


def _assign_rows(
    lengths: Sequence[int], seq_len: int, pack: bool, max_open_rows: int
) -> list[list[int]]:
  """Assigns example indices to rows, in order.

  With ``pack``, first-fit over at most ``max_open_rows`` open rows: each
  example goes into the first open row with room; if none has room, a new row
  opens, and when more than ``max_open_rows`` are open the oldest one closes.
  The window bounds the cost to O(N * max_open_rows) and keeps rows roughly in
  input (i.e. shuffled) order. Without ``pack``, one example per row.

  Returns:
    rows: list of lists of example indices, each summing to <= seq_len.
  """
  if not pack:
    return [[i] for i in range(len(lengths))]
  rows: list[list[int]] = []
  open_ids: list[int] = []  # indices into ``rows`` still accepting examples
  free: list[int] = []  # free positions of each open row
  for i, n in enumerate(lengths):
    for j, f in enumerate(free):
      if n <= f:
        rows[open_ids[j]].append(i)
        free[j] -= n
        break
    else:
      rows.append([i])
      open_ids.append(len(rows) - 1)
      free.append(seq_len - n)
      if len(open_ids) > max_open_rows:
        open_ids.pop(0)
        free.pop(0)
  return rows


def pack_examples(
    examples: Sequence[ExampleLike],
    seq_len: int,
    pack: bool = True,
    bos_id: int = 1,
    eos_id: int = 2,
    max_open_rows: int = DEFAULT_MAX_OPEN_ROWS,
) -> dict[str, np.ndarray]:
  """Packs examples into rows of ``seq_len`` positions.

  Args:
    examples: N examples, each an ``Example`` dict or a
      ``(prompt_ids, solution_ids)`` pair.
    seq_len: row length T.
    pack: first-fit several examples per row (training); False puts one
      example per row (``pad_rows`` mode, evaluation).
    bos_id, eos_id: used for (prompt_ids, solution_ids) pairs.
    max_open_rows: first-fit window (see ``_assign_rows``).

  Returns:
    Batch dict of arrays [R, T] (R rows, R = N without packing); keys
    ``BATCH_KEYS``, plus any other per-position key of the examples (e.g. a
    value model's ``value_targets``), zero on padding, with its own dtype.

  Raises:
    ValueError: an example needs more than ``seq_len`` positions.
  """
  exs = [_as_example(e, bos_id, eos_id) for e in examples]
  lengths = [int(e["inputs"].shape[0]) for e in exs]
  for i, n in enumerate(lengths):
    check_length(n, seq_len, what=f"example {i}")
  assignment = _assign_rows(lengths, seq_len, pack, max_open_rows)
  out = empty_rows(len(assignment), seq_len)
  extra = [k for k in (exs[0] if exs else {}) if k not in BATCH_KEYS]
  for k in extra:
    out[k] = np.zeros((len(assignment), seq_len), np.asarray(exs[0][k]).dtype)
  for r, members in enumerate(assignment):
    start = 0
    for seg, i in enumerate(members, start=1):
      ex, n = exs[i], lengths[i]
      sl = slice(start, start + n)
      for k in ("inputs", "targets", "loss_mask", *extra):
        out[k][r, sl] = ex[k]
      out["positions"][r, sl] = np.arange(n, dtype=np.int32)
      out["segment_ids"][r, sl] = seg
      start += n
  return out


def pad_rows(
    examples: Sequence[ExampleLike], seq_len: int, bos_id: int = 1, eos_id: int = 2
) -> dict[str, np.ndarray]:
  """One example per row, right-padded: arrays [N, seq_len] (evaluation)."""
  return pack_examples(examples, seq_len, pack=False, bos_id=bos_id, eos_id=eos_id)


def eval_batches(
    examples: Sequence[ExampleLike], batch_size: int, seq_len: int
) -> list[dict[str, np.ndarray]]:
  """All `examples` packed once into [batch_size, seq_len] batches (evaluation).

  The last batch is filled with all-padding rows, which carry no loss or
  labels, so they do not change masked metrics.
  """
  rows = pack_examples(examples, seq_len)
  n = rows["inputs"].shape[0]
  pad = (-n) % batch_size
  if pad:
    rows = {
        k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in rows.items()
    }
  return [
      {k: v[i : i + batch_size] for k, v in rows.items()} for i in range(0, n + pad, batch_size)
  ]


def iterate_batches(
    examples: Sequence[ExampleLike],
    batch_size: int,
    seq_len: int,
    seed: int,
    epochs: int | None = None,
    pack: bool = True,
    bos_id: int = 1,
    eos_id: int = 2,
    max_open_rows: int = DEFAULT_MAX_OPEN_ROWS,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields fixed-shape batches from in-memory examples.

  Each epoch shuffles the examples with ``np.random.default_rng((seed,
  epoch))``, packs them (or pads one per row), and yields
  ``rows // batch_size`` batches, dropping the remainder rows, so every batch
  has arrays of shape [batch_size, seq_len]. Deterministic given ``seed``.

  Args:
    examples: N examples (``Example`` dicts or (prompt_ids, solution_ids)).
    batch_size: rows per batch B.
    seq_len: positions per row T.
    seed: shuffling seed.
    epochs: number of passes; None repeats forever.
    pack: see ``pack_examples``.

  Raises:
    ValueError: an example is longer than ``seq_len`` (checked up front), or
      one epoch makes fewer than ``batch_size`` rows.
  """
  exs = [_as_example(e, bos_id, eos_id) for e in examples]
  for i, e in enumerate(exs):
    check_length(int(e["inputs"].shape[0]), seq_len, what=f"example {i}")
  if not exs:
    raise ValueError("iterate_batches got no examples.")
  epoch = 0
  while epochs is None or epoch < epochs:
    order = np.random.default_rng((seed, epoch)).permutation(len(exs))
    rows = pack_examples([exs[i] for i in order], seq_len, pack=pack, max_open_rows=max_open_rows)
    num_rows = rows["inputs"].shape[0]
    if num_rows < batch_size:
      raise ValueError(
          f"one epoch of {len(exs)} examples makes {num_rows} rows of "
          f"seq_len {seq_len}, fewer than batch_size {batch_size}."
      )
    for b in range(num_rows // batch_size):
      sl = slice(b * batch_size, (b + 1) * batch_size)
      yield {k: v[sl] for k, v in rows.items()}
    epoch += 1
