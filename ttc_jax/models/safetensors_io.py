"""safetensors files <-> numpy arrays, bfloat16 included (no `safetensors` package needed).

`SafetensorsReader` memory-maps one or more files and reads a tensor at a time;
`write_safetensors` writes one file. `ttc_jax.models.hf` reads and writes checkpoints with them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import ml_dtypes
import numpy as np

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_NP_TO_ST = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


class SafetensorsReader:
  """Lazy reader over one or more safetensors files (memory-mapped, any dtype).

  `framework="numpy"` of `safetensors.safe_open` cannot return bfloat16, so
  each file's header is parsed here and tensors are views of an `np.memmap`
  (ml_dtypes.bfloat16 for BF16); `get(name)` copies only that tensor.
  """

  def __init__(self, files: Iterable[str]):
    self._index: dict[str, tuple[str, str, tuple[int, ...], int, int]] = {}
    self._maps: dict[str, np.memmap] = {}
    for path in files:
      if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors file {path} does not exist")
      with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
      header.pop("__metadata__", None)
      for name, info in header.items():
        start, end = info["data_offsets"]
        self._index[name] = (path, info["dtype"], tuple(info["shape"]), 8 + n + start, end - start)

  def keys(self) -> list[str]:
    return sorted(self._index)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._index[name][2]

  def get(self, name: str) -> np.ndarray:
    """The tensor `name` as a host numpy array."""
    path, dt, shape, offset, size = self._index[name]
    if dt not in _ST_DTYPES:
      raise ValueError(f"tensor {name} in {path} has unsupported dtype {dt}")
    if path not in self._maps:
      self._maps[path] = np.memmap(path, np.uint8, mode="r")
    raw = self._maps[path][offset : offset + size]
    return np.array(raw.view(_ST_DTYPES[dt]).reshape(shape))


def write_safetensors(
    path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
  """Writes numpy arrays (bfloat16 included) as one safetensors file."""
  header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
  offset, arrays = 0, []
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype not in _NP_TO_ST:
      raise ValueError(f"cannot write tensor {name} of dtype {a.dtype} to safetensors")
    header[name] = {
        "dtype": _NP_TO_ST[a.dtype],
        "shape": list(a.shape),
        "data_offsets": [offset, offset + a.nbytes],
    }
    offset += a.nbytes
    arrays.append(a)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as fh:
    fh.write(len(blob).to_bytes(8, "little"))
    fh.write(blob)
    for a in arrays:
      fh.write(a.tobytes())
