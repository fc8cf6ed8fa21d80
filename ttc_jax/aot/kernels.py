"""Abstract programs of the search kernels, the revision-chain phase and the RL rollout.

Built like `programs` (abstract state, pipeline placements, the library's own entry points under
an outer jit). A search kernel is a `while` over rounds around a `while` over tokens, each body
counted once by the compiler, so its loops are the policy's one-token decode at N beams per
question (max_rounds x max_step_tokens x (1 + lookahead k) times) and the PRM's extension by one
step (max_rounds x (1 + k) times).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ttc_jax.aot.programs import (
    Program,
    _key,
    _params,
    batch_array,
    decode_step_program,
    prm_extend_program,
)
from ttc_jax.revision import chains, rl_rollout
from ttc_jax.search import sweep
from ttc_jax.search.budgets import plan


def search_program(
    method: str,
    budget: int,
    policy: tuple,
    prm: tuple,
    *,
    questions: int,
    prompt_len: int,
    max_rounds: int,
    max_step_tokens: int,
    max_new_tokens: int,
    eos_id: int,
    delimiter_id: int,
    compact_levels: int,
    share_prefix: bool,
    mesh,
    suffix: str = "",
) -> Program | None:
  """`method` at generation budget `budget` over `questions` prompts per call (None when the
  budget does not fit the method); policy / prm: (graphdef, abstract state); share_prefix:
  the kernels' prompt caches held once per question (`models.prefix_cache`), also in the
  loop bodies; `suffix` ends the program's name (".unshared" for the other layout)."""
  spec = plan(method, budget)
  if spec is None:
    return None
  (g_pol, s_pol), (g_prm, s_prm) = policy, prm
  kw = dict(
      max_rounds=max_rounds,
      max_step_tokens=max_step_tokens,
      max_new_tokens=max_new_tokens,
      eos_id=eos_id,
      delimiter_id=delimiter_id,
      compact_levels=compact_levels,
      share_prefix=share_prefix,
  )

  def run(s_pol, s_prm, toks, lens, rng, params):
    pol, prm_model = nnx.merge(g_pol, s_pol), nnx.merge(g_prm, s_prm)
    return sweep._run_kernel(method, pol, prm_model, toks, lens, rng, spec, dict(kw, params=params))

  args = (
      s_pol,
      s_prm,
      batch_array((questions, prompt_len), jnp.int32, mesh),
      batch_array((questions,), jnp.int32, mesh),
      _key(mesh),
      _params(mesh),
  )
  n, k = spec["n"], spec.get("k", 0)
  rows, buf = questions * n, prompt_len + max_new_tokens
  name = f"search.{method}.{budget}{suffix}"
  prefix = (questions, prompt_len) if share_prefix else None
  decode = decode_step_program(f"{name}.policy_decode_step", g_pol, s_pol, rows, buf, mesh, prefix)
  extend = prm_extend_program(
      f"{name}.prm_step", g_prm, s_prm, rows, max_step_tokens, buf, mesh, prefix
  )
  shapes = dict(questions=questions, beams=n, rows=rows, prompt_len=prompt_len) | kw
  loops = [(decode, max_rounds * max_step_tokens * (1 + k)), (extend, max_rounds * (1 + k))]
  return Program(name, jax.jit(run), args, shapes, loops=loops, mesh=mesh)


def chain_phase_program(
    model: tuple,
    tokenizer,
    *,
    rows: int,
    question_len: int,
    steps: int,
    attempt_tokens: int,
    context: int,
    question_position: str,
    mesh,
) -> Program:
  """One phase of `revision.chains.run_chains`: `steps` sequential revisions of `rows` chains
  (prefill of question + previous attempts, then decode), with its decode step as loop body."""
  graphdef, state = model
  ids = chains.TokenIds.from_tokenizer(tokenizer)

  def run(state, q, ql, hist, hlen, rng, params):
    return chains.phase_split(
        graphdef,
        state,
        q,
        ql,
        hist,
        hlen,
        rng,
        params,
        start=0,
        num_steps=steps,
        context=context,
        ids=ids,
        question_position=question_position,
    )

  args = (
      state,
      batch_array((rows, question_len), jnp.int32, mesh),
      batch_array((rows,), jnp.int32, mesh),
      batch_array((rows, steps, attempt_tokens), jnp.int32, mesh),
      batch_array((rows, steps), jnp.int32, mesh),
      _key(mesh),
      _params(mesh),
  )
  prompt = question_len + min(context, steps - 1) * (attempt_tokens + 2)
  decode = decode_step_program(
      "revision_chain.decode_step", graphdef, state, rows, prompt + attempt_tokens, mesh
  )
  shapes = dict(rows=rows, steps=steps, attempt_tokens=attempt_tokens, context=context)
  return Program(
      "revision_chain",
      jax.jit(run),
      args,
      shapes,
      loops=[(decode, steps * attempt_tokens)],
      mesh=mesh,
  )


def rl_rollout_program(
    model: tuple,
    ref: tuple,
    *,
    prompts: int,
    prompt_len: int,
    group: int,
    max_new: int,
    eos_id: int,
    reward_fn,
    advantage: str,
    target_width: int,
    mesh,
) -> Program:
  """The RL step's rollout (`revision.rl_rollout`): `group` attempts per prompt, rewards,
  advantages and the reference model's log-probs, with its decode step as loop body."""
  (graphdef, state), (ref_graphdef, ref_state) = model, ref

  def run(state, ref_state, toks, lens, targets, tlen, rng, params):
    return rl_rollout.rollout_split(
        graphdef,
        state,
        ref_graphdef,
        ref_state,
        toks,
        lens,
        targets,
        tlen,
        rng,
        params,
        group=group,
        max_new=max_new,
        eos_id=eos_id,
        reward_fn=reward_fn,
        advantage=advantage,
    )

  args = (
      state,
      ref_state,
      batch_array((prompts, prompt_len), jnp.int32, mesh),
      batch_array((prompts,), jnp.int32, mesh),
      batch_array((prompts, target_width), jnp.int32, mesh),
      batch_array((prompts,), jnp.int32, mesh),
      _key(mesh),
      _params(mesh),
  )
  rows = prompts * group
  decode = decode_step_program(
      "rl_rollout.decode_step", graphdef, state, rows, prompt_len + max_new, mesh
  )
  shapes = dict(prompts=prompts, prompt_len=prompt_len, group=group, max_new_tokens=max_new)
  return Program("rl_rollout", jax.jit(run), args, shapes, loops=[(decode, max_new)], mesh=mesh)
