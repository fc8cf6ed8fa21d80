"""Orbax checkpoints of NNX state: async save, restore onto any mesh.

A checkpoint holds `state` (the pure-dict form of an nnx State: nested dicts
of arrays) and `meta` (JSON: step, config hash, tokenizer fingerprint, ...).
Restoring takes a *target* state (e.g. a freshly built Trainer's state) whose
arrays carry the shardings wanted now, so a checkpoint saved on one mesh
restores onto another (or onto a single device).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx


def _pure(state: Any) -> Any:
  """nnx State -> nested dict of arrays with string keys (orbax friendly)."""
  pure = state.to_pure_dict() if isinstance(state, nnx.State) else state

  def fix(d):
    if isinstance(d, dict):
      return {str(k): fix(v) for k, v in d.items()}
    return d

  return fix(pure)


def _unstring(pure: Any, like: Any) -> Any:
  """Restores the key types of `like` (nnx uses int keys for lists)."""
  if isinstance(like, dict):
    by_str = {str(k): k for k in like}
    return {by_str[k]: _unstring(v, like[by_str[k]]) for k, v in pure.items()}
  return pure


class Checkpointer:
  """Keeps the last `max_to_keep` checkpoints of one training run under `directory`."""

  def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(
      self,
      step: int,
      state: Any,
      meta: dict | None = None,
      force: bool = False,
      replace: bool = False,
  ) -> bool:
    """Starts an (async) save of `state` at `step`; returns whether it saved.

    replace: a checkpoint this manager already holds at `step` is deleted first
    (orbax refuses an existing step), e.g. a best-so-far state saved again by a
    run that was killed after saving it and resumed from an earlier step.
    """
    if replace and int(step) in self.all_steps():
      self.manager.delete(int(step))
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_pure(state)),
        meta=ocp.args.JsonSave(dict(meta or {}, step=int(step))),
    )
    return self.manager.save(int(step), args=args, force=force)

  def wait(self):
    self.manager.wait_until_finished()

  def restore_meta(self, step: int | None = None) -> dict:
    step = self._step(step)
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores onto `target`'s shapes, dtypes and shardings.

    `target` is an nnx State (returned updated) or a pure pytree of arrays /
    ShapeDtypeStructs. Returns (state, meta). Without an explicit `step`, a
    latest checkpoint that cannot be read (truncated or corrupt files, e.g.
    after a kill during a save) is reported and the next older one is used;
    nothing is deleted. An explicit `step` is restored or fails.
    """
    if step is not None:
      return self._restore(target, self._step(step))
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      self._step(None)  # raises FileNotFoundError
    errors = []
    for st in steps:
      try:
        out = self._restore(target, st)
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        errors.append(f"step {st}: {type(e).__name__}: {str(e)[:200]}")
        warnings.warn(
            f"checkpoint {st} in {self.directory} cannot be read ({type(e).__name__}); "
            "trying the previous one"
        )
        continue
      if errors:
        print(
            f"[checkpoint] restored step {st} of {self.directory}; unreadable newer "
            f"checkpoint(s): {'; '.join(errors)}"
        )
      return out
    raise ValueError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))

  def _restore(self, target: Any, step: int) -> tuple[Any, dict]:
    pure_target = _pure(target)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        pure_target,
    )
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    restored = out["state"]
    if isinstance(target, nnx.State):
      like = target.to_pure_dict()
      new = jax.tree.map(lambda x: x, target)  # fresh State; target untouched
      nnx.replace_by_pure_dict(new, _unstring(restored, like))
      restored = new
    return restored, dict(out["meta"])

  def _step(self, step):
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    if step not in self.all_steps():
      raise FileNotFoundError(
          f"no checkpoint for step {step} in {self.directory} " f"(have {self.all_steps()})"
      )
    return step

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
