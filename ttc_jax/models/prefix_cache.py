"""KV caches whose prompt part is held once per question and read by all its rows (search).

A search over Q questions x N beams runs R = Q*N rows that share their question's prompt.
A *shared* cache keeps the prompt's keys/values once per question and only the generated
tokens per row:

  {"index":  int32[R]  tokens of row r in the cache, prompt included: the position of the
                       next token written (the plain cache's meaning, `transformer.py`),
   "layers": ({"k": [R,Kh,D,C], "v": [R,Kh,C,D]}, ...)  the row's own tokens: the one at
                       position s >= prefix_len(r) in suffix slot s - prefix_len(r),
   "prefix": {"length": int32[Q] prompt tokens of question q (slots 0 .. length-1),
              "layers": ({"k": [Q,Kh,D,P], "v": [Q,Kh,P,D]}, ...)},
   "question": int32[R]  (optional) each row's question; without it the rows are Q groups
                       of N = R/Q consecutive rows, row r reading question r // N}

A query at position t of row r sees the prefix slots j < prefix_len(r) and the suffix slots
j with prefix_len(r) + j <= t: the keys a plain cache would show it, so attention (one
softmax over both score blocks, `attention.attend(prefix=...)`) is the same computation.
RoPE positions are explicit (`index`-based), so nothing depends on where a key is stored.
A row can hold prefix_len(r) + C tokens (`room`); `sampling.decode` treats a row that
reaches it as a full buffer.

Rows are gathered, repeated and written back with `map_rows`, which leaves everything under
"prefix" alone (beams of a question share it; reordering within a question never touches
it). Rows gathered across questions (search compaction) carry "question" (`with_question`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PREFIX = "prefix"
QUESTION = "question"


def is_shared(cache: Any) -> bool:
  """Whether `cache` (a cache dict or anything else) is a shared-prefix cache."""
  return isinstance(cache, dict) and PREFIX in cache


def _under_prefix(path) -> bool:
  return any(getattr(p, "key", None) == PREFIX for p in path)


def map_rows(fn: Callable, tree: Any, *rest: Any) -> Any:
  """`jax.tree.map(fn, tree, *rest)` over per-row leaves; leaves under a "prefix" key (per
  question) are kept from `tree` as they are."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x, *ys: x if _under_prefix(path) else fn(x, *ys), tree, *rest
  )


def share(plain: dict, length: jax.Array, n: int, suffix_len: int, slots: int | None = None):
  """A shared cache of Q*n rows with empty suffixes of `suffix_len` slots, from `plain`, a
  cache of Q prompts (its first `slots` slots, default all, holding length[Q] tokens each)."""
  q = length.shape[0]

  def pre(x, axis):
    return x if slots is None else jax.lax.slice_in_dim(x, 0, slots, axis=axis)

  def suffix(x, axis):
    shape = list(x.shape)
    shape[0], shape[axis] = q * n, suffix_len
    return jnp.zeros(shape, x.dtype)

  layers = plain["layers"]
  return {
      "index": jnp.repeat(length.astype(jnp.int32), n),
      "layers": tuple({"k": suffix(lc["k"], 3), "v": suffix(lc["v"], 2)} for lc in layers),
      PREFIX: {
          "length": length.astype(jnp.int32),
          "layers": tuple({"k": pre(lc["k"], 3), "v": pre(lc["v"], 2)} for lc in layers),
      },
  }


def with_question(cache: Any, question: jax.Array) -> Any:
  """The cache with each row's question int32[R] (rows gathered across questions); plain
  caches are returned as they are."""
  return dict(cache, **{QUESTION: question.astype(jnp.int32)}) if is_shared(cache) else cache


def without_question(cache: Any) -> Any:
  if not is_shared(cache):
    return cache
  return {k: v for k, v in cache.items() if k != QUESTION}


def row_question(cache: dict) -> jax.Array:
  """int32[R] the question each row reads."""
  if QUESTION in cache:
    return cache[QUESTION]
  r, q = cache["index"].shape[0], cache[PREFIX]["length"].shape[0]
  return jnp.arange(r, dtype=jnp.int32) // (r // q)


def prefix_length(cache: dict) -> jax.Array:
  """int32[R] prompt tokens in each row's prefix."""
  return cache[PREFIX]["length"][row_question(cache)]


def room(cache: Any) -> jax.Array | None:
  """int32[R] tokens each row's cache can hold (prefix + suffix slots); None for a plain
  cache (its slot count, the same for every row)."""
  if not is_shared(cache):
    return None
  return prefix_length(cache) + cache["layers"][0]["k"].shape[-1]


def read(cache: dict, t: int):
  """What a forward of `t` new tokens per row needs from a shared cache:
  (write_index int32[R] suffix slot of the first new token, visible bool[R,t,C] suffix slots
  each query sees, prefixes: per layer (k [G,Kh,D,P], v [G,Kh,P,D], visible bool[G,P])) where
  G = Q (rows in Q groups of R/Q) or, with "question", R (each row's prefix gathered)."""
  index, pre = cache["index"], cache[PREFIX]
  plen = prefix_length(cache)
  widx = index - plen
  c = cache["layers"][0]["k"].shape[-1]
  q_pos = widx[:, None] + jnp.arange(t)[None]  # [R,T] suffix slot of each query
  visible = jnp.arange(c)[None, None, :] <= q_pos[:, :, None]
  p = pre["layers"][0]["k"].shape[-1]
  pvis = jnp.arange(p)[None, :] < pre["length"][:, None]  # [Q,P]
  layers = pre["layers"]
  if QUESTION in cache:
    qs = cache[QUESTION]
    take = lambda x: jnp.take(x, qs, axis=0)
    prefixes = tuple((take(lc["k"]), take(lc["v"]), take(pvis)) for lc in layers)
  else:
    prefixes = tuple((lc["k"], lc["v"], pvis) for lc in layers)
  return widx, visible, prefixes
