"""Hugging Face Llama/Qwen2 import/export against PyTorch `transformers` on CPU."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ttc_jax import parallel, sampling  # noqa: E402
from ttc_jax.models import hf, hf_config, safetensors_io  # noqa: E402
from ttc_jax.models.transformer import rope_frequencies  # noqa: E402

V = 64
BASE = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=0,
)
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
CASES = {
    # name: (model class, config overrides)
    "llama_gqa_untied": ("Llama", dict(tie_word_embeddings=False, rope_theta=500.0)),
    "llama_tied_llama3": ("Llama", dict(tie_word_embeddings=True, rope_scaling=LLAMA3)),
    "llama_mha_linear": (
        "Llama",
        dict(
            num_key_value_heads=4,
            tie_word_embeddings=False,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
        ),
    ),
    "qwen2_bias_untied": ("Qwen2", dict(tie_word_embeddings=False, num_key_value_heads=1)),
    "qwen2_bias_tied": ("Qwen2", dict(tie_word_embeddings=True)),
}


def make_hf(kind: str, seed: int = 0, **overrides):
  """A tiny random float32 HF causal LM with non-trivial norms and biases."""
  conf = getattr(transformers, f"{kind}Config")(**dict(BASE, **overrides))
  torch.manual_seed(seed)
  model = getattr(transformers, f"{kind}ForCausalLM")(conf).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
      else:
        p.normal_(0.0, 0.2)
  return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()


def jax_logits(model, tokens: np.ndarray) -> np.ndarray:
  b, t = tokens.shape
  pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  return np.asarray(jax.jit(lambda m, x, p: m(x, p)[0])(model, jnp.asarray(tokens), pos))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """name -> (HF model, checkpoint directory), built once per module."""
  out = {}
  for name, (kind, over) in CASES.items():
    model = make_hf(kind, **over)
    path = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(path, safe_serialization=True)
    out[name] = (model, path)
  return out


TOKENS = np.random.default_rng(0).integers(0, V, size=(3, 16))


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_pytorch(saved, name):
  model, path = saved[name]
  ours = hf.load_model(path, max_len=64)
  cfg = ours.cfg
  assert cfg.tie_embeddings == CASES[name][1]["tie_word_embeddings"]
  assert cfg.qkv_bias == name.startswith("qwen2")
  assert cfg.num_kv_heads == model.config.num_key_value_heads and cfg.norm_eps == 1e-5
  ref = hf_logits(model, TOKENS)
  assert np.abs(ref).max() > 1.0  # weights are large enough to matter
  np.testing.assert_allclose(jax_logits(ours, TOKENS), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["llama_tied_llama3", "llama_mha_linear", "llama_gqa_untied"])
def test_rope_frequencies_match_hf(saved, name):
  model, path = saved[name]
  cfg = hf.load_model(path, max_len=64).cfg
  ref = model.model.rotary_emb.inv_freq.numpy()
  ours = np.asarray(rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
  np.testing.assert_allclose(ours, ref, rtol=1e-6)
  if cfg.rope_scaling:  # the scaling really changes some frequencies
    plain = np.asarray(rope_frequencies(cfg.head_dim, cfg.rope_theta))
    assert np.abs(plain - ours).max() > 1e-4


@pytest.mark.parametrize("name", ["llama_gqa_untied", "qwen2_bias_tied"])
def test_greedy_generation_matches_hf(saved, name):
  model, path = saved[name]
  ours = hf.load_model(path, max_len=32)
  prompts = TOKENS[:2, :6]
  with torch.no_grad():
    ref = model.generate(
        torch.tensor(prompts),
        attention_mask=torch.ones(2, 6, dtype=torch.long),
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=0,
    ).numpy()[:, 6:]
  out = sampling.generate(
      ours,
      jnp.asarray(prompts),
      jnp.full((2,), 6),
      jax.random.key(0),
      max_new_tokens=10,
      eos_id=-1,
      temperature=0.0,
  )
  np.testing.assert_array_equal(np.asarray(out.tokens[:, 0]), ref)
  assert len(set(ref.ravel().tolist())) > 2  # not a degenerate constant output


@pytest.mark.parametrize("name", ["llama_tied_llama3", "qwen2_bias_untied"])
def test_export_roundtrip_transformers(saved, tmp_path, name):
  model, path = saved[name]
  ours = hf.load_model(path, max_len=64)
  out = str(tmp_path / "export")
  hf.save_model(ours, out, max_shard_bytes=20_000)  # forces several shards
  assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
  kind = CASES[name][0]
  reloaded = getattr(transformers, f"{kind}ForCausalLM").from_pretrained(out).eval()
  assert type(reloaded.config).__name__ == f"{kind}Config"
  np.testing.assert_allclose(hf_logits(reloaded, TOKENS), hf_logits(model, TOKENS), atol=1e-5)
  again = hf.load_model(out, max_len=64)
  assert again.cfg == ours.cfg
  np.testing.assert_array_equal(jax_logits(again, TOKENS), jax_logits(ours, TOKENS))


def test_bfloat16_import_and_export(saved, tmp_path):
  model, _ = saved["qwen2_bias_untied"]
  path = str(tmp_path / "bf16")
  bf = make_hf("Qwen2", tie_word_embeddings=False, num_key_value_heads=1).to(torch.bfloat16)
  bf.save_pretrained(path, safe_serialization=True)
  ours = hf.load_model(path, param_dtype="bfloat16", max_len=64)
  assert ours.embed[...].dtype == jnp.bfloat16 and ours.cfg.dtype == "bfloat16"
  ref_q = bf.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()
  np.testing.assert_array_equal(
      np.asarray(ours.blocks[1].attn.q[...].astype(jnp.float32)).reshape(32, -1).T, ref_q
  )
  # bf16 compute stays close to the float32 reference of the same weights.
  ref = hf_logits(model, TOKENS)
  err = np.abs(jax_logits(ours, TOKENS) - ref).max()
  assert err < 0.1 * np.abs(ref).max(), err
  out = str(tmp_path / "bf16_export")
  hf.save_model(ours, out)
  back = transformers.Qwen2ForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
  w = back.model.layers[1].self_attn.q_proj.weight
  assert w.dtype == torch.bfloat16
  np.testing.assert_array_equal(w.detach().float().numpy(), ref_q)


# The Qwen2 case with biases has 1 KV head, which no tensor axis > 1 divides: it loads onto
# data/fsdp meshes (tensor=1); tensor axes of 4 and 2 use the 4-KV-head and 2-KV-head cases.
@pytest.mark.parametrize(
    "name,shape",
    [
        ("qwen2_bias_untied", (2, 4, 1)),
        ("llama_mha_linear", (1, 2, 4)),
        ("qwen2_bias_tied", (2, 2, 2)),
    ],
)
def test_load_onto_mesh(saved, name, shape):
  model, path = saved[name]
  mesh = parallel.make_mesh(shape)
  ours = hf.load_model(path, mesh=mesh, max_len=64)
  emb = ours.embed[...]
  assert emb.sharding.mesh.shape == mesh.shape
  assert not emb.sharding.is_fully_replicated  # vocab over tensor / embed over fsdp
  assert ours.blocks[0].mlp.gate[...].sharding.spec == parallel.logical_to_spec(
      ("embed", "mlp"), (32, 48), mesh
  )
  with parallel.use_mesh(mesh):
    got = jax_logits(ours, TOKENS[:2])
  np.testing.assert_allclose(got, hf_logits(model, TOKENS[:2]), atol=1e-4, rtol=0)


def test_heads_the_tensor_axis_does_not_divide_are_an_error(saved):
  """4 heads / 1 KV head on a tensor axis of 4: a ValueError naming both counts and the
  checkpoint, not a silently replicated attention."""
  path = saved["qwen2_bias_untied"][1]
  with pytest.raises(
      ValueError, match=r"at .* has 4 attention heads and 1 KV heads; a tensor axis of 4"
  ):
    hf.load_model(path, mesh=parallel.make_mesh((1, 2, 4)), max_len=64)


def test_sharded_hf_checkpoint(tmp_path):
  model = make_hf("Llama", seed=3, tie_word_embeddings=False)
  model.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size="20KB")
  assert os.path.isfile(tmp_path / "model.safetensors.index.json")
  ours = hf.load_model(str(tmp_path), max_len=64)
  np.testing.assert_allclose(jax_logits(ours, TOKENS), hf_logits(model, TOKENS), atol=1e-4)


# --- errors -----------------------------------------------------------------------


def _rewrite(path, edit):
  """Rewrites model.safetensors of `path` after edit(dict of arrays)."""
  f = os.path.join(path, "model.safetensors")
  reader = safetensors_io.SafetensorsReader([f])
  tensors = {k: reader.get(k) for k in reader.keys()}
  edit(tensors)
  safetensors_io.write_safetensors(f, tensors)


@pytest.fixture
def small_ckpt(tmp_path):
  make_hf("Llama", num_hidden_layers=1, tie_word_embeddings=False).save_pretrained(
      str(tmp_path), safe_serialization=True
  )
  return str(tmp_path)


def test_error_missing_paths(tmp_path, small_ckpt):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hf.load_model(str(tmp_path / "nope"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="no config.json"):
    hf.load_model(str(empty))
  os.remove(os.path.join(small_ckpt, "model.safetensors"))
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    hf.load_model(small_ckpt)


def test_error_config(small_ckpt):
  cfg_path = os.path.join(small_ckpt, "config.json")
  conf = json.load(open(cfg_path))
  json.dump(dict(conf, model_type="gpt2"), open(cfg_path, "w"))
  with pytest.raises(ValueError, match="unknown model_type 'gpt2'"):
    hf.load_model(small_ckpt)
  json.dump(
      dict(conf, rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}),
      open(cfg_path, "w"),
  )
  with pytest.raises(ValueError, match="unsupported RoPE scaling type 'yarn'"):
    hf.load_model(small_ckpt)


def test_error_tensors(small_ckpt):
  _rewrite(small_ckpt, lambda t: t.pop("model.layers.0.mlp.up_proj.weight"))
  with pytest.raises(ValueError, match="missing 1: model.layers.0.mlp.up_proj.weight"):
    hf.load_model(small_ckpt)
  _rewrite(
      small_ckpt,
      lambda t: t.update(
          {
              "model.layers.0.mlp.up_proj.weight": np.zeros((48, 32), np.float32),
              "model.extra.weight": np.zeros((2,), np.float32),
          }
      ),
  )
  with pytest.raises(ValueError, match="unexpected 1: model.extra.weight"):
    hf.load_model(small_ckpt)
  _rewrite(
      small_ckpt,
      lambda t: (
          t.pop("model.extra.weight"),
          t.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((8, 32), np.float32)}),
      ),
  )
  with pytest.raises(ValueError, match=r"k_proj.weight has shape \(8, 32\), expected \(16, 32\)"):
    hf.load_model(small_ckpt)


def test_model_config_rope_scaling_normalised():
  import dataclasses
  from ttc_jax.models.config import ModelConfig

  cfg = ModelConfig(rope_scaling={"type": "linear", "factor": 2})
  assert cfg.rope_scaling == (("factor", 2.0), ("rope_type", "linear"))
  hash(cfg)  # stays usable as a static jit argument
  again = ModelConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
  assert again == cfg and ModelConfig(rope_scaling={"rope_type": "default"}) == ModelConfig()
  with pytest.raises(ValueError, match="RoPE scaling 'llama3' needs"):
    ModelConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0})


def test_config_from_hf_variants():
  base = dict(
      vocab_size=V,
      hidden_size=32,
      intermediate_size=48,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=128,
  )
  # transformers 4 style RoPE keys, and Mistral (Llama layout) without a sliding window.
  old = hf_config.config_from_hf(
      dict(
          base,
          model_type="mistral",
          rope_theta=1e6,
          sliding_window=None,
          rope_scaling={"type": "linear", "factor": 2.0},
      )
  )
  assert old.rope_theta == 1e6 and dict(old.rope_scaling)["factor"] == 2.0
  assert old.head_dim == 8 and not old.qkv_bias and not old.tie_embeddings
  with pytest.raises(ValueError, match="sliding_window=64 is smaller than max_len=128"):
    hf_config.config_from_hf(dict(base, model_type="mistral", sliding_window=64))
  with pytest.raises(ValueError, match="attention_bias/mlp_bias"):
    hf_config.config_from_hf(dict(base, model_type="llama", attention_bias=True))
  with pytest.raises(ValueError, match="use_sliding_window"):
    hf_config.config_from_hf(dict(base, model_type="qwen2", use_sliding_window=True))
  with pytest.raises(ValueError, match="hidden_act 'gelu'"):
    hf_config.config_from_hf(dict(base, model_type="llama", hidden_act="gelu"))
