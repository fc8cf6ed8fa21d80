"""Hugging Face Llama / Qwen2 / Mistral checkpoints <-> the NNX `Transformer`.

A checkpoint is a local directory holding `config.json` and `model.safetensors`
(or shards listed in `model.safetensors.index.json`); nothing is fetched.

Layout mapping (HF `nn.Linear` weights are [out, in]; d = hidden size,
h/kv = query/key-value heads, hd = head_dim, f = intermediate size):

  model.embed_tokens.weight [V,d]           -> embed [V,d]
  model.layers.i.self_attn.q_proj.weight [h*hd,d] -> blocks/i/attn/q [d,h,hd]
    (k_proj/v_proj likewise with kv heads; Qwen2 biases [h*hd] -> q_bias [h,hd])
  model.layers.i.self_attn.o_proj.weight [d,h*hd] -> blocks/i/attn/o [h,hd,d]
  model.layers.i.mlp.{gate,up}_proj.weight [f,d]  -> blocks/i/mlp/{gate,up} [d,f]
  model.layers.i.mlp.down_proj.weight [d,f]       -> blocks/i/mlp/down [f,d]
  model.layers.i.{input,post_attention}_layernorm.weight -> {attn,mlp}_norm/scale
  model.norm.weight -> final_norm/scale;  lm_head.weight [V,d] -> lm_head [d,V]

HF applies RoPE with `rotate_half` on the split-halves layout of each head,
which is what `transformer.rope` does, so q/k need no permutation.

Loading never builds the whole model on the host: the model is created
abstractly (`nnx.eval_shape` under the mesh), each parameter's NamedSharding
comes from its logical axes, and tensors are read one at a time (memory-mapped)
and placed with `jax.make_array_from_callback`.

`config.json` <-> `ModelConfig` is `hf_config`; safetensors files are read and
written by `safetensors_io`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from ttc_jax import parallel
from ttc_jax.models.config import ModelConfig, to_dtype
from ttc_jax.models.hf_config import config_from_hf, config_to_hf
from ttc_jax.models.safetensors_io import SafetensorsReader, write_safetensors
from ttc_jax.models.transformer import Transformer

# Buffers some exporters write that carry no parameters.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# --- checkpoint directory -----------------------------------------------------


def open_checkpoint(path: str) -> tuple[dict, SafetensorsReader]:
  """(config.json as a dict, reader over the checkpoint's safetensors) of a local directory."""
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"checkpoint directory {path} does not exist (only local paths "
        f"are supported; nothing is downloaded)"
    )
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{path} has no config.json")
  with open(cfg_path) as fh:
    hf_cfg = json.load(fh)
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(index):
    with open(index) as fh:
      files = sorted(set(json.load(fh)["weight_map"].values()))
    files = [os.path.join(path, f) for f in files]
  else:
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
      raise FileNotFoundError(
          f"{path} has no *.safetensors file (and no " f"model.safetensors.index.json)"
      )
  return hf_cfg, SafetensorsReader(files)


# --- tensor mapping -------------------------------------------------------------

Fn = Callable[[np.ndarray], np.ndarray]


def tensor_map(cfg: ModelConfig, prefix: str = "model.") -> dict[str, tuple[tuple, Fn, Fn]]:
  """HF name -> (state path, HF->repo transform, repo->HF transform)."""
  d, h, kv, hd = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  ident: Fn = lambda a: a
  t: Fn = lambda a: a.T
  proj = lambda n: ((lambda a: a.T.reshape(d, n, hd)), (lambda a: a.reshape(d, n * hd).T))
  bias = lambda n: ((lambda a: a.reshape(n, hd)), (lambda a: a.reshape(n * hd)))
  o = ((lambda a: a.T.reshape(h, hd, d)), (lambda a: a.reshape(h * hd, d).T))
  m = {
      f"{prefix}embed_tokens.weight": (("embed",), ident, ident),
      f"{prefix}norm.weight": (("final_norm", "scale"), ident, ident),
  }
  if not cfg.tie_embeddings:
    m["lm_head.weight"] = (("lm_head",), t, t)
  for i in range(cfg.num_layers):
    p, b = f"{prefix}layers.{i}.", ("blocks", i)
    m[p + "input_layernorm.weight"] = (b + ("attn_norm", "scale"), ident, ident)
    m[p + "post_attention_layernorm.weight"] = (b + ("mlp_norm", "scale"), ident, ident)
    for name, n in (("q", h), ("k", kv), ("v", kv)):
      m[p + f"self_attn.{name}_proj.weight"] = (b + ("attn", name),) + proj(n)
      if cfg.qkv_bias:
        m[p + f"self_attn.{name}_proj.bias"] = (b + ("attn", f"{name}_bias"),) + bias(n)
    m[p + "self_attn.o_proj.weight"] = (b + ("attn", "o"),) + o
    for name in ("gate", "up", "down"):
      m[p + f"mlp.{name}_proj.weight"] = (b + ("mlp", name), t, t)
  return m


def _listing(names: list[str]) -> str:
  more = f" and {len(names) - 8} more" if len(names) > 8 else ""
  return ", ".join(names[:8]) + more


def load_state(
    abstract: nnx.Module,
    mapping: Mapping[str, tuple[tuple, Fn, Fn]],
    reader: SafetensorsReader,
    mesh=None,
    optional: Iterable[str] = (),
) -> nnx.Module:
  """Fills an abstract module (from `nnx.eval_shape`) with checkpoint tensors.

  `mapping` is `tensor_map`-like; tensors named in `optional` may be present
  in the checkpoint and are ignored. Each tensor is read, transformed, cast to
  the parameter's dtype and placed on its NamedSharding (from logical axes
  when `mesh` is given) on its own, so at most one tensor is on the host at a
  time. Raises ValueError listing missing/unexpected tensors and naming the
  tensor and both shapes on a shape mismatch.
  """
  graphdef, abs_state = nnx.split(abstract)
  shardings = (
      None if mesh is None else dict(nnx.to_flat_state(parallel.state_shardings(abs_state, mesh)))
  )
  flat = dict(nnx.to_flat_state(abs_state))
  have = set(reader.keys())
  missing = sorted(set(mapping) - have)
  ignore = set(optional)
  unexpected = sorted(k for k in have - set(mapping) - ignore if not k.endswith(_IGNORED_SUFFIXES))
  if missing or unexpected:
    raise ValueError(
        "checkpoint tensors do not match the model: "
        + "; ".join(
            s
            for s in (
                f"missing {len(missing)}: {_listing(missing)}" if missing else "",
                f"unexpected {len(unexpected)}: {_listing(unexpected)}" if unexpected else "",
            )
            if s
        )
    )
  unmapped = set(flat) - {p for p, _, _ in mapping.values()}
  if unmapped:
    raise ValueError(f"model parameters with no checkpoint tensor: {sorted(map(str, unmapped))}")
  leaves = []
  for name, (path, to_repo, to_hf) in mapping.items():
    want = flat[path].get_value()
    hf_shape = jax.eval_shape(to_hf, jax.ShapeDtypeStruct(want.shape, want.dtype)).shape
    if tuple(reader.shape(name)) != tuple(hf_shape):
      raise ValueError(
          f"tensor {name} has shape {tuple(reader.shape(name))}, expected "
          f"{tuple(hf_shape)} (for {'/'.join(map(str, path))} {tuple(want.shape)})"
      )
    value = np.asarray(to_repo(reader.get(name)), dtype=want.dtype)
    if shardings is None:
      arr = jax.device_put(value)
    else:
      sh: NamedSharding = shardings[path].get_value()
      arr = jax.make_array_from_callback(value.shape, sh, lambda idx, v=value: v[idx])
    leaves.append((path, arr))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


# --- public API -------------------------------------------------------------------


def load_model(
    path: str,
    *,
    mesh=None,
    param_dtype: str = "float32",
    dtype: str | None = None,
    max_len: int | None = None,
) -> Transformer:
  """Imports a HF Llama/Qwen2/Mistral causal LM directory as a `Transformer`.

  Args:
    path: local directory with config.json and *.safetensors.
    mesh: optional `parallel.make_mesh` mesh; parameters are placed on their
      logical-axis shardings as they are read. A `tensor` axis must divide the
      model's head and KV-head counts (ValueError naming them, `parallel.check_heads`).
    param_dtype: "float32" or "bfloat16" storage dtype (checkpoint tensors are
      cast); dtype: compute dtype (default: param_dtype).
    max_len: longest sequence the model will be used on (default: the
      checkpoint's max_position_embeddings); sets the default cache length.
  """
  hf_cfg, reader = open_checkpoint(path)
  cfg = config_from_hf(hf_cfg, max_len=max_len, param_dtype=param_dtype, dtype=dtype)
  parallel.check_heads(cfg.num_heads, cfg.num_kv_heads, mesh, f"at {path}")
  with parallel.use_mesh(mesh):
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  optional = ("lm_head.weight",) if cfg.tie_embeddings else ()
  return load_state(abstract, tensor_map(cfg), reader, mesh, optional)


def save_model(
    model: Transformer,
    path: str,
    *,
    model_type: str | None = None,
    dtype: str | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    extra_config: Mapping[str, Any] | None = None,
) -> None:
  """Exports a `Transformer` as a HF checkpoint directory that `transformers` loads.

  model_type: "llama" or "qwen2" (default: "qwen2" when cfg.qkv_bias, else
  "llama"). dtype: tensor dtype written (default cfg.param_dtype). Tensors are
  fetched one at a time; files are split at `max_shard_bytes` with a
  `model.safetensors.index.json`. extra_config (e.g. bos/eos_token_id) is
  merged into config.json.
  """
  cfg = model.cfg
  model_type = model_type or ("qwen2" if cfg.qkv_bias else "llama")
  out_dtype = np.dtype(to_dtype(dtype or cfg.param_dtype))
  hf_cfg = config_to_hf(
      cfg, model_type, dict(extra_config or {}, torch_dtype=str(out_dtype), dtype=str(out_dtype))
  )
  os.makedirs(path, exist_ok=True)
  flat = dict(nnx.to_flat_state(nnx.state(model)))
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, (p, _, to_hf) in tensor_map(cfg).items():
    a = np.asarray(to_hf(np.asarray(jax.device_get(flat[p].get_value()))), out_dtype)
    if shards[-1] and size + a.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = a
    size += a.nbytes
  if len(shards) == 1:
    write_safetensors(os.path.join(path, "model.safetensors"), shards[0])
  else:
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
      fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      write_safetensors(os.path.join(path, fname), shard)
      weight_map.update({k: fname for k in shard})
      total += sum(a.nbytes for a in shard.values())
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as fh:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=2)
  with open(os.path.join(path, "config.json"), "w") as fh:
    json.dump(hf_cfg, fh, indent=2, sort_keys=True)
