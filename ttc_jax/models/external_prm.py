"""Adapters for public process reward models (PRMs) imported from Hugging Face.

Two protocols, both read at a *step tag* token placed after every step:

(a) `ClassifierPRM` (Qwen2.5-Math-PRM / `*ForTokenClassification` style): a
    classification head on the final hidden states; a step's score is the
    softmax probability of `positive_class` (1) at its tag. The head is one
    linear layer (`score.weight`, `score.bias`) or a stack of them with ReLU
    in between (`score.0.*`, `score.2.*`, ... as in Qwen2.5-Math-PRM).
(b) `TokenProbPRM` (Math-Shepherd style): a causal LM; a step's score is
    softmax over the logits of the good ("+") and bad ("-") token ids at the
    tag, probability of good.

Both follow `reward.ValueModel`'s interface (docs/design.md §4), so
`prm.evaluate.score_solutions` and the search code can use them:

  prm(tokens[B,T], positions[B,T], cache=None, attention_mask=None)
      -> (values float32[B,T], cache)
  prm.score(tokens[B,T], lengths[B]) -> values float32[B,T] (0 past lengths)
  prm.extend(cache, tokens[B,T], lengths[B]) -> (values[B], logits[B], cache)
  prm.extend_prompt(cache, tokens, lengths, read=None): the same without the remap
  prm.init_cache(batch, max_len, dtype); prm.cfg (the backbone's ModelConfig)

Values are defined at every position (the probability the head gives there);
they mean a step score only at tag positions (`step_mask`, `step_scores`).
`extend` uses the backbone's real KV cache (no re-scoring). With
`delimiter_ids` (e.g. (newline_id, EOS)), those ids are replaced by the step tag
in generated text before the backbone sees them (`extend`; `score` and
`step_mask` from `prompt_lengths` on), never in a prompt (`extend_prompt` reads
text as it is), so a PRM trained on "step<tag>step<tag>" reads "step\\nstep<eos>"
rows as intended. The search kernels instead rewrite each step's end into the
PRM's own format (`search.prm_steps.StepTagPRM`), and the text pipeline scores
whole solutions written with `format_steps` by the PRM's own tokenizer.
`logits` are log-odds: sigmoid(logit) == value.

`format_steps(tokenizer, prompt, steps)` writes a solution the way the PRM was
trained to read it (its `StepFormat`: Qwen2.5-Math-PRM "s1<extra_0>s2<extra_0>",
Math-Shepherd "s1 ки\\ns2 ки"), for scoring given step lists (ProcessBench) with an
adapter loaded without `delimiter_ids`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttc_jax import parallel
from ttc_jax.models import hf, hf_config, transformer
from ttc_jax.models.config import ModelConfig, to_dtype
from ttc_jax.models.transformer import Cache, Transformer


@dataclasses.dataclass(frozen=True)
class StepFormat:
  """How a PRM expects a solution: the prompt, then per step its text, `before_tag`, the
  step tag (its score is read there) and, before the next step, `between`; `bos`: a BOS
  token first (when the tokenizer has one: `add_bos`)."""

  before_tag: str = ""
  between: str = ""
  bos: bool = False


class _StepPRM(nnx.Module):
  """Shared ValueModel-style interface; subclasses define `step_logits`."""

  step_token_id: int
  delimiter_ids: tuple[int, ...]
  step_format = StepFormat()

  def format_steps(
      self,
      tokenizer,
      prompt: str,
      steps: Sequence[str],
      fmt: StepFormat | None = None,
      tag_text: str | None = None,
  ) -> tuple[list[int], list[int]]:
    """Token ids of `prompt` + `steps` in `fmt` (default: the class's `step_format`) and
    the position of each step's tag. With `tag_text` (the tag as text, e.g. "ки") the
    whole solution is encoded as one string, as the PRM's own code does (so a
    SentencePiece "▁ки" carries its space), and the tags are found by id; without it, or
    when the steps' own text holds the tag, each piece is encoded on its own. Scored as
    written only when `delimiter_ids` is empty (a remap would turn the steps' own
    newlines into tags): ValueError otherwise."""
    if self.delimiter_ids:
      raise ValueError(
          f"format_steps needs an adapter loaded with delimiter_ids=() (this one "
          f"remaps {self.delimiter_ids} to the step tag)"
      )
    fmt = fmt or self.step_format
    start = [tokenizer.BOS] if fmt.bos and getattr(tokenizer, "add_bos", True) else []
    if tag_text:
      text = prompt + fmt.between.join(s + fmt.before_tag + tag_text for s in steps)
      ids = start + list(tokenizer.encode(text))
      positions = [i for i, t in enumerate(ids) if t == self.step_token_id]
      if len(positions) == len(steps):
        return ids, positions
    ids = start + list(tokenizer.encode(prompt))
    positions = []
    for k, step in enumerate(steps):
      ids += list(tokenizer.encode(step + fmt.before_tag)) + [self.step_token_id]
      positions.append(len(ids) - 1)
      if k < len(steps) - 1 and fmt.between:
        ids += list(tokenizer.encode(fmt.between))
    return ids, positions

  @property
  def cfg(self) -> ModelConfig:
    return self.backbone.cfg

  def init_cache(self, batch: int, max_len: int | None = None, dtype=None) -> Cache:
    """Empty KV cache (see `transformer.init_cache`)."""
    return transformer.init_cache(self.cfg, batch, max_len, dtype)

  def remap(self, tokens: jax.Array, start: jax.Array | None = None) -> jax.Array:
    """tokens[B,T] with every `delimiter_ids` token at t >= start[b] (all t when None)
    replaced by the step tag: generated positions only, so a prompt's own newlines or
    chat turn ends never become tags."""
    if not self.delimiter_ids:
      return tokens
    hit = jnp.any(tokens[..., None] == jnp.asarray(self.delimiter_ids)[None, None], axis=-1)
    if start is not None:
      hit &= jnp.arange(tokens.shape[1])[None] >= start[:, None]
    return jnp.where(hit, self.step_token_id, tokens)

  def step_logits(self, h: jax.Array) -> jax.Array:
    raise NotImplementedError

  def __call__(
      self, tokens, positions, cache: Cache | None = None, attention_mask=None, segment_ids=None
  ) -> tuple[jax.Array, Cache | None]:
    """Values float32[B,T] (probability of a good step at each position) and the cache."""
    h, cache = self.backbone.hidden(
        self.remap(tokens), positions, cache, attention_mask, segment_ids
    )
    logits = parallel.constrain(self.step_logits(h), ("batch", "length"))
    return jax.nn.sigmoid(logits), cache

  def _logits(self, tokens, positions, cache, attention_mask):
    h, cache = self.backbone.hidden(tokens, positions, cache, attention_mask)
    return self.step_logits(h), cache

  def extend(
      self, cache: Cache, tokens: jax.Array, lengths: jax.Array
  ) -> tuple[jax.Array, jax.Array, Cache]:
    """Appends generated tokens[b, :lengths[b]] (remapped) at the cache's index;
    values/logits float32[B] at each row's last appended token (meaningless when
    lengths[b] == 0)."""
    return self.extend_prompt(cache, self.remap(tokens), lengths)

  def extend_prompt(
      self, cache: Cache, tokens: jax.Array, lengths: jax.Array, read: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array, Cache]:
    """`extend` of text as it is (a prompt: no remap); values/logits at t = read[b]
    (default lengths[b] - 1)."""
    b, t = tokens.shape
    steps = jnp.arange(t, dtype=jnp.int32)[None]
    positions = cache["index"][:, None] + steps
    logits, cache = self._logits(tokens, positions, cache, steps < lengths[:, None])
    last = jnp.maximum(lengths - 1, 0) if read is None else read
    logits = jnp.take_along_axis(logits, last.astype(jnp.int32)[:, None], axis=1)[:, 0]
    return jax.nn.sigmoid(logits), logits, cache

  def score(
      self, tokens: jax.Array, lengths: jax.Array, prompt_lengths: jax.Array | None = None
  ) -> jax.Array:
    """Cacheless values float32[B,T] of right-padded tokens[B,T]; 0 at t >= lengths[b].
    The remap applies from prompt_lengths[b] on (everywhere when None)."""
    b, t = tokens.shape
    steps = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None], (b, t))
    mask = steps < lengths[:, None]
    logits, _ = self._logits(self.remap(tokens, prompt_lengths), steps, None, mask)
    return jnp.where(mask, jax.nn.sigmoid(logits), 0.0)

  def step_mask(
      self, tokens: jax.Array, lengths: jax.Array, prompt_lengths: jax.Array | None = None
  ) -> jax.Array:
    """bool[B,T]: positions holding a step tag (after `remap`) within each row."""
    t = tokens.shape[1]
    tags = self.remap(tokens, prompt_lengths) == self.step_token_id
    return tags & (jnp.arange(t)[None] < lengths[:, None])


class ClassifierPRM(_StepPRM):
  """Protocol (a): P(positive_class) of a classification head at step tags
  (`step_format`: steps each followed by the tag, as Qwen2.5-Math-PRM).

  Attributes:
    backbone: Transformer (built with tied embeddings: its vocabulary head is
      unused and not loaded).
    head_w: Params [d_in, d_out] per head layer; head_b: Params [d_out];
      ReLU between layers; the last d_out is the number of classes.
  """

  def __init__(
      self,
      cfg: ModelConfig,
      head_dims: Sequence[tuple[int, int]],
      *,
      step_token_id: int,
      positive_class: int = 1,
      delimiter_ids: Sequence[int] = (),
      rngs: nnx.Rngs,
  ):
    self.backbone = Transformer(cfg.replace(tie_embeddings=True), rngs=rngs)
    pd, init = to_dtype(cfg.param_dtype), nnx.initializers.normal(cfg.embed_dim**-0.5)
    self.head_w = nnx.List(
        [nnx.Param(init(rngs.params(), dims, pd), logical_axes=(None, None)) for dims in head_dims]
    )
    self.head_b = nnx.List(
        [nnx.Param(jnp.zeros((dims[1],), pd), logical_axes=(None,)) for dims in head_dims]
    )
    num_classes = head_dims[-1][1]
    if not 0 <= positive_class < num_classes:
      raise ValueError(f"positive_class={positive_class} but the head has {num_classes} classes")
    self.positive_class, self.num_classes = positive_class, num_classes
    self.step_token_id, self.delimiter_ids = int(step_token_id), tuple(map(int, delimiter_ids))

  def class_logits(self, h: jax.Array) -> jax.Array:
    """Head logits float32[B,T,C] from hidden states h[B,T,d]."""
    x = h.astype(jnp.float32)
    for i, (w, b) in enumerate(zip(self.head_w, self.head_b)):
      if i:
        x = jax.nn.relu(x)
      x = x @ w[...].astype(jnp.float32) + b[...].astype(jnp.float32)
    return x

  def step_logits(self, h: jax.Array) -> jax.Array:
    """Log-odds float32[B,T] of the positive class: l_pos - logsumexp(other classes)."""
    lg = self.class_logits(h)
    pos = jnp.arange(self.num_classes) == self.positive_class
    others = jax.nn.logsumexp(jnp.where(pos, -jnp.inf, lg), axis=-1)
    return lg[..., self.positive_class] - others


class TokenProbPRM(_StepPRM):
  """Protocol (b): softmax over the good/bad token logits of a causal LM at step tags
  (`step_format`: "step ки\\n" per step after BOS, as Math-Shepherd)."""

  step_format = StepFormat(before_tag=" ", between="\n", bos=True)

  def __init__(
      self,
      lm: Transformer,
      *,
      step_token_id: int,
      good_token_id: int,
      bad_token_id: int,
      delimiter_ids: Sequence[int] = (),
  ):
    v = lm.cfg.vocab_size
    for name, i in (("step", step_token_id), ("good", good_token_id), ("bad", bad_token_id)):
      if not 0 <= int(i) < v:
        raise ValueError(f"{name}_token_id={i} is outside the vocabulary (size {v})")
    self.backbone = lm
    self.good_token_id, self.bad_token_id = int(good_token_id), int(bad_token_id)
    self.step_token_id, self.delimiter_ids = int(step_token_id), tuple(map(int, delimiter_ids))

  def step_logits(self, h: jax.Array) -> jax.Array:
    """logit(good) - logit(bad) float32[B,T], reading only those two vocabulary rows."""
    ids = jnp.array([self.good_token_id, self.bad_token_id])
    lm = self.backbone
    w = lm.embed[...][ids].T if lm.cfg.tie_embeddings else lm.lm_head[...][:, ids]  # [d,2]
    two = h.astype(jnp.float32) @ w.astype(jnp.float32)
    return two[..., 0] - two[..., 1]


def _head_layers(keys: Sequence[str]) -> list[str]:
  """Names ('score' or 'score.0', 'score.2', ...) of the linear head layers in a checkpoint."""
  if "score.weight" in keys:
    return ["score"]
  idx = sorted({int(m.group(1)) for k in keys if (m := re.fullmatch(r"score\.(\d+)\.weight", k))})
  if not idx:
    raise ValueError(
        "no classification head in the checkpoint: expected score.weight or "
        "score.<i>.weight tensors"
    )
  return [f"score.{i}" for i in idx]


def load_classifier_prm(
    path: str,
    *,
    step_token_id: int,
    positive_class: int = 1,
    delimiter_ids: Sequence[int] = (),
    mesh=None,
    param_dtype: str = "float32",
    dtype: str | None = None,
    max_len: int | None = None,
) -> ClassifierPRM:
  """Loads a HF Llama/Qwen2 backbone + `score` head directory as a ClassifierPRM.

  Tensors are `model.*` (the backbone, as in `hf.tensor_map`) and the head;
  `lm_head.weight`, if present, is ignored. Loading follows `hf.load_state`
  (sharded onto `mesh` tensor by tensor, clear errors on mismatches).
  """
  hf_cfg, reader = hf.open_checkpoint(path)
  cfg = hf_config.config_from_hf(hf_cfg, max_len=max_len, param_dtype=param_dtype, dtype=dtype)
  if not 0 <= step_token_id < cfg.vocab_size:
    raise ValueError(
        f"step_token_id={step_token_id} is outside the vocabulary " f"(size {cfg.vocab_size})"
    )
  parallel.check_heads(cfg.num_heads, cfg.num_kv_heads, mesh, f"at {path}")
  layers = _head_layers(reader.keys())
  dims = [tuple(reversed(reader.shape(f"{n}.weight"))) for n in layers]
  with parallel.use_mesh(mesh):
    abstract = nnx.eval_shape(
        lambda: ClassifierPRM(
            cfg,
            dims,
            step_token_id=step_token_id,
            positive_class=positive_class,
            delimiter_ids=delimiter_ids,
            rngs=nnx.Rngs(0),
        )
    )
  t, ident = (lambda a: a.T), (lambda a: a)
  mapping = {
      k: (("backbone",) + p, f, g)
      for k, (p, f, g) in hf.tensor_map(cfg.replace(tie_embeddings=True)).items()
  }
  for i, n in enumerate(layers):
    mapping[f"{n}.weight"] = (("head_w", i), t, t)
    mapping[f"{n}.bias"] = (("head_b", i), ident, ident)
  return hf.load_state(abstract, mapping, reader, mesh, optional=("lm_head.weight",))


def load_token_prm(
    path: str,
    *,
    step_token_id: int,
    good_token_id: int,
    bad_token_id: int,
    delimiter_ids: Sequence[int] = (),
    mesh=None,
    param_dtype: str = "float32",
    dtype: str | None = None,
    max_len: int | None = None,
) -> TokenProbPRM:
  """Loads a HF causal LM directory (`hf.load_model`) as a Math-Shepherd style TokenProbPRM."""
  lm = hf.load_model(path, mesh=mesh, param_dtype=param_dtype, dtype=dtype, max_len=max_len)
  return TokenProbPRM(
      lm,
      step_token_id=step_token_id,
      good_token_id=good_token_id,
      bad_token_id=bad_token_id,
      delimiter_ids=delimiter_ids,
  )


def step_scores(prm: _StepPRM, tokens, lengths) -> list[list[float]]:
  """Per-row lists of the scores at step tags, in order (host floats)."""
  tokens, lengths = jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths, jnp.int32)
  values = np.asarray(jax.jit(lambda m, x, n: m.score(x, n))(prm, tokens, lengths))
  mask = np.asarray(prm.step_mask(tokens, lengths))
  return [values[b][mask[b]].astype(float).tolist() for b in range(values.shape[0])]
