"""RL updates in microbatches (`RLSettings.microbatches`): the same loss and gradients as the
whole batch, also when some sequences generated nothing (they do not count in the loss)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import tiny_config
from ttc_jax.models.transformer import create_model
from ttc_jax.revision import rl
from ttc_jax.train.trainer import Trainer


def _batch(n=8, t=12, seed=0):
  r = np.random.default_rng(seed)
  mask = (r.random((n, t)) < 0.6).astype(np.float32)
  mask[1] = 0.0  # generated nothing: not in the loss
  mask[6] = 0.0
  f = lambda *s: r.normal(size=s).astype(np.float32)  # noqa: E731
  return dict(
      inputs=r.integers(0, 32, (n, t)).astype(np.int32),
      targets=r.integers(0, 32, (n, t)).astype(np.int32),
      positions=np.broadcast_to(np.arange(t, dtype=np.int32), (n, t)).copy(),
      mask=mask,
      old_logp=-np.abs(f(n, t)),
      ref_logp=-np.abs(f(n, t)),
      advantages=f(n),
      rewards=f(n),
      correct=f(n),
      gen_tokens=mask.sum(-1).astype(np.int32),
  )


def test_microbatched_rl_update_equals_the_whole_batch():
  loss_fn = functools.partial(rl.rl_loss, loss="clipped_pg", clip_eps=0.2, kl_coef=0.05)
  batch = _batch()
  out = []
  for k in (1, 2, 4):
    model = create_model(tiny_config(), seed=0)
    trainer = Trainer(model, optax.sgd(1e-2), loss_fn=loss_fn, microbatches=k)
    out.append(trainer.grads(batch))
  (loss1, g1), rest = out[0], out[1:]
  for loss_k, g_k in rest:
    np.testing.assert_allclose(loss_k, loss1, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g_k)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_loss_tokens_count_sequences_with_a_generated_token():
  model = create_model(tiny_config(), seed=0)
  _, metrics = rl.rl_loss(
      model, jax.tree.map(jnp.asarray, _batch()), loss="pg", clip_eps=0.2, kl_coef=0.0
  )
  assert float(metrics["loss_tokens"]) == 6.0
