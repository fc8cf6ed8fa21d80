"""External PRMs in the search kernels, read in their own input format (the fast path).

A public PRM scores a solution written its own way (its model card): its prompt
(Qwen2.5-Math-PRM: a system/user chat turn, then the assistant turn; Math-Shepherd:
"{question} "), then every step followed by its step tag (`<extra_0>`; " ки" with a
newline before the next step), and gives a step's score at its tag
(`external_prm.StepFormat`, `format_steps`). When the PRM's vocabulary holds the
policy's (every policy token has the same id there, `shares_vocabulary`), the kernels can
feed the PRM the policy's own tokens inside one jit: `StepTagPRM` wraps the adapter,

  * reads the PRM-format prompt as it is (`extend_prompt`; `prompt_ids(question)` gives
    its ids, which the sweep passes to the kernel as `prm_prompts`), and
  * rewrites only the token that ends a step (`extend`): a delimiter token keeps its
    text before the delimiter ("." of ".\\n\\n", "$" of "$\\n\\n"), then the tag, then
    the format's text between steps; an EOS becomes the tag. The score is read at the
    tag. A step cut off at max_step_tokens has no tag (its value is read at its last
    token, as the kernels do for every PRM).

The rewrite table is built once on the host (`step_rewrites`) with the PRM's own tokenizer
and its tag looked up there. A rewritten step is longer than the policy's (`extra_per_step`
more PRM tokens at most), so the kernels size the PRM cache with `extend_width` and
`extra_per_step`. Vocabularies that differ are bridged on the host instead
(`search.bridge`: decode with the policy's tokenizer, re-encode with the PRM's).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Rewrites = Mapping[int, tuple[Sequence[int], int]]  # policy id -> (PRM ids, index of the tag)


class StepTagPRM(nnx.Module):
  """An external PRM adapter (loaded with `delimiter_ids=()`) reading policy tokens with
  step ends rewritten into its own format; the `ValueModel` interface the kernels use."""

  def __init__(self, prm, rewrites: Rewrites, prompt_ids: Callable[[str], list[int]] | None = None):
    """rewrites: policy id -> (the PRM ids that replace it, index of the tag among them);
    prompt_ids: question -> the PRM's prompt ids (host side; the sweep calls it)."""
    if not rewrites:
      raise ValueError("StepTagPRM needs at least one rewritten id (the delimiters and EOS)")
    ids = sorted(int(i) for i in rewrites)
    width = max(len(rewrites[i][0]) for i in ids)
    table = np.zeros((len(ids), width), np.int32)
    for r, i in enumerate(ids):
      new, read = rewrites[i]
      if not new or not 0 <= read < len(new):
        raise ValueError(f"rewrite of id {i}: {tuple(new)} with the tag at {read}")
      table[r, : len(new)] = new
    row = np.full((ids[-1] + 1,), -1, np.int32)
    row[ids] = np.arange(len(ids))
    self.prm = prm
    self.row = nnx.Variable(jnp.asarray(row))
    self.ids = nnx.Variable(jnp.asarray(table))
    self.lens = nnx.Variable(jnp.asarray([len(rewrites[i][0]) for i in ids], jnp.int32))
    self.reads = nnx.Variable(jnp.asarray([rewrites[i][1] for i in ids], jnp.int32))
    self.width = int(width)
    self.extra_per_step = int(width) - 1
    self.prompt_ids = prompt_ids

  @property
  def cfg(self):
    return self.prm.cfg

  def init_cache(self, batch: int, max_len: int | None = None, dtype=None):
    return self.prm.init_cache(batch, max_len, dtype)

  def extend_width(self, t: int) -> int:
    """Tokens `extend` writes for a run of t policy tokens, at most."""
    return t + self.width - 1

  def extend_prompt(self, cache, tokens, lengths, read=None):
    """The PRM-format prompt (or any text) as it is."""
    return self.prm.extend_prompt(cache, tokens, lengths, read)

  def extend(self, cache, tokens: jax.Array, lengths: jax.Array):
    """Appends the policy run tokens[b, :lengths[b]] with its last token rewritten (when it
    is a delimiter or EOS); values/logits float32[B] at the tag (else at the last token)."""
    b, t = tokens.shape
    k = self.width
    last = jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[:, None], 1)[:, 0]
    v = self.row.shape[0]
    row = jnp.where((lengths > 0) & (last < v), self.row[...][jnp.clip(last, 0, v - 1)], -1)
    hit, r = row >= 0, jnp.maximum(row, 0)
    n_new = jnp.where(hit, self.lens[...][r], 0)
    body = jnp.where(hit, lengths - 1, lengths)
    out = jnp.concatenate([tokens, jnp.zeros((b, k - 1), tokens.dtype)], axis=1)
    j = jnp.arange(k)[None]
    pos = jnp.where(j < n_new[:, None], body[:, None] + j, t + k)  # out of range: dropped
    out = out.at[jnp.arange(b)[:, None], pos].set(self.ids[...][r], mode="drop")
    n_out = body + n_new
    read = jnp.where(hit, body + self.reads[...][r], jnp.maximum(n_out - 1, 0))
    return self.prm.extend_prompt(cache, out, n_out, read)


def shares_vocabulary(policy_tokenizer, prm_tokenizer) -> bool:
  """Every token of the policy has the same id in the PRM's vocabulary (the PRM may add
  tokens, e.g. a step tag)."""
  mine, theirs = policy_tokenizer._tok.get_vocab(), prm_tokenizer._tok.get_vocab()
  return all(theirs.get(t) == i for t, i in mine.items())


def piece_ids(tokenizer, text: str) -> list[int]:
  """Ids of `text` as it reads in the middle of other text: encoded after a left context
  and cut there when that prefix is kept (a SentencePiece tokenizer would otherwise add a
  word-start space), else on its own."""
  if not text:
    return []
  for left in ("a", "\n"):
    pre, both = tokenizer.encode(left), tokenizer.encode(left + text)
    if both[: len(pre)] == pre and len(both) > len(pre):
      return both[len(pre) :]
  return list(tokenizer.encode(text))


def tagged_ids(tokenizer, text: str, tag_id: int, tag_text: str | None = None) -> list[int]:
  """Ids of `text` then the step tag: encoded with `tag_text` as one string when that ends
  in the tag id (as the PRMs' own code writes it), else `text`'s ids and the tag."""
  if tag_text:
    ids = piece_ids(tokenizer, text + tag_text)
    if ids and ids[-1] == tag_id and tag_id not in ids[:-1]:
      return ids
  return piece_ids(tokenizer, text) + [tag_id]


def step_rewrites(policy_tokenizer, prm_tokenizer, prm, tag_text: str | None = None) -> dict:
  """The `StepTagPRM` table for `prm` (an adapter with `step_token_id`, `step_format`):
  every policy delimiter id (`delimiter_ids`) -> its text before the delimiter, the
  format's `before_tag`, the tag, then `between`; every EOS id -> `before_tag` and the tag."""
  fmt, tag, delim = prm.step_format, int(prm.step_token_id), policy_tokenizer.step_delimiter
  between = piece_ids(prm_tokenizer, fmt.between)
  out = {}
  for d in policy_tokenizer.delimiter_ids:
    pre = policy_tokenizer.decode([d]).split(delim)[0]
    ids = tagged_ids(prm_tokenizer, pre + fmt.before_tag, tag, tag_text)
    out[int(d)] = (tuple(ids + between), len(ids) - 1)
  for e in policy_tokenizer.eos_ids:
    ids = tagged_ids(prm_tokenizer, fmt.before_tag, tag, tag_text)
    out[int(e)] = (tuple(ids), len(ids) - 1)
  return out
