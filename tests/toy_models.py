"""Toy policies with known behaviour for CPU tests of sampling-based code.

`ScriptedPolicy` follows the Transformer call contract (tokens, positions,
cache, attention_mask) -> (logits, cache) but its next-token distribution
depends only on the position: it writes a fixed script, except at chosen
positions where it picks between alternatives with given probabilities. So
the success probability of a rollout from any prefix is known exactly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from conftest import tiny_config

NEG = -1e9


class ScriptedPolicy(nnx.Module):
  """Next-token logits = table[position]; cache index advances like the real model."""

  def __init__(
      self,
      tokenizer,
      script: str,
      choices: dict[int, dict[str, float]] | None = None,
      max_len: int = 48,
  ):
    """script: text after BOS; choices: {char offset in script: {char: probability}}."""
    self.cfg = tiny_config(max_len=max_len, num_layers=1)
    ids = [tokenizer.BOS] + list(tokenizer.encode(script)) + [tokenizer.EOS]
    if len(ids) > max_len:
      raise ValueError("script longer than max_len")
    table = np.full((max_len, self.cfg.vocab_size), NEG, np.float32)
    for t in range(len(ids) - 1):
      table[t, ids[t + 1]] = 0.0  # position t predicts token t+1
    for t in range(len(ids) - 1, max_len):
      table[t, tokenizer.EOS] = 0.0
    for off, dist in (choices or {}).items():
      row = np.full((self.cfg.vocab_size,), NEG, np.float32)
      for ch, p in dist.items():
        row[tokenizer.encode(ch)[0]] = np.log(p)
      table[off, :] = row  # predicts script char at `off` (after BOS)
    self.table = nnx.Variable(jnp.asarray(table))

  def __call__(self, tokens, positions, cache=None, attention_mask=None, segment_ids=None):
    logits = jnp.take(self.table[...], positions, axis=0)
    if cache is not None:
      n = tokens.shape[1] if attention_mask is None else attention_mask.astype(jnp.int32).sum(-1)
      cache = dict(cache, index=cache["index"] + n)
    return logits, cache
