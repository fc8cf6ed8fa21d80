"""Value models: shapes, incremental scoring = recompute, policy init, loss, sharding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax import parallel
from ttc_jax.models.reward import ValueModel, create_value_model, value_loss
from ttc_jax.models.transformer import Transformer, create_model
from ttc_jax.train.trainer import Trainer

# jitted entry points: one compilation per shape (eager ops compile one by one)
_score = nnx.jit(lambda m, toks, lens: m.score(toks, lens))
_extend = nnx.jit(lambda m, cache, toks, lens: m.extend(cache, toks, lens))
_forward = nnx.jit(lambda m, toks, pos, cache=None, mask=None: m(toks, pos, cache, mask))
_logits = nnx.jit(lambda m, toks, pos, seg=None: m.value_logits(toks, pos, segment_ids=seg)[0])
_hidden = nnx.jit(lambda m, toks, pos: m.hidden(toks, pos)[0])
_loss = nnx.jit(value_loss)
_grad = nnx.jit(nnx.grad(lambda m, batch: value_loss(m, batch)[0]))


def _tokens(b, t, seed=0, vocab=32):
  return jax.random.randint(jax.random.key(seed), (b, t), 3, vocab)


def _pos(b, t):
  return jnp.broadcast_to(jnp.arange(t), (b, t))


def _right_pad(rows: list[np.ndarray], t: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Ragged int rows -> (tokens[B,T] right-padded with 0, lengths[B])."""
  t = max(max(len(r) for r in rows), 1) if t is None else t
  out = np.zeros((len(rows), t), np.int32)
  for i, r in enumerate(rows):
    out[i, : len(r)] = r
  return jnp.asarray(out), jnp.asarray([len(r) for r in rows], jnp.int32)


def test_shapes_dtypes_axes_and_range(tiny_cfg):
  model = create_value_model(tiny_cfg, 0)
  assert model.cfg == tiny_cfg and isinstance(model, ValueModel)
  values, cache = _forward(model, _tokens(3, 7), _pos(3, 7))
  assert values.shape == (3, 7) and values.dtype == jnp.float32 and cache is None
  assert bool(jnp.all((values > 0) & (values < 1)))
  assert float(jnp.std(values)) > 1e-3  # the head is not a constant at init
  logits = _logits(model, _tokens(3, 7), _pos(3, 7))
  np.testing.assert_allclose(jax.nn.sigmoid(logits), values, atol=1e-6)
  params = nnx.state(model, nnx.Param)
  n = sum(x.size for x in jax.tree.leaves(params))
  assert n == model.cfg.num_params + model.cfg.embed_dim + 1
  for path, v in jax.tree.flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[
      0
  ]:
    axes = v.get_metadata().get("logical_axes")
    assert axes is not None and len(axes) == v[...].ndim, path
  assert model.head.get_metadata()["logical_axes"] == ("embed",)
  assert model.head_bias.get_metadata()["logical_axes"] == ()
  # cached call: values for every token, index advanced by the mask
  cache = model.init_cache(3, 16)
  assert cache["layers"][0]["k"].shape == (3, tiny_cfg.num_kv_heads, tiny_cfg.head_dim, 16)
  mask = jnp.arange(7)[None] < jnp.array([[7], [2], [5]])
  v_c, cache = _forward(model, _tokens(3, 7), _pos(3, 7), cache, mask)
  assert v_c.shape == (3, 7) and cache["index"].tolist() == [7, 2, 5]
  np.testing.assert_allclose(v_c[0], values[0], atol=1e-5)


def test_backbone_matches_policy_with_same_seed(tiny_cfg):
  """Parameters are created backbone first: same seed, same backbone as create_model."""
  policy, vm = create_model(tiny_cfg, 1), create_value_model(tiny_cfg, 1)
  for a, b in zip(jax.tree.leaves(nnx.state(policy)), jax.tree.leaves(nnx.state(vm.backbone))):
    np.testing.assert_array_equal(a, b)


def test_extend_equals_full_rescoring(tiny_cfg):
  """Prompt, then three ragged steps via `extend`; each value equals `score` of the prefix."""
  model = create_value_model(tiny_cfg, 1)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, 32, n) for n in (5, 3, 7)]
  step_lengths = [(3, 4, 1), (2, 0, 4), (4, 2, 3)]  # row 1 adds nothing in step 2
  cache = model.init_cache(3, 24)
  seqs = [p.copy() for p in prompts]
  calls = [prompts] + [[rng.integers(3, 32, n) for n in ls] for ls in step_lengths]
  for k, new in enumerate(calls):
    toks, lens = _right_pad(new, 7 if k == 0 else 4)
    before = cache["index"]
    values, logits, cache = _extend(model, cache, toks, lens)
    assert values.shape == logits.shape == (3,) and values.dtype == jnp.float32
    np.testing.assert_array_equal(cache["index"], before + lens)
    seqs = [np.concatenate([s, n]) if k else s for s, n in zip(seqs, new)]
    ref = _score(model, *_right_pad(seqs, 24))
    for b in range(3):
      if lens[b] == 0:
        continue  # a zero-length row's value is documented as meaningless
      np.testing.assert_allclose(values[b], ref[b, len(seqs[b]) - 1], atol=1e-5)
      np.testing.assert_allclose(jax.nn.sigmoid(logits[b]), values[b], atol=1e-6)
  assert cache["index"].tolist() == [len(s) for s in seqs]
  # score zeroes padding and agrees with the unpadded cacheless call
  ref = _score(model, *_right_pad(seqs, 24))
  n1 = len(seqs[1])
  assert float(jnp.abs(ref[1, n1:]).sum()) == 0.0
  alone, _ = _forward(model, jnp.asarray(seqs[1])[None], _pos(1, n1))
  np.testing.assert_allclose(ref[1, :n1], alone[0], atol=1e-5)


def _abstract_policy_state(cfg):
  """nnx.state of a Transformer with `cfg`, shapes only (nothing compiled)."""
  return nnx.state(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))


def test_backbone_state_copies_policy_and_mismatch_raises(tiny_cfg):
  policy = create_model(tiny_cfg, 2)
  vm = create_value_model(tiny_cfg, 0, backbone_state=nnx.state(policy))
  x = _tokens(2, 9, seed=4)
  h_vm, h_pol = _hidden(vm.backbone, x, _pos(2, 9)), _hidden(policy, x, _pos(2, 9))
  np.testing.assert_array_equal(h_vm, h_pol)
  np.testing.assert_array_equal(vm.head[...], create_value_model(tiny_cfg, 0).head[...])
  with pytest.raises(ValueError, match=r"embed has shape \(32, 48\), expected \(32, 32\)"):
    create_value_model(tiny_cfg, backbone_state=_abstract_policy_state(tiny_config(embed_dim=48)))
  with pytest.raises(ValueError, match="unexpected 1 parameter.*lm_head"):
    create_value_model(
        tiny_cfg, backbone_state=_abstract_policy_state(tiny_config(tie_embeddings=False))
    )
  with pytest.raises(ValueError, match="missing .*blocks/1"):
    create_value_model(tiny_cfg, backbone_state=_abstract_policy_state(tiny_config(num_layers=1)))


def _value_batch():
  """Two packed rows of 8 tokens; labels at a few 'delimiter' positions."""
  seg = np.array([[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 1, 1]], np.int32)
  pos = np.array([[0, 1, 2, 3, 0, 1, 2, 0], list(range(8))], np.int32)
  mask = np.zeros((2, 8), np.float32)
  mask[0, [1, 3, 6]] = 1
  mask[1, [2, 5, 7]] = 1
  targets = np.full((2, 8), 0.5, np.float32)
  targets[0, [1, 3, 6]] = [1.0, 0.25, 0.0]
  targets[1, [2, 5, 7]] = [0.0, 1.0, 0.9]
  return dict(
      inputs=np.asarray(_tokens(2, 8, seed=9)),
      positions=pos,
      segment_ids=seg,
      value_targets=targets,
      value_mask=mask,
  )


def test_value_loss_matches_numpy_and_ignores_unlabelled(tiny_cfg):
  model = create_value_model(tiny_cfg, 2)
  batch = _value_batch()
  loss, aux = _loss(model, batch)
  logits = _logits(model, batch["inputs"], batch["positions"], batch["segment_ids"])
  x, y = np.asarray(logits, np.float64), batch["value_targets"]
  on = batch["value_mask"] > 0
  p = 1 / (1 + np.exp(-x))
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  np.testing.assert_allclose(loss, bce[on].mean(), rtol=1e-5)
  np.testing.assert_allclose(aux["value_mae"], np.abs(p - y)[on].mean(), rtol=1e-5)
  np.testing.assert_allclose(aux["value_accuracy"], ((x >= 0) == (y >= 0.5))[on].mean())
  assert float(aux["loss_tokens"]) == 6.0
  # targets at unlabelled positions (even NaN) do not change the loss
  other = dict(batch, value_targets=np.where(on, y, np.nan).astype(np.float32))
  other["value_targets"][0, 0] = 7.0
  loss2, aux2 = _loss(model, other)
  assert float(loss2) == float(loss) and float(aux2["value_mae"]) == float(aux["value_mae"])
  grads = _grad(model, other)
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert float(jnp.abs(grads["head"][...]).sum()) > 0


def test_trainer_drives_value_loss_down(tiny_cfg):
  batch = _value_batch()
  batch["value_targets"] = (batch["value_targets"] >= 0.5).astype(np.float32)  # hard labels
  tr = Trainer(create_value_model(tiny_cfg, 0), optax.adam(1e-2), loss_fn=value_loss)
  losses = [float(tr.train_step(batch)["loss"]) for _ in range(30)]
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.2 * losses[0], losses
  assert float(tr.eval_step(batch)["value_accuracy"]) == 1.0


CFG = tiny_config(embed_dim=64, num_heads=8, num_kv_heads=8, head_dim=8, mlp_dim=128)


def test_sharded_value_model_scores_match_single_device():
  """On a (2,2,2) mesh: same scores as one device, with and without a policy backbone."""
  assert jax.device_count() == 8
  toks, lens = _tokens(4, 10, seed=11), jnp.array([10, 3, 7, 1], jnp.int32)
  policy = create_model(CFG, 0)
  ref = _score(create_value_model(CFG, 3), toks, lens)
  ref_init = _score(create_value_model(CFG, 3, backbone_state=nnx.state(policy)), toks, lens)
  mesh = parallel.make_mesh((2, 2, 2))
  sharded = create_value_model(CFG, 3, mesh=mesh)
  from_policy = create_value_model(CFG, 3, mesh=mesh, backbone_state=nnx.state(policy))
  # parameters are really distributed: the head over fsdp, attention over tensor
  for arr in (sharded.head[...], from_policy.backbone.blocks[0].attn.q[...]):
    assert len({str(s.index) for s in arr.addressable_shards}) > 1
  with parallel.use_mesh(mesh):
    out = _score(sharded, toks, lens)
    out_init = _score(from_policy, toks, lens)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  np.testing.assert_allclose(out_init, ref_init, atol=1e-5)
  assert not np.allclose(ref, ref_init)
