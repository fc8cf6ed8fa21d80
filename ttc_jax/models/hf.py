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
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from ttc_jax import parallel
from ttc_jax.models.config import ModelConfig, normalize_rope_scaling, to_dtype
from ttc_jax.models.transformer import Transformer

MODEL_TYPES = ("llama", "qwen2", "mistral")
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
# Buffers some exporters write that carry no parameters.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# --- safetensors I/O ----------------------------------------------------------


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


# --- config -------------------------------------------------------------------


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
      logical-axis shardings as they are read.
    param_dtype: "float32" or "bfloat16" storage dtype (checkpoint tensors are
      cast); dtype: compute dtype (default: param_dtype).
    max_len: longest sequence the model will be used on (default: the
      checkpoint's max_position_embeddings); sets the default cache length.
  """
  hf_cfg, reader = open_checkpoint(path)
  cfg = config_from_hf(hf_cfg, max_len=max_len, param_dtype=param_dtype, dtype=dtype)
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
