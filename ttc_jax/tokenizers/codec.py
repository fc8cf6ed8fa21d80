"""What the character and Hugging Face tokenizers share: 1-D id arrays and batched encode/decode."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ids_1d(ids) -> np.ndarray:
  """A 1-D id array from a scalar or a 1-D sequence (ValueError otherwise)."""
  arr = np.asarray(ids)
  if arr.ndim == 0:
    return arr.reshape(1)
  if arr.ndim != 1:
    raise ValueError(f"decode expects a 1-D id sequence, got shape {arr.shape}")
  return arr


class BatchCodec:
  """Batched encode/decode on top of a tokenizer's ``encode``, ``decode`` and ``PAD``
  (shared by CharTokenizer and hf.HFTokenizer)."""

  def decode_batch(self, ids, lengths=None, stop_at_eos: bool = True) -> list[str]:
    """Decode each row of a [B, T] array, up to ``lengths[b]`` tokens when given."""
    arr = np.asarray(ids)
    if arr.ndim != 2:
      raise ValueError(f"decode_batch expects a [B, T] array, got shape {arr.shape}")
    rows = arr if lengths is None else [r[: int(n)] for r, n in zip(arr, np.asarray(lengths))]
    return [self.decode(r, stop_at_eos=stop_at_eos) for r in rows]

  def encode_batch(
      self,
      texts: Sequence[str],
      max_len: int,
      add_bos: bool = True,
      pad_left: bool = False,
      add_eos: bool = False,
  ) -> tuple[np.ndarray, np.ndarray]:
    """Encode and pad to ``[B, max_len]`` int32 with PAD (right, or left if ``pad_left``).

    Returns ``(tokens, lengths)``; lengths count BOS/EOS when added. ValueError naming the
    index and both lengths when a text does not fit.
    """
    if isinstance(texts, str):
      raise ValueError("encode_batch expects a sequence of strings, got one string")
    if max_len < 0:
      raise ValueError(f"max_len must be >= 0, got {max_len}")
    tokens = np.full((len(texts), max_len), self.PAD, dtype=np.int32)
    lengths = np.zeros((len(texts),), dtype=np.int32)
    for b, text in enumerate(texts):
      ids = self.encode(text, add_bos=add_bos, add_eos=add_eos)
      if len(ids) > max_len:
        raise ValueError(
            f"text {b} encodes to {len(ids)} tokens (with BOS/EOS), longer "
            f"than max_len={max_len}: {short_repr(text)}"
        )
      lengths[b] = len(ids)
      if ids:
        if pad_left:
          tokens[b, max_len - len(ids) :] = ids
        else:
          tokens[b, : len(ids)] = ids
    return tokens, lengths


def short_repr(text: str, n: int = 60) -> str:
  return repr(text if len(text) <= n else text[:n] + "...")
