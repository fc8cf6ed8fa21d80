"""Search methods and how each spends a generation budget G (no JAX: config validation reads it).

`plan(method, G)` gives the kernel arguments: N beams of width M with k lookahead steps
(`ttc_jax.search.sweep` documents the methods), or None when the budget cannot be filled.
"""

from __future__ import annotations

import math

METHODS = ("beam_m4", "beam_sqrt", "lookahead_k1", "lookahead_k3", "dvts")


def plan(method: str, budget: int) -> dict | None:
  """Kernel arguments (n, m, k) for `method` at generation budget G, or None."""
  if method == "beam_m4":
    n, m, k = budget, 4, 0
  elif method == "beam_sqrt":
    n, m, k = budget, max(1, int(round(math.sqrt(budget)))), 0
  elif method in ("lookahead_k1", "lookahead_k3"):
    k = int(method[-1])
    n = budget // (k + 1)
    m, k = min(4, n), k
  elif method == "dvts":
    n, m, k = budget, 4, 0
  else:
    raise ValueError(f"unknown search method {method!r}; expected one of {METHODS}")
  if n < 1 or m < 1 or n % m or n * (k + 1) != budget:
    return None
  return dict(n=n, m=m, k=k)
