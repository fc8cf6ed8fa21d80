"""Optimiser: AdamW with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import dataclasses

import jax
import optax


def make_schedule(lr: float, steps: int, warmup_steps: int, final_lr_fraction: float = 0.1):
  """Linear warm-up to `lr` over `warmup_steps`, cosine decay to lr * final fraction."""
  if steps <= 0:
    raise ValueError(f"train.steps must be positive, got {steps}")
  warmup_steps = max(0, min(warmup_steps, steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup_steps else lr,
      peak_value=lr,
      warmup_steps=warmup_steps,
      decay_steps=steps,
      end_value=lr * final_lr_fraction,
  )


def make_optimizer(
    lr: float,
    steps: int,
    warmup_steps: int = 0,
    weight_decay: float = 0.1,
    clip_norm: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.95,
    final_lr_fraction: float = 0.1,
) -> optax.GradientTransformation:
  """AdamW (decoupled weight decay on matrices only) after gradient clipping."""
  schedule = make_schedule(lr, steps, warmup_steps, final_lr_fraction)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm and clip_norm > 0 else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask))
  return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class OptimSettings:
  """The optimiser fields of a training section (`make_optimizer`'s arguments but `steps`).

  lr: peak learning rate; warmup_steps: linear warm-up steps; weight_decay: AdamW decay
  (matrices only); clip_norm: global gradient-norm clip (<= 0: none); b1, b2: Adam betas;
  final_lr_fraction: the cosine decay ends at lr * final_lr_fraction.
  """

  lr: float
  warmup_steps: int
  weight_decay: float
  clip_norm: float
  b1: float
  b2: float
  final_lr_fraction: float

  def make(self, steps: int) -> optax.GradientTransformation:
    """The optimiser for a run of `steps` optimiser steps."""
    return make_optimizer(
        self.lr,
        steps,
        self.warmup_steps,
        self.weight_decay,
        self.clip_norm,
        self.b1,
        self.b2,
        self.final_lr_fraction,
    )
