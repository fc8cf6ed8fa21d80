"""The RL learner's settings (`RLSettings`, config `revision.rl`) and the RL context modes."""

from __future__ import annotations

import dataclasses

# Which questions' SFT-chain attempts become RL contexts (config revision.rl.contexts).
RL_CONTEXTS = ("all", "mixed", "mixed_after_wrong")


@dataclasses.dataclass(frozen=True)
class RLSettings:
  """The RL learner's knobs (config `revision.rl`, less the pipeline's context fields
  `contexts`, `heldout_fraction` and `eval_contexts`).

  A step: prompts_per_step contexts (B) x group_size attempts (G), each at most
  max_new_tokens tokens, sampled at temperature / top_k (0: off) / top_p (1: off).
  advantage and loss: names registered in `algo` (ADVANTAGES, LOSSES); clip_eps: the
  ratio clip; kl_coef: the weight of the KL term to the reference. Optimiser: AdamW
  without weight decay, betas (0.9, 0.95), lr after warmup_steps of linear warm-up, cosine
  decay to lr over `steps`, global-norm clip clip_norm. updates_per_batch: optimiser steps
  on each rollout batch (PPO-style epochs; steps counts updates). log_every, eval_every,
  checkpoint_every: in steps (eval_every 0: no eval). skip_nonfinite: skip a step with a
  non-finite loss or gradient norm instead of raising. microbatches: the update's rows in this
  many groups whose gradients are accumulated (`train.trainer.accumulated_grads`): the same
  update with a fraction of the activation memory (the losses are per-sequence means, and the
  groups are weighted by their sequences with a generated token, so it is exact).
  """

  steps: int
  prompts_per_step: int
  group_size: int
  temperature: float
  max_new_tokens: int
  lr: float
  warmup_steps: int
  clip_norm: float
  clip_eps: float
  kl_coef: float
  advantage: str
  loss: str
  log_every: int
  eval_every: int
  checkpoint_every: int
  updates_per_batch: int = 1
  top_k: int = 0
  top_p: float = 1.0
  skip_nonfinite: bool = False
  microbatches: int = 1
