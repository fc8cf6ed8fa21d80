"""NaN/Inf guard of the training loop: caught at the step it appears; stop or skip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from ttc_jax.models.transformer import create_model
from ttc_jax.train import loop
from ttc_jax.train.trainer import Trainer

ROWS = dict(
    inputs=np.full((2, 8), 5, np.int32), positions=np.tile(np.arange(8, dtype=np.int32), (2, 1))
)


def _loss(m, batch):
  logits, _ = m(batch["inputs"], batch["positions"])
  return jnp.mean(logits**2) * batch["scale"][0, 0], {}


def _data(poison_step):
  step = 0
  while True:
    step += 1
    scale = np.nan if step == poison_step else 1.0
    yield dict(ROWS, scale=np.full((2, 1), scale, np.float32))


def test_nonfinite_loss_stops_at_its_step():
  trainer = Trainer(create_model(tiny_config(), 0), optax.sgd(0.01), loss_fn=_loss)
  with pytest.raises(FloatingPointError, match=r"non-finite .*loss.* at step 3 "):
    loop.fit(trainer, _data(3), steps=8, log_every=5, progress=False)


def test_nonfinite_step_is_skipped_and_leaves_state_unchanged():
  def run(poison, skip):
    trainer = Trainer(
        create_model(tiny_config(), 0), optax.sgd(0.01), loss_fn=_loss, skip_nonfinite=skip
    )
    last = loop.fit(trainer, _data(poison), steps=6, log_every=3, progress=False)
    return trainer, last

  skipped, last = run(3, True)
  assert last["skipped_steps"] == 1 and np.isfinite(last["loss"])
  # the same as a run that never saw step 3's batch: five clean SGD steps
  clean, _ = run(0, True)
  trainer5 = Trainer(create_model(tiny_config(), 0), optax.sgd(0.01), loss_fn=_loss)
  loop.fit(trainer5, _data(0), steps=5, log_every=5, progress=False)
  a = jax.tree.leaves(nnx.state(skipped.model, nnx.Param))
  b = jax.tree.leaves(nnx.state(trainer5.model, nnx.Param))
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  assert skipped.step == 5 and clean.step == 6  # the optimiser step does not advance either
