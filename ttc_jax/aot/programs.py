"""Abstract programs for ahead-of-time compilation: the library's jitted steps on abstract state.

A `Program` pairs a jitted function with abstract arguments (`jax.ShapeDtypeStruct`s that carry
their `NamedSharding` on the target mesh), so `fn.lower(*args).compile()` compiles it for the
mesh's devices without weights or data. Models are built abstractly (`nnx.eval_shape` under the
mesh), sharded by their logical axes (`parallel.state_shardings`), batches over the batch axes
(`parallel.data_sharding`), as the pipeline places them. Each builder calls the same library
entry point the pipeline calls (`train.trainer.train_step`, `sampling.generate_split`,
`sampling.prefill`, the search kernels of `search.sweep`, `revision.chains`, the RL rollout),
traced under an outer `jax.jit`: what compiles here is what the pipeline runs.

`loops`: for a program with loops whose bodies the compiler counts once (decode, search rounds),
each body compiled alone as its own program, with the number of times it runs at most;
`parts`: pieces that run once inside the program (a sampler's prefill), compiled alone so
their own figures show (the program's totals already hold them).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from ttc_jax import parallel, sampling
from ttc_jax.models import prefix_cache, transformer
from ttc_jax.sampling import SamplingParams
from ttc_jax.train.trainer import train_step


@dataclasses.dataclass
class Program:
  """A jitted `fn` and abstract `args`; `shapes`: what the args stand for (for the report)."""

  name: str
  fn: Callable
  args: tuple
  shapes: dict = dataclasses.field(default_factory=dict)
  loops: list = dataclasses.field(default_factory=list)  # [(body Program, iterations)]
  parts: list = dataclasses.field(default_factory=list)  # Programs run once inside this one
  mesh: Any = None  # lowered with this mesh (and the logical rules) active

  def lower(self):
    with parallel.use_mesh(self.mesh):
      return self.fn.lower(*self.args)


def _sds(x, sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def abstract_module(make: Callable[[], Any], mesh) -> tuple[Any, Any]:
  """(graphdef, abstract state) of the module(s) `make()` builds, sharded on `mesh`."""
  with parallel.use_mesh(mesh):
    graphdef, state = nnx.split(nnx.eval_shape(make))
    shardings = parallel.state_shardings(state, mesh)
  return graphdef, jax.tree.map(_sds, state, shardings)


def replicated(tree, mesh):
  """Abstract copies of `tree`'s arrays, replicated on `mesh` (knobs, keys, scalars)."""
  return jax.tree.map(lambda x: _sds(x, NamedSharding(mesh, P())), jax.eval_shape(lambda: tree))


def batch_array(shape: Sequence[int], dtype, mesh) -> jax.ShapeDtypeStruct:
  """An abstract `[batch, ...]` array placed like the pipeline's batches."""
  sharding = NamedSharding(
      mesh, parallel.logical_to_spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh)
  )
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def _key(mesh):
  return replicated(jax.random.key(0), mesh)


def _params(mesh):
  return replicated(SamplingParams.make(0.7), mesh)


def train_program(
    name: str, make: Callable, tx, loss_fn, batch: dict, mesh, microbatches: int = 1
) -> Program:
  """The Trainer's step for the model `make()` builds; batch: {name: (shape, dtype)}."""
  graphdef, state = abstract_module(lambda: _with_optimizer(make(), tx), mesh)
  step = functools.partial(train_step, graphdef, loss_fn=loss_fn, microbatches=microbatches)
  args = (state, {k: batch_array(s, d, mesh) for k, (s, d) in batch.items()})
  rows, seq_len = batch["inputs"][0]
  shapes = dict(rows=rows, seq_len=seq_len, microbatches=microbatches)
  return Program(name, jax.jit(step, donate_argnums=0), args, shapes, mesh=mesh)


def _with_optimizer(model, tx):
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def lm_batch(rows: int, seq_len: int) -> dict:
  """The packed LM batch (`data.packing`) of the policy's training stages."""
  i32 = jnp.int32
  return {
      k: ((rows, seq_len), jnp.float32 if k == "loss_mask" else i32)
      for k in ("inputs", "targets", "positions", "segment_ids", "loss_mask")
  }


def abstract_cache(cfg, rows: int, cache_len: int, mesh, prefix=None, dtype=None):
  """An abstract KV cache of `rows` sequences on `mesh`: plain with `cache_len` slots, or with
  `prefix=(questions, prompt_len)` shared (`models.prefix_cache`): the prompt once per
  question and `cache_len - prompt_len` suffix slots per row."""

  def make():
    if prefix is None:
      return transformer.init_cache(cfg, rows, cache_len, dtype)
    questions, p = prefix
    plain = transformer.init_cache(cfg, questions, p, dtype)
    length = jnp.full((questions,), p, jnp.int32)
    return prefix_cache.share(plain, length, rows // questions, cache_len - p)

  cache = jax.eval_shape(make)
  with parallel.use_mesh(mesh):
    return jax.tree.map(_sds, cache, transformer.cache_shardings(cache, mesh))


def decode_step_program(
    name: str, graphdef, state, rows: int, cache_len: int, mesh, prefix=None
) -> Program:
  """One decode token for `rows` sequences over a `cache_len` cache (shared with `prefix`, see
  `abstract_cache`): a decode loop's body."""

  def step(state, cache, tokens, positions, active):
    model = nnx.merge(graphdef, state)
    return model(tokens, positions, cache, attention_mask=active)

  cache = abstract_cache(_cfg(graphdef, state), rows, cache_len, mesh, prefix)
  args = (
      state,
      cache,
      batch_array((rows, 1), jnp.int32, mesh),
      batch_array((rows, 1), jnp.int32, mesh),
      batch_array((rows, 1), jnp.bool_, mesh),
  )
  return Program(name, jax.jit(step), args, dict(rows=rows, cache_len=cache_len), mesh=mesh)


def _cfg(graphdef, state):
  return nnx.merge(graphdef, state).cfg


def prefill_program(name: str, graphdef, state, rows: int, prompt_len: int, buffer_len: int, mesh):
  """`sampling.prefill` of `rows` prompts of `prompt_len` into a `buffer_len` cache."""

  def run(state, prompts, lengths):
    return sampling.prefill(nnx.merge(graphdef, state), prompts, lengths, buffer_len)

  args = (
      state,
      batch_array((rows, prompt_len), jnp.int32, mesh),
      batch_array((rows,), jnp.int32, mesh),
  )
  shapes = dict(rows=rows, prompt_len=prompt_len, buffer_len=buffer_len)
  return Program(name, jax.jit(run), args, shapes, mesh=mesh)


def generate_program(
    name: str,
    graphdef,
    state,
    *,
    prompts: int,
    prompt_len: int,
    num_samples: int,
    max_new_tokens: int,
    eos_id: int,
    stop_ids: tuple = (),
    mesh,
) -> Program:
  """`sampling.generate_split` (prefill, then the decode loop), with its decode step as body."""

  def run(state, toks, lengths, rng, params):
    return sampling.generate_split(
        graphdef,
        state,
        toks,
        lengths,
        rng,
        params,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        stop_ids=stop_ids,
    )

  args = (
      state,
      batch_array((prompts, prompt_len), jnp.int32, mesh),
      batch_array((prompts,), jnp.int32, mesh),
      _key(mesh),
      _params(mesh),
  )
  rows, buf = prompts * num_samples, prompt_len + max_new_tokens
  body = decode_step_program(f"{name}.decode_step", graphdef, state, rows, buf, mesh)
  prefill = prefill_program(f"{name}.prefill", graphdef, state, prompts, prompt_len, buf, mesh)
  shapes = dict(
      prompts=prompts, prompt_len=prompt_len, num_samples=num_samples, max_new_tokens=max_new_tokens
  )
  return Program(
      name,
      jax.jit(run),
      args,
      shapes,
      loops=[(body, max_new_tokens)],
      parts=[prefill],
      mesh=mesh,
  )


def score_program(name: str, graphdef, state, rows: int, seq_len: int, mesh) -> Program:
  """A value model's (PRM/ORM) `score(tokens[B,T], lengths[B])` over `rows` solutions."""

  def run(state, tokens, lengths):
    return nnx.merge(graphdef, state).score(tokens, lengths)

  args = (
      state,
      batch_array((rows, seq_len), jnp.int32, mesh),
      batch_array((rows,), jnp.int32, mesh),
  )
  return Program(name, jax.jit(run), args, dict(rows=rows, seq_len=seq_len), mesh=mesh)


def prm_extend_program(
    name: str, graphdef, state, rows: int, tokens: int, cache_len: int, mesh, prefix=None
):
  """A PRM's `extend` of `rows` cached sequences by up to `tokens` tokens (one search step)."""

  def run(state, cache, toks, lengths):
    return nnx.merge(graphdef, state).extend(cache, toks, lengths)

  cache = abstract_cache(_cfg(graphdef, state), rows, cache_len, mesh, prefix)
  args = (
      state,
      cache,
      batch_array((rows, tokens), jnp.int32, mesh),
      batch_array((rows,), jnp.int32, mesh),
  )
  shapes = dict(rows=rows, tokens=tokens, cache_len=cache_len)
  return Program(name, jax.jit(run), args, shapes, mesh=mesh)
