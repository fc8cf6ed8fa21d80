"""Training a PRM or ORM: a value head on the policy backbone, BCE at step ends.

The paper fine-tunes the base model as the PRM; here the backbone starts from
the policy checkpoint and the head from scratch. Held-out questions (a
deterministic hash split) drive early stopping; the best state is saved with
orbax, and the finished model is written (model only) for later stages.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from flax import nnx

from ttc_jax import parallel
from ttc_jax.data import packing
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.reward import ValueModel, create_value_model, value_loss
from ttc_jax.prm import data as prm_data
from ttc_jax.train import loop
from ttc_jax.train.checkpoint import Checkpointer
from ttc_jax.train.loop import FitSettings
from ttc_jax.train.optim import OptimSettings
from ttc_jax.train.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class ValueTrainSettings:
  """A value-model (PRM/ORM) training section (config `prm`, `orm`, `revision.orm`).

  fit: the loop (steps, eval_every, log_every, patience, skip_nonfinite); optim: AdamW and
  its schedule; batch_size x seq_len: the packed rows [B, T] of a step (longer examples are
  dropped); heldout_fraction: the share of questions (a hash split) held out for the eval
  loss and early stopping.
  """

  fit: FitSettings
  optim: OptimSettings
  batch_size: int
  seq_len: int
  heldout_fraction: float


def train_value_model(
    model_cfg: ModelConfig,
    policy_state: Any,
    tokenizer,
    records: Sequence[dict],
    out_dir: str,
    settings: ValueTrainSettings,
    *,
    kind: str,
    label: str = "soft",
    seed: int = 0,
    mesh=None,
    meta: dict | None = None,
    progress: bool = True,
    outcome: Callable[[dict, str], bool | None] | None = None,
) -> dict:
  """Trains a `kind` ("prm" | "orm") value model on labelled solutions.

  settings: `ValueTrainSettings` (built from a config section by
  `ttc_jax.config.value_train_settings`).
  outcome(record, text) -> right/wrong/None: when given, the records' stored rollouts
  are extra training rows (`prm.data.examples_from_records`).
  Writes out_dir/{checkpoints,best,model,metrics.jsonl}; returns a summary.
  """
  s = settings
  train_recs, held_recs = prm_data.split_records(records, s.heldout_fraction)
  # Held-out loss is always on the sampled solutions alone (comparable across settings).
  train_ex = prm_data.examples_from_records(
      tokenizer, train_recs, kind, label, max_tokens=s.seq_len, outcome=outcome
  )
  held_ex = prm_data.examples_from_records(tokenizer, held_recs, kind, label, max_tokens=s.seq_len)
  data = packing.iterate_batches(train_ex, s.batch_size, s.seq_len, seed=seed)
  held = packing.eval_batches(held_ex, s.batch_size, s.seq_len)
  with parallel.use_mesh(mesh):
    model = create_value_model(model_cfg, seed, mesh, backbone_state=policy_state)
  tx = s.optim.make(s.fit.steps)
  trainer = Trainer(model, tx, loss_fn=value_loss, mesh=mesh, skip_nonfinite=s.fit.skip_nonfinite)
  meta = dict(meta or {}, kind=kind, label=label)
  tokens = s.batch_size * s.seq_len
  last = loop.fit_best(
      trainer,
      data,
      lambda: held,
      s.fit,
      out_dir,
      flops_per_step=model_cfg.train_flops_per_token(s.seq_len) * tokens,
      tokens_per_step=tokens,
      meta=meta,
      desc=kind,
      progress=progress,
  )
  return dict(
      final_metrics=last,
      best_step=int(last["best_step"]),
      best_eval_loss=float(last["best_eval_loss"]),
      stopped_early=bool(last.get("stopped_early", False)),
      train_solutions=len(train_recs),
      heldout_solutions=len(held_recs),
      train_rows=len(train_ex),
      train_labels=int(sum(float(e["value_mask"].sum()) for e in train_ex)),
      heldout_labels=int(sum(float(e["value_mask"].sum()) for e in held_ex)),
  )


def load_value_model(
    model_dir: str, model_cfg: ModelConfig, tokenizer, *, kind: str, seed: int = 0, mesh=None
) -> ValueModel:
  """Restores a trained value model, checking its kind and tokenizer."""
  ck = Checkpointer(model_dir, async_save=False)
  with parallel.use_mesh(mesh):
    model = create_value_model(model_cfg, seed, mesh)
  state, meta = ck.restore(nnx.state(model))
  ck.close()
  if meta.get("kind") != kind:
    raise ValueError(f"value model in {model_dir} is a {meta.get('kind')!r}, expected {kind!r}")
  if meta.get("tokenizer") != tokenizer.fingerprint():
    raise ValueError(
        f"value model in {model_dir} was trained with tokenizer "
        f"{meta.get('tokenizer')}, this run uses {tokenizer.fingerprint()}"
    )
  nnx.update(model, state)
  return model
