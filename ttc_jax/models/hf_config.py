"""Hugging Face `config.json` (Llama / Qwen2 / Mistral) <-> `ModelConfig`.

`ttc_jax.models.hf` builds the model of a checkpoint from `config_from_hf` and writes
`config_to_hf` next to exported weights.
"""

from __future__ import annotations

from typing import Any, Mapping

from ttc_jax.models.config import ModelConfig, normalize_rope_scaling

MODEL_TYPES = ("llama", "qwen2", "mistral")


def config_from_hf(
    hf: Mapping[str, Any],
    *,
    max_len: int | None = None,
    param_dtype: str = "float32",
    dtype: str | None = None,
) -> ModelConfig:
  """ModelConfig of a HF Llama/Qwen2/Mistral `config.json` dict.

  Reads RoPE from `rope_parameters` (transformers 5) or `rope_theta` +
  `rope_scaling` (transformers 4). `max_len` defaults to
  `max_position_embeddings`; `dtype` (compute) defaults to `param_dtype`.
  Raises ValueError for an unknown `model_type` or an unsupported feature.
  """
  mt = hf.get("model_type")
  if mt not in MODEL_TYPES:
    raise ValueError(f"unknown model_type {mt!r}; supported: {list(MODEL_TYPES)}")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (only 'silu')")
  if mt in ("llama", "mistral") and (hf.get("attention_bias") or hf.get("mlp_bias")):
    raise ValueError("Llama attention_bias/mlp_bias checkpoints are not supported")
  if mt == "qwen2" and hf.get("use_sliding_window"):
    raise ValueError("Qwen2 use_sliding_window=true is not supported")
  rp = dict(hf.get("rope_parameters") or {})
  theta = rp.pop("rope_theta", hf.get("rope_theta", 10_000.0))
  scaling = rp if rp else (hf.get("rope_scaling") or ())
  d, heads = hf["hidden_size"], hf["num_attention_heads"]
  max_len = int(max_len or hf.get("max_position_embeddings", 4096))
  window = hf.get("sliding_window") if mt == "mistral" else None
  if window is not None and max_len > window:
    raise ValueError(
        f"Mistral sliding_window={window} is smaller than max_len={max_len}; "
        f"pass max_len <= {window}"
    )
  return ModelConfig(
      vocab_size=hf["vocab_size"],
      embed_dim=d,
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or d // heads,
      mlp_dim=hf["intermediate_size"],
      max_len=max_len,
      rope_theta=float(theta),
      rope_scaling=normalize_rope_scaling(scaling),
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=(mt == "qwen2"),
      param_dtype=param_dtype,
      dtype=dtype or param_dtype,
  )


def config_to_hf(cfg: ModelConfig, model_type: str, extra: Mapping[str, Any] | None = None) -> dict:
  """HF `config.json` dict for `cfg` (both transformers 4 and 5 RoPE keys)."""
  if model_type not in ("llama", "qwen2"):
    raise ValueError(f"export model_type must be 'llama' or 'qwen2', got {model_type!r}")
  if cfg.qkv_bias != (model_type == "qwen2"):
    raise ValueError(
        f"qkv_bias={cfg.qkv_bias} cannot be exported as {model_type!r} "
        f"(Qwen2 has q/k/v biases, Llama none)"
    )
  scaling = dict(cfg.rope_scaling) or None
  arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[model_type]
  out = dict(
      architectures=[arch],
      model_type=model_type,
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.embed_dim,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim,
      intermediate_size=cfg.mlp_dim,
      max_position_embeddings=cfg.max_len,
      rms_norm_eps=cfg.norm_eps,
      hidden_act="silu",
      rope_theta=cfg.rope_theta,
      rope_scaling=scaling,
      rope_parameters=dict(scaling or {"rope_type": "default"}, rope_theta=cfg.rope_theta),
      tie_word_embeddings=cfg.tie_embeddings,
      torch_dtype=cfg.param_dtype,
      dtype=cfg.param_dtype,
      attention_bias=False,
      mlp_bias=False,
  )
  if model_type == "qwen2":
    out.update(use_sliding_window=False, sliding_window=None)
  out.update(extra or {})
  return out
