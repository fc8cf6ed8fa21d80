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


def token_cross_entropy(
    logits: jax.Array, targets: jax.Array, mask: jax.Array
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


def accumulated_grads(
    loss_fn: LossFn, model: nnx.Module, batch: Batch, microbatches: int = 1
) -> tuple[tuple[jax.Array, dict], Any]:
  """((loss, aux), grads) of `loss_fn` over `batch`, in `microbatches` row groups.

  With one group this is `nnx.value_and_grad`. With k > 1 the batch's rows
  [B, ...] are dealt into k groups (rows j, j+k, ...: on a data-sharded mesh
  every group spans every device), each group's gradient is taken in a
  `lax.scan`, and groups are weighted by their `aux["loss_tokens"]` (the
  masked mean's denominator, which the LM and value losses report): the loss,
  gradients and aux means equal the whole batch's up to float summation order;
  `loss_tokens` is summed.
  """
  if microbatches == 1:
    return nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
  rows = {k: v.shape[0] for k, v in batch.items()}
  if any(r % microbatches for r in rows.values()):
    raise ValueError(f"batch rows {rows} are not divisible by microbatches={microbatches}")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_of(p, mb):
    return loss_fn(nnx.merge(graphdef, p, rest), mb)

  groups = jax.tree.map(
      lambda x: x.reshape(-1, microbatches, *x.shape[1:]).swapaxes(0, 1), dict(batch)
  )
  first = jax.eval_shape(loss_of, params, jax.tree.map(lambda x: x[0], groups))[1]
  if "loss_tokens" not in first:
    raise ValueError(
        "microbatches > 1 needs a loss whose aux reports `loss_tokens` (the "
        f"masked mean's denominator); this loss reports {sorted(first)}"
    )

  def body(acc, mb):
    (loss, aux), g = jax.value_and_grad(loss_of, has_aux=True)(params, mb)
    n = aux["loss_tokens"].astype(jnp.float32)
    add = {
        "grads": jax.tree.map(lambda x: x * n, g),
        "loss": loss * n,
        "aux": {k: (v if k == "loss_tokens" else v * n) for k, v in aux.items()},
    }
    return jax.tree.map(jnp.add, acc, add), None

  zeros = {
      "grads": jax.tree.map(jnp.zeros_like, params),
      "loss": jnp.float32(0),
      "aux": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first),
  }
  acc, _ = jax.lax.scan(body, zeros, groups)
  total = jnp.maximum(acc["aux"]["loss_tokens"].astype(jnp.float32), 1.0)
  aux = {k: (v if k == "loss_tokens" else v / total) for k, v in acc["aux"].items()}
  grads = jax.tree.map(lambda x: x / total, acc["grads"])
  return (acc["loss"] / total, aux), grads


def train_step(
    graphdef,
    state,
    batch: Batch,
    *,
    loss_fn: LossFn = lm_loss,
    microbatches: int = 1,
    skip_nonfinite: bool = False,
) -> tuple[Any, dict]:
  """One optimisation step on `state` = `nnx.split((model, optimizer))[1]` -> (state, metrics).

  The pure step `Trainer` jits (state donated); `ttc_jax.aot` lowers the same function with
  abstract states for a device topology. See `Trainer.__init__` for the arguments.
  """
  old = jax.tree.leaves(state)  # arrays: merge/update below mutate the Variables
  model, optimizer = nnx.merge(graphdef, state)
  (loss, aux), grads = accumulated_grads(loss_fn, model, batch, microbatches)
  grad_norm = optax.tree.norm(grads)
  optimizer.update(model, grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = nnx.state((model, optimizer))
  if skip_nonfinite:
    leaves, treedef = jax.tree.flatten(new_state)
    new_state = jax.tree.unflatten(treedef, [jnp.where(finite, n, o) for n, o in zip(leaves, old)])
  metrics = dict(aux, loss=loss, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.float32))
  return new_state, metrics


class Trainer:
  """Holds model + optimiser state and runs jitted train/eval steps.

  Attributes:
    graphdef/state: `nnx.split((model, optimizer))`; `state` is replaced by
      each step (donated), so always read the model through `.model`.
  """

  def __init__(
      self,
      model: nnx.Module,
      tx: optax.GradientTransformation,
      loss_fn: LossFn = lm_loss,
      mesh=None,
      skip_nonfinite: bool = False,
      microbatches: int = 1,
  ):
    """skip_nonfinite: a step whose loss or gradient norm is NaN/Inf leaves the
    model and optimiser unchanged (metrics flag it as `nonfinite`); otherwise
    the update is applied and the training loop stops at that step.

    microbatches: splits each batch into this many row groups whose gradients
    are accumulated (a `lax.scan`) before one update: the same update as the
    whole batch at once (see `accumulated_grads`), with activations a
    `microbatches`-th the size, which keeps a CPU step's working set in cache
    (measured: a faster step on the quick model, docs/benchmarks.md).
    """
    if int(microbatches) < 1:
      raise ValueError(f"microbatches must be >= 1, got {microbatches}")
    self.mesh = mesh
    self.loss_fn = loss_fn
    self.skip_nonfinite = skip_nonfinite
    self.microbatches = int(microbatches)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    self.graphdef, state = nnx.split((model, optimizer))
    shardings = None if mesh is None else parallel.state_shardings(state, mesh)
    self.state = state if mesh is None else jax.device_put(state, shardings)
    jit_kw = {} if mesh is None else dict(out_shardings=(shardings, None))
    self._train = jax.jit(self._train_step, donate_argnums=0, **jit_kw)
    self._eval = jax.jit(self._eval_step)

  # --- pure steps -----------------------------------------------------------

  def _train_step(self, state, batch):
    return train_step(
        self.graphdef,
        state,
        batch,
        loss_fn=self.loss_fn,
        microbatches=self.microbatches,
        skip_nonfinite=self.skip_nonfinite,
    )

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
      (loss, _), g = accumulated_grads(self.loss_fn, model, batch, self.microbatches)
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
