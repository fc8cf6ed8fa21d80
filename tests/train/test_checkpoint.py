"""Checkpoint round trips: bit-identical, also onto another mesh; clear errors."""

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax import parallel
from ttc_jax.models.transformer import create_model
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.optim import make_optimizer
from ttc_jax.train.trainer import Trainer

CFG = tiny_config(embed_dim=64, num_heads=8, num_kv_heads=4, head_dim=8, mlp_dim=128)


def _batch():
  x = np.random.default_rng(0).integers(3, 32, (8, 12)).astype(np.int32)
  return dict(
      inputs=x,
      targets=np.roll(x, -1, 1),
      positions=np.tile(np.arange(12, dtype=np.int32), (8, 1)),
      segment_ids=np.ones((8, 12), np.int32),
      loss_mask=np.ones((8, 12), np.float32),
  )


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


@pytest.fixture(scope="module")
def trained():
  tr = Trainer(create_model(CFG, 0), make_optimizer(1e-3, 10, 1))
  tr.train_step(_batch())
  tr.train_step(_batch())
  return tr


def test_round_trip_bit_identical(tmp_path, trained):
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save(2, trained.state, {"note": "x"})
  ck.wait()
  fresh = Trainer(create_model(CFG, 99), make_optimizer(1e-3, 10, 1))
  state, meta = ck.restore(fresh.state)
  assert meta == {"note": "x", "step": 2}
  for a, b in zip(_leaves(state), _leaves(trained.state)):
    assert a.dtype == b.dtype and np.array_equal(a, b)
  fresh.state = state
  assert fresh.step == 2
  # the restored model computes exactly what the saved one does
  a = jax.device_get(fresh.eval_step(_batch())["loss"])
  b = jax.device_get(trained.eval_step(_batch())["loss"])
  assert a == b
  ck.close()


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 2, 4)])  # tensor divides the 4 KV heads
def test_restore_onto_another_mesh(tmp_path, trained, shape):
  ck = Checkpointer(str(tmp_path / "ck"), async_save=False)
  ck.save(2, trained.state)
  mesh = parallel.make_mesh(shape)
  with parallel.use_mesh(mesh):
    target = Trainer(create_model(CFG, 5, mesh), make_optimizer(1e-3, 10, 1), mesh=mesh)
  state, _ = ck.restore(target.state)
  for a, b in zip(_leaves(state), _leaves(trained.state)):
    assert np.array_equal(a, b)
  restored_q = state[0]["blocks"][0]["attn"]["q"][...]
  assert restored_q.sharding == target.state[0]["blocks"][0]["attn"]["q"][...].sharding
  target.state = state
  np.testing.assert_allclose(
      jax.device_get(target.eval_step(_batch())["loss"]),
      jax.device_get(trained.eval_step(_batch())["loss"]),
      atol=1e-5,
  )
  ck.close()


def test_missing_checkpoint_errors(tmp_path):
  ck = Checkpointer(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="no checkpoint found"):
    ck.restore({"a": np.zeros(2)})
  ck.save(1, {"a": np.zeros(2, np.float32)})
  ck.wait()
  with pytest.raises(FileNotFoundError, match="no checkpoint for step 7"):
    ck.restore({"a": np.zeros(2, np.float32)}, step=7)
  ck.close()


def test_unreadable_latest_checkpoint_falls_back(tmp_path):
  """A latest checkpoint damaged after its save (e.g. a kill mid-write) is reported and skipped."""
  import os

  model = create_model(CFG, 0)
  state = nnx.state(model)
  ck = Checkpointer(str(tmp_path / "ck"), max_to_keep=3, async_save=False)
  ck.save(1, state, {"tag": "one"}, force=True)
  state2 = jax.tree.map(lambda x: x + 1, state)
  ck.save(2, state2, {"tag": "two"}, force=True)
  # truncate every data file of step 2
  for root, _, files in os.walk(os.path.join(ck.directory, "2", "state")):
    for f in files:
      if not f.endswith(".json"):
        with open(os.path.join(root, f), "r+b") as fh:
          fh.truncate(3)
  with pytest.warns(UserWarning, match="checkpoint 2 .* cannot be read"):
    restored, meta = ck.restore(state)
  assert meta["tag"] == "one" and meta["step"] == 1
  for a, b in zip(_leaves(restored), _leaves(state)):
    np.testing.assert_array_equal(a, b)
  assert ck.all_steps() == [1, 2]  # nothing deleted
  with pytest.raises(Exception):
    ck.restore(state, step=2)  # an explicit step does not fall back
