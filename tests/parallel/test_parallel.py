"""Sharded loss and gradients on 8 fake CPU devices equal the single-device ones."""

import os

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from conftest import tiny_config
from ttc_jax import parallel
from ttc_jax.models.transformer import create_model
from ttc_jax.train.optim import make_optimizer
from ttc_jax.train.trainer import Trainer
from mp_worker import fixed_batch

_batch = fixed_batch  # one packed LM batch shared with the multi-process worker


CFG = tiny_config(embed_dim=64, num_heads=8, num_kv_heads=8, head_dim=8, mlp_dim=128)


@pytest.fixture(scope="module")
def reference():
  tr = Trainer(create_model(CFG, 0), make_optimizer(1e-3, 10, 0))
  loss, grads = tr.grads(_batch())
  stepped = jax.device_get(tr.train_step(_batch()))
  return float(loss), jax.device_get(grads), stepped, jax.device_get(nnx.state(tr.model))


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 1, 8)])
def test_sharded_loss_and_grads_match_single_device(shape, reference):
  assert jax.device_count() == 8
  ref_loss, ref_grads, ref_metrics, ref_params = reference
  mesh = parallel.make_mesh(shape)
  with parallel.use_mesh(mesh):
    model = create_model(CFG, 0, mesh)
  tr = Trainer(model, make_optimizer(1e-3, 10, 0), mesh=mesh)
  # parameters really are distributed when the mesh has fsdp/tensor axes
  q = nnx.state(tr.model)["blocks"][0]["attn"]["q"][...]
  if shape[1] > 1 or shape[2] > 1:
    assert len({str(s.index) for s in q.addressable_shards}) > 1
  loss, grads = tr.grads(_batch())
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.device_get(grads)), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  metrics = jax.device_get(tr.train_step(_batch()))
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], atol=1e-5)
  for a, b in zip(
      jax.tree.leaves(jax.device_get(nnx.state(tr.model))), jax.tree.leaves(ref_params)
  ):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_logical_to_spec_rules_and_divisibility():
  mesh = parallel.make_mesh((2, 2, 2))
  assert parallel.logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
  assert parallel.logical_to_spec(("batch", None), (8, 3), mesh) == P(("data", "fsdp"), None)
  # other dimensions a mesh axis does not divide stay replicated (e.g. an odd vocabulary)
  assert parallel.logical_to_spec(("vocab", "embed"), (33, 64), mesh) == P(None, "fsdp")
  single = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  assert parallel.logical_to_spec(("embed", "mlp"), (64, 128), single) == P(None, None)


@pytest.mark.parametrize("name", ["heads", "kv_heads", "act_heads"])
def test_heads_that_the_tensor_axis_does_not_divide_are_an_error(name):
  """Attention heads are not silently replicated: 3 (KV) heads on a tensor axis of 2 raise,
  naming the count and the axis size; a tensor axis of 1 or a dividing one is fine."""
  mesh = parallel.make_mesh((2, 2, 2))
  axes = ("embed", name, "head_dim") if name != "act_heads" else ("batch", None, name, None)
  bad = (64, 3, 8) if name != "act_heads" else (8, 5, 3, 8)
  with pytest.raises(ValueError, match=r"has 3 (KV|attention) heads .* tensor axis of 2"):
    parallel.logical_to_spec(axes, bad, mesh)
  good = tuple(4 if d == 3 else d for d in bad)
  assert "tensor" in parallel.logical_to_spec(axes, good, mesh)
  assert "tensor" not in parallel.logical_to_spec(axes, bad, parallel.make_mesh((4, 2, 1)))
  with pytest.raises(ValueError, match="has 8 attention heads and 2 KV heads; a tensor axis of 4"):
    parallel.check_heads(8, 2, parallel.make_mesh((1, 2, 4)))
  parallel.check_heads(8, 2, parallel.make_mesh((2, 2, 2)))
  parallel.check_heads(3, 1, None)
  wide = parallel.make_mesh((1, 1, 8))  # the tiny model's 4 heads / 2 KV heads on tensor=8
  with pytest.raises(ValueError, match=r"has [24] (KV|attention) heads .*tensor axis of 8"):
    with parallel.use_mesh(wide):
      create_model(tiny_config(), 0, wide)


def test_make_mesh_errors_name_the_problem():
  with pytest.raises(ValueError, match="needs 12 devices, but 8"):
    parallel.make_mesh((3, 2, 2))
  with pytest.raises(ValueError, match="3 entries"):
    parallel.make_mesh((8, 1))
  assert parallel.make_mesh((-1, 2, 1)).shape["data"] == 4


def test_constrain_is_identity_without_mesh():
  x = np.ones((4, 4), np.float32)
  assert parallel.constrain(x, ("batch", None)) is x


@pytest.mark.parametrize("shape,k", [(None, 2), (None, 4), ((2, 2, 2), 2)])
def test_microbatched_step_matches_whole_batch(shape, k, reference):
  """Gradient accumulation over k row groups (weighted by loss tokens) is the whole
  batch's loss, gradients and update; on a mesh too. Row groups get unequal loss-token
  counts here (random loss mask), so an unweighted mean of group losses would differ."""
  ref_loss, ref_grads, ref_metrics, ref_params = reference
  mesh = None if shape is None else parallel.make_mesh(shape)
  with parallel.use_mesh(mesh):
    model = create_model(CFG, 0, mesh)
  tr = Trainer(model, make_optimizer(1e-3, 10, 0), mesh=mesh, microbatches=k)
  loss, grads = tr.grads(_batch())
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.device_get(grads)), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  metrics = jax.device_get(tr.train_step(_batch()))
  for key in ("loss", "token_accuracy", "grad_norm", "loss_tokens"):
    np.testing.assert_allclose(metrics[key], ref_metrics[key], atol=1e-5, rtol=1e-5)
  for a, b in zip(
      jax.tree.leaves(jax.device_get(nnx.state(tr.model))), jax.tree.leaves(ref_params)
  ):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_microbatches_errors_name_the_problem():
  with pytest.raises(ValueError, match="microbatches must be >= 1"):
    Trainer(create_model(CFG, 0), make_optimizer(1e-3, 10, 0), microbatches=0)
  tr = Trainer(create_model(CFG, 0), make_optimizer(1e-3, 10, 0), microbatches=3)
  with pytest.raises(ValueError, match="not divisible by microbatches=3"):
    tr.train_step(_batch())  # 8 rows

  def no_tokens(model, batch):
    logits, _ = model(batch["inputs"], batch["positions"])
    return logits.mean(), {}

  tr = Trainer(create_model(CFG, 0), make_optimizer(1e-3, 10, 0), loss_fn=no_tokens, microbatches=2)
  with pytest.raises(ValueError, match="loss_tokens"):
    tr.train_step(_batch())


def test_split_host_cpu(monkeypatch):
  jax.devices()  # backends up under the session's flags (this test may run first)
  # The test session already set 8 host devices: that flag is left alone.
  assert parallel.split_host_cpu(2) == 8
  assert "device_count=8" in os.environ["XLA_FLAGS"]
  with pytest.raises(ValueError, match="host device count must be >= 1"):
    parallel.split_host_cpu(0)  # a bad count is an error even then
  # Without the flag, once JAX runs, the split cannot take effect: a clear error.
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  with pytest.raises(RuntimeError, match="before JAX initialises"):
    parallel.split_host_cpu(2)
  assert "device_count" not in os.environ["XLA_FLAGS"]
  with pytest.raises(ValueError, match="host device count must be >= 1"):
    parallel.split_host_cpu(0)
