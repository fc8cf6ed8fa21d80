"""A jitted, sharded optimisation step for any NNX model and loss.

`Trainer` owns a model and an `nnx.Optimizer`, splits both into one state
pytree, and compiles `train_step(state, batch) -> (state, metrics)` with the
state donated and sharded by its logical axes on the mesh (batches over
`data`/`fsdp`). Any loss with signature `loss_fn(model, batch) -> (loss,
aux_metrics)` plugs in: the LM loss here, value-head losses for PRM/ORM.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ttc_jax import parallel

Batch = Mapping[str, jax.Array]
LossFn = Callable[[nnx.Module, Batch], tuple[jax.Array, dict]]


def token_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array
                        ) -> tuple[jax.Array, dict]:
  """Mean masked next-token cross-entropy. logits[B,T,V], targets/mask[B,T]."""
  mask = mask.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  denom = jnp.maximum(mask.sum(), 1.0)
  loss = (nll * mask).sum() / denom
  acc = ((jnp.argmax(logits, -1) == targets) * mask).sum() / denom
  return loss, {"token_accuracy": acc, "loss_tokens": mask.sum()}


def lm_loss(model, batch: Batch) -> tuple[jax.Array, dict]:
  """Language-model loss on a packed batch (see ttc_jax.data.packing)."""
  logits, _ = model(batch["inputs"], batch["positions"], segment_ids=batch["segment_ids"])
  return token_cross_entropy(logits, batch["targets"], batch["loss_mask"])


class Trainer:
  """Holds model + optimiser state and runs jitted train/eval steps.

  Attributes:
    graphdef/state: `nnx.split((model, optimizer))`; `state` is replaced by
      each step (donated), so always read the model through `.model`.
  """

  def __init__(self, model: nnx.Module, tx: optax.GradientTransformation,
               loss_fn: LossFn = lm_loss, mesh=None, skip_nonfinite: bool = False):
    """skip_nonfinite: a step whose loss or gradient norm is NaN/Inf leaves the
    model and optimiser unchanged (metrics flag it as `nonfinite`); otherwise
    the update is applied and the training loop stops at that step."""
    self.mesh = mesh
    self.loss_fn = loss_fn
    self.skip_nonfinite = skip_nonfinite
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    self.graphdef, state = nnx.split((model, optimizer))
    shardings = None if mesh is None else parallel.state_shardings(state, mesh)
    self.state = state if mesh is None else jax.device_put(state, shardings)
    jit_kw = {} if mesh is None else dict(out_shardings=(shardings, None))
    self._train = jax.jit(self._train_step, donate_argnums=0, **jit_kw)
    self._eval = jax.jit(self._eval_step)

  # --- pure steps -----------------------------------------------------------

  def _train_step(self, state, batch):
    old = jax.tree.leaves(state)      # arrays: merge/update below mutate the Variables
    model, optimizer = nnx.merge(self.graphdef, state)
    grad_fn = nnx.value_and_grad(self.loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(model, batch)
    grad_norm = optax.tree.norm(grads)
    optimizer.update(model, grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = nnx.state((model, optimizer))
    if self.skip_nonfinite:
      leaves, treedef = jax.tree.flatten(new_state)
      new_state = jax.tree.unflatten(
          treedef, [jnp.where(finite, n, o) for n, o in zip(leaves, old)])
    metrics = dict(aux, loss=loss, grad_norm=grad_norm,
                   nonfinite=(~finite).astype(jnp.float32))
    return new_state, metrics

  def _eval_step(self, state, batch):
    model, _ = nnx.merge(self.graphdef, state)
    loss, aux = self.loss_fn(model, batch)
    return dict(aux, loss=loss)

  # --- host API -------------------------------------------------------------

  def _put(self, batch) -> dict:
    return parallel.shard_batch(batch, self.mesh)

  def train_step(self, batch) -> dict:
    """One optimisation step; returns device metrics (not synced)."""
    with parallel.use_mesh(self.mesh):
      self.state, metrics = self._train(self.state, self._put(batch))
    return metrics

  def eval_step(self, batch) -> dict:
    with parallel.use_mesh(self.mesh):
      return self._eval(self.state, self._put(batch))

  def grads(self, batch) -> tuple[jax.Array, Any]:
    """Loss and parameter gradients for `batch` (no update); used by tests."""
    def f(state, batch):
      model, _ = nnx.merge(self.graphdef, state)
      (loss, _), g = nnx.value_and_grad(self.loss_fn, has_aux=True)(model, batch)
      return loss, g
    with parallel.use_mesh(self.mesh):
      return jax.jit(f)(self.state, self._put(batch))

  @property
  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.state)[0]

  @property
  def optimizer(self) -> nnx.Optimizer:
    return nnx.merge(self.graphdef, self.state)[1]

  @property
  def step(self) -> int:
    return int(self.optimizer.step[...])
