"""Which programs a config's pipeline runs, at their largest shapes (`arith_programs`,
`text_programs`), as abstract `Program`s on a mesh.

Shapes are read from the config the way the stages read them: training rows [batch_size,
seq_len] per training section, sampler calls of `max_batch` rows (prompts x samples), search
calls of `max_beams` rows (questions x N, rounded up to the batch axes as `search.sweep` does),
at the largest budget per method. Prompts are as long as the model's `max_len` leaves after the
generated tokens (the largest shape a call can take) unless `prompt_len` is given.
"""

from __future__ import annotations

import math
import os

import jax.numpy as jnp
from flax import nnx

from ttc_jax import io_utils
from ttc_jax.aot import kernels
from ttc_jax.aot.programs import Program, abstract_module, generate_program, lm_batch
from ttc_jax.aot.programs import score_program, train_program
from ttc_jax.config import settings as config_settings
from ttc_jax.models import external_prm, reward
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.hf_config import config_from_hf
from ttc_jax.models.transformer import Transformer
from ttc_jax.revision import rl
from ttc_jax.search.budgets import plan
from ttc_jax.tasks.arith import device as arith_device
from ttc_jax.tokenizers import CharTokenizer
from ttc_jax.train import optim
from ttc_jax.train.trainer import lm_loss


def _batch_axes(mesh) -> int:
  return int(mesh.shape["data"] * mesh.shape["fsdp"])


def _round_up(x: int, m: int) -> int:
  return int(math.ceil(x / m) * m)


def _prompt(cfg: ModelConfig, max_new: int, prompt_len: int | None) -> int:
  p = cfg.max_len - max_new if prompt_len is None else prompt_len
  if p < 1:
    raise ValueError(f"max_new_tokens={max_new} leaves no prompt within max_len={cfg.max_len}")
  return int(p)


def value_batch(rows: int, seq_len: int) -> dict:
  """The packed value-model batch of `reward.value_loss`."""
  ints = ("inputs", "positions", "segment_ids")
  return {k: ((rows, seq_len), jnp.int32 if k in ints else jnp.float32) for k in ints} | {
      "value_targets": ((rows, seq_len), jnp.float32),
      "value_mask": ((rows, seq_len), jnp.float32),
  }


def _lm(cfg: ModelConfig):
  return lambda: Transformer(cfg, rngs=nnx.Rngs(0))


def _value(cfg: ModelConfig):
  return lambda: reward.ValueModel(cfg, rngs=nnx.Rngs(0))


def search_programs(
    cfg, policy, prm, mesh, *, eos_id, delimiter_id, prompt_len=None, unshared=False
) -> list:
  """Each method of `cfg.search` at its largest budget that fits it; with `unshared` and
  `search.share_prefix` on, each also in the unshared cache layout (`<name>.unshared`), to
  compare their memory in one run."""
  s = cfg.search
  pol_cfg = nnx.merge(*policy).cfg
  out = []
  for method in s.methods:
    budgets = [b for b in s.budgets if plan(method, b) is not None]
    if not budgets:
      continue
    budget = max(budgets)
    n = plan(method, budget)["n"]
    max_new = min(int(s.max_new_tokens), pol_cfg.max_len - 8)
    p = _round_up(_prompt(pol_cfg, max_new, prompt_len), 8)
    max_new = min(max_new, pol_cfg.max_len - p)
    questions = _round_up(max(1, int(s.max_beams) // n), _batch_axes(mesh))
    shared = bool(s.get("share_prefix", True))
    for share, suffix in [(shared, "")] + ([(False, ".unshared")] if unshared and shared else []):
      out.append(
          kernels.search_program(
              method,
              budget,
              policy,
              prm,
              questions=questions,
              prompt_len=p,
              max_rounds=int(s.max_rounds),
              max_step_tokens=int(s.max_step_tokens),
              max_new_tokens=max_new,
              eos_id=eos_id,
              delimiter_id=delimiter_id,
              compact_levels=int(s.get("compact_levels", 0)),
              share_prefix=share,
              mesh=mesh,
              suffix=suffix,
          )
      )
  return out


def _sampler(name, model, sec, samples: int, mesh, eos_id, prompt_len=None) -> Program:
  cfg = nnx.merge(*model).cfg
  max_new = int(sec.max_new_tokens)
  prompts = _round_up(max(1, int(sec.max_batch) // samples), _batch_axes(mesh))
  return generate_program(
      name,
      *model,
      prompts=prompts,
      prompt_len=_prompt(cfg, max_new, prompt_len),
      num_samples=samples,
      max_new_tokens=max_new,
      eos_id=eos_id,
      mesh=mesh,
  )


def _train(name, make, section, where, batch, mesh, value: bool = False) -> Program:
  if value:
    s = config_settings.value_train_settings(section, where)
    tx, loss = s.optim.make(s.fit.steps), reward.value_loss
    return train_program(name, make, tx, loss, value_batch(s.batch_size, s.seq_len), mesh)
  t = section
  tx = optim.make_optimizer(
      t.lr, t.steps, t.warmup_steps, t.weight_decay, t.clip_norm, t.b1, t.b2, t.final_lr_fraction
  )
  micro = int(t.get("microbatches", 1))
  return train_program(name, make, tx, lm_loss, batch, mesh, microbatches=micro)


def arith_programs(cfg, mesh, prompt_len: int | None = None, unshared=False) -> list[Program]:
  """The embedded task's pipeline (ttc_jax/pipeline/arith.py): training stages, samplers,
  value scoring, search, revision chains and the RL step."""
  from ttc_jax.pipeline import compute_optimal as co_stage, revision as rev_stage

  tok = CharTokenizer()
  model_cfg = ModelConfig.from_dict(cfg.model.to_dict())
  t, r = cfg.train, cfg.revision
  policy = abstract_module(_lm(model_cfg), mesh)
  prm = abstract_module(_value(model_cfg), mesh)
  rev_cfg = rev_stage.revision_cfg(cfg)
  revision = abstract_module(_lm(rev_cfg), mesh)
  out = [
      _train("policy_train", _lm(model_cfg), t, "train", lm_batch(t.batch_size, t.seq_len), mesh),
      _train("prm_train", _value(model_cfg), cfg.prm, "prm", None, mesh, value=True),
      _train("orm_train", _value(model_cfg), cfg.orm, "orm", None, mesh, value=True),
      _sampler("eval_sampler", policy, cfg.eval, int(cfg.eval.num_samples), mesh, tok.EOS),
      _sampler("label_rollouts", policy, cfg.labels, int(cfg.labels.rollouts), mesh, tok.EOS),
      score_program(
          "prm_score",
          *prm,
          _round_up(int(cfg.verify.score_batch), _batch_axes(mesh)),
          model_cfg.max_len,
          mesh,
      ),
  ]
  out += search_programs(
      cfg,
      policy,
      prm,
      mesh,
      eos_id=tok.EOS,
      delimiter_id=tok.newline_id,
      prompt_len=prompt_len,
      unshared=unshared,
  )
  sft = r.sft
  out.append(
      _train(
          "revision_sft_train",
          _lm(rev_cfg),
          sft,
          "revision.sft",
          lm_batch(sft.batch_size, sft.seq_len),
          mesh,
      )
  )
  out.append(
      _train("revision_orm_train", _value(rev_cfg), r.orm, "revision.orm", None, mesh, value=True)
  )
  chains_rows = _round_up(int(r.max_rows), _batch_axes(mesh))
  out.append(
      kernels.chain_phase_program(
          revision,
          tok,
          rows=chains_rows,
          question_len=64,
          steps=int(r.chains.steps),
          attempt_tokens=int(r.max_new_tokens),
          context=int(r.context_attempts),
          question_position=rev_stage.question_position(cfg),
          mesh=mesh,
      )
  )
  out += rl_programs(cfg, rev_cfg, revision, tok, mesh)
  large = co_stage.large_cfg(cfg)
  out.append(
      _train("large_policy_train", _lm(large), t, "train", lm_batch(t.batch_size, t.seq_len), mesh)
  )
  return out


def rl_programs(cfg, rev_cfg: ModelConfig, revision: tuple, tok, mesh) -> list[Program]:
  """The RL step of `revision.rl.train_rl`: the rollout and the policy-gradient update."""
  s = config_settings.rl_settings(cfg.revision.rl)
  prompts = _round_up(s.prompts_per_step, _batch_axes(mesh))
  width = rev_cfg.max_len - s.max_new_tokens
  rollout = kernels.rl_rollout_program(
      revision,
      revision,
      prompts=prompts,
      prompt_len=width,
      group=s.group_size,
      max_new=s.max_new_tokens,
      eos_id=tok.EOS,
      reward_fn=arith_device.DeviceGrader.from_tokenizer(tok),
      advantage=s.advantage,
      target_width=24,
      mesh=mesh,
  )
  n, w = prompts * s.group_size, width + s.max_new_tokens - 1
  f32, i32 = jnp.float32, jnp.int32
  batch = {k: ((n, w), i32) for k in ("inputs", "targets", "positions")}
  batch |= {k: ((n, w), f32) for k in ("mask", "old_logp", "ref_logp")}
  batch |= {k: ((n,), f32) for k in ("advantages", "rewards", "correct")} | {
      "gen_tokens": ((n,), i32)
  }
  loss, tx = rl.update_rule(s)
  step = train_program("rl_train", _lm(rev_cfg), tx, loss, batch, mesh, s.microbatches)
  return [rollout, step]


def _hf_cfg(cfg, path: str) -> tuple[dict, ModelConfig]:
  d = path if os.path.isdir(path) else os.path.dirname(path)
  hf = io_utils.read_json(os.path.join(d, "config.json"))
  h = cfg.hf
  mc = config_from_hf(hf, param_dtype=h.param_dtype, dtype=h.dtype or None, max_len=int(h.max_len))
  return hf, mc


def _eos(hf: dict) -> int:
  eos = hf.get("eos_token_id", 0)
  return int(eos[0] if isinstance(eos, (list, tuple)) else (eos or 0))


def hf_prm_module(cfg, policy_cfg: ModelConfig):
  """A module builder of the PRM cfg.hf names, from its config.json alone (no weights):
  Qwen2.5-Math-PRM style `*ProcessRewardModel` heads are Linear(d, d), ReLU, Linear(d, labels);
  other classifiers one Linear(d, labels)."""
  h = cfg.hf
  if h.prm_type == "value_model":
    base = _hf_cfg(cfg, h.prm_base)[1] if h.prm_base else policy_cfg
    return _value(base)
  hf, mc = _hf_cfg(cfg, h.prm)
  if h.prm_type == "token_prob":
    return lambda: external_prm.TokenProbPRM(
        Transformer(mc, rngs=nnx.Rngs(0)), step_token_id=0, good_token_id=1, bad_token_id=2
    )
  d, labels = mc.embed_dim, int(hf.get("num_labels", 2))
  arch = " ".join(hf.get("architectures", []))
  dims = [(d, d), (d, labels)] if "ProcessRewardModel" in arch else [(d, labels)]
  return lambda: external_prm.ClassifierPRM(mc, dims, step_token_id=0, rngs=nnx.Rngs(0))


def text_programs(cfg, mesh, prompt_len: int | None = None, unshared=False) -> list[Program]:
  """The text pipeline (ttc_jax/pipeline/text.py) for a policy and PRM given by config.json
  (a checkpoint directory or configs/hf_shapes/<name>): the eval sampler, PRM scoring and the
  search kernels. Token ids do not change shapes: EOS is config.json's, the step delimiter a
  placeholder id."""
  for field in ("policy", "prm"):
    if not cfg.hf.get(field):
      raise ValueError(f"config.hf.{field} is empty: name a directory holding config.json")
  hf, policy_cfg = _hf_cfg(cfg, cfg.hf.policy)
  eos = _eos(hf)
  policy = abstract_module(_lm(policy_cfg), mesh)
  prm = abstract_module(hf_prm_module(cfg, policy_cfg), mesh)
  prm_cfg = nnx.merge(*prm).cfg
  out = [
      _sampler("eval_sampler", policy, cfg.eval, int(cfg.eval.num_samples), mesh, eos, prompt_len),
      score_program(
          "prm_score",
          *prm,
          _round_up(int(cfg.verify.score_batch), _batch_axes(mesh)),
          prm_cfg.max_len,
          mesh,
      ),
  ]
  out += search_programs(
      cfg, policy, prm, mesh, eos_id=eos, delimiter_id=1, prompt_len=prompt_len, unshared=unshared
  )
  return out
