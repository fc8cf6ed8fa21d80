"""Model configuration and FLOPs accounting for the decoder-only transformer."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Attention implementations (ttc_jax.models.attention): "auto" picks one per platform at trace
# time (`resolve_attention`). An execution choice, like a kernel backend: every one computes
# the same attention, so it is not part of what a checkpoint or a stage hash depends on.
ATTENTION_IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "splash")


def to_dtype(name: str | Any):
  """Maps a dtype name ('float32', 'bfloat16', ...) to a jnp dtype."""
  if not isinstance(name, str):
    return name
  if name not in _DTYPES:
    raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
  return _DTYPES[name]


ROPE_SCALING_KEYS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def normalize_rope_scaling(scaling: Any) -> tuple[tuple[str, Any], ...]:
  """Validates RoPE scaling (None, a mapping or (key, value) pairs) -> sorted pairs.

  "default" (no scaling) gives (); the legacy key "type" is read as
  "rope_type". Raises ValueError naming an unsupported type or missing keys.
  """
  if not scaling:
    return ()
  d = dict(scaling.items() if isinstance(scaling, Mapping) else [tuple(kv) for kv in scaling])
  if "type" in d and "rope_type" not in d:
    d["rope_type"] = d.pop("type")
  d.pop("type", None)
  kind = d.get("rope_type")
  if kind in (None, "default"):
    return ()
  if kind not in ROPE_SCALING_KEYS:
    raise ValueError(
        f"unsupported RoPE scaling type {kind!r}; supported: "
        f"{sorted(ROPE_SCALING_KEYS)} (or none/'default')"
    )
  missing = [k for k in ROPE_SCALING_KEYS[kind] if d.get(k) is None]
  if missing:
    raise ValueError(f"RoPE scaling {kind!r} needs {missing}; got {sorted(d)}")
  keep = ("rope_type",) + ROPE_SCALING_KEYS[kind]
  return tuple(sorted((k, kind if k == "rope_type" else float(d[k])) for k in keep))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of a Llama-style decoder (RoPE, RMSNorm, SwiGLU, GQA).

  Attributes:
    vocab_size: number of token ids (may exceed the tokenizer's vocabulary,
      e.g. padded to a multiple of 8 for sharding).
    embed_dim: model width `d`.
    num_layers: number of transformer blocks.
    num_heads: query heads; `embed_dim` need not equal heads * head_dim.
    num_kv_heads: key/value heads (grouped-query attention); divides num_heads.
    head_dim: per-head width.
    mlp_dim: SwiGLU hidden width.
    max_len: the longest sequence (prompt + generation) the model is used on.
    rope_theta: RoPE base frequency.
    norm_eps: RMSNorm epsilon.
    tie_embeddings: read logits through the transposed input embedding.
    qkv_bias: add biases to q/k/v projections (Qwen2 style).
    param_dtype: storage dtype of parameters.
    dtype: compute dtype of activations (logits are always float32).
    rope_scaling: RoPE frequency scaling as sorted (key, value) pairs, e.g.
      (("factor", 8.0), ("rope_type", "linear")); () = none. A mapping is
      accepted and normalised (so the config stays hashable). Supported
      `rope_type`s: "linear" (factor) and "llama3" (factor, low_freq_factor,
      high_freq_factor, original_max_position_embeddings), as in Hugging Face.
    attention: attention implementation, one of `ATTENTION_IMPLEMENTATIONS`:
      "reference" (einsums with a hand-written VJP, the XLA:CPU path), "xla" /
      "cudnn" (`jax.nn.dot_product_attention`), "splash" (Pallas TPU kernel), or
      "auto" (reference on CPU, cudnn on GPU, splash on TPU; see
      `ttc_jax.models.attention.resolve_attention`). Same results up to float
      rounding, so configs hash without it (its default is never written to
      the config sections that stage hashes read).
  """

  vocab_size: int = 32
  embed_dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 512
  max_len: int = 256
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  qkv_bias: bool = False
  param_dtype: str = "float32"
  dtype: str = "float32"
  rope_scaling: Any = ()
  attention: str = "auto"

  def __post_init__(self):
    for f in (
        "vocab_size",
        "embed_dim",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "mlp_dim",
        "max_len",
    ):
      v = getattr(self, f)
      if not isinstance(v, int) or v <= 0:
        raise ValueError(f"ModelConfig.{f} must be a positive int, got {v!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads={self.num_heads} is not a multiple of "
          f"num_kv_heads={self.num_kv_heads}"
      )
    if self.head_dim % 2:
      raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even (RoPE)")
    to_dtype(self.param_dtype)
    to_dtype(self.dtype)
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(
          f"ModelConfig.attention={self.attention!r} is not one of {list(ATTENTION_IMPLEMENTATIONS)}"
      )
    object.__setattr__(self, "rope_scaling", normalize_rope_scaling(self.rope_scaling))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    """Builds a config from a mapping, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(names)}")
    return cls(**dict(d))

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  # --- parameter and FLOPs accounting -------------------------------------

  @property
  def num_params(self) -> int:
    """Total parameter count, embeddings included."""
    d, h, kv, hd, f = (
        self.embed_dim,
        self.num_heads,
        self.num_kv_heads,
        self.head_dim,
        self.mlp_dim,
    )
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    if self.qkv_bias:
      attn += h * hd + 2 * kv * hd
    block = attn + 3 * d * f + 2 * d
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * block + emb + d

  @property
  def num_matmul_params(self) -> int:
    """Parameters that take part in matmuls per token (embedding gather excluded)."""
    d = self.embed_dim
    per_layer = (
        d * self.num_heads * self.head_dim * 2
        + 2 * d * self.num_kv_heads * self.head_dim
        + 3 * d * self.mlp_dim
    )
    return self.num_layers * per_layer + self.vocab_size * d

  def forward_flops_per_token(self, context_len: float) -> float:
    """Forward FLOPs for one token attending to `context_len` keys.

    2 FLOPs per multiply-add over matmul parameters, plus QK^T and AV
    (2 * 2 * heads * head_dim * context_len per layer).
    """
    attn = 4 * self.num_layers * self.num_heads * self.head_dim * context_len
    return 2 * self.num_matmul_params + attn

  def train_flops_per_token(self, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token (3x forward), causal average context."""
    return 3 * self.forward_flops_per_token(seq_len / 2)
