"""KV-cache sampling: prefill, a `lax.while_loop` decode, and top-k/top-p filters.

State invariant (DecodeState): `tokens[b, :length[b]]` is sequence b (prompt
then generated tokens); the cache holds keys/values for the first
`length[b] - 1` tokens; the last token is *pending* and is fed to the model
on the next decode step. Prompts, step-by-step search and revision chains all
continue from such a state, and reordering beams is a gather of every leaf on
its leading axis.

The decode loop runs while (a) fewer than `max_new_tokens` steps were taken
in this call, and (b) some sequence is active. A sequence stops being active
when it samples EOS (`done`, final; `eos_id` is one id or a tuple of them, e.g.
every EOS of a checkpoint's generation_config.json), fills its buffer (`done`,
truncated), or samples a token in `stop_ids` such as the step delimiter (`paused`: a
later call resumes it). Inactive sequences do not advance; their cache index stays.

Sampling knobs (temperature, top-k, top-p) are traced arrays: sweeping them
never recompiles. Temperature <= 0 means greedy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import chex
import flax
import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from ttc_jax.models import prefix_cache
from ttc_jax.models.ops import write_rows
from ttc_jax.models.transformer import init_cache


@flax.struct.dataclass
class SamplingParams:
  """Traced sampling knobs (scalars). top_k=0 and top_p=1 switch filters off.

  vocab_limit > 0 never samples ids >= vocab_limit: a model whose embedding
  table is padded past the tokenizer's vocabulary (e.g. 32 rows for 28
  characters) must not emit the padding ids. 0 = no limit.
  """

  temperature: jax.Array
  top_k: jax.Array
  top_p: jax.Array
  vocab_limit: jax.Array = dataclasses.field(default_factory=lambda: jnp.int32(0))

  @classmethod
  def make(cls, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, vocab_limit: int = 0):
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1 or vocab_limit < 0:
      raise ValueError(
          f"bad sampling knobs: temperature={temperature}, "
          f"top_k={top_k}, top_p={top_p}, vocab_limit={vocab_limit}"
      )
    return cls(
        jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p), jnp.int32(vocab_limit)
    )


@flax.struct.dataclass
class DecodeState:
  """Fixed-shape decode state over `B` sequences with buffers of `L` tokens.

  tokens: int32[B, L] prompt + generated tokens, PAD after `length`.
  length: int32[B] tokens in the buffer (the last one is pending).
  logprobs: float32[B, L] model log-prob (temperature 1, unfiltered) of each
    generated token; 0 on prompt tokens.
  done: bool[B] finished for good (EOS sampled or buffer full).
  cache: KV cache covering `tokens[:, :length-1]`.
  """

  tokens: jax.Array
  length: jax.Array
  logprobs: jax.Array
  done: jax.Array
  cache: dict


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """Masks logits[..., V] outside the top-k set and the top-p nucleus."""

  def apply(lg):
    v = lg.shape[-1]
    srt = jnp.sort(lg, axis=-1)[..., ::-1]
    k = jnp.clip(jnp.where(top_k > 0, top_k, v), 1, v)
    kth = jnp.take_along_axis(srt, jnp.broadcast_to(k - 1, lg.shape[:-1])[..., None], -1)
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each rank
    keep = (before < top_p).at[..., 0].set(True)
    pth = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(lg < jnp.maximum(kth, pth), -jnp.inf, lg)

  return jax.lax.cond((top_k > 0) | (top_p < 1), apply, lambda lg: lg, logits)


def sample_token(
    logits: jax.Array,
    rng: jax.Array,
    params: SamplingParams,
    rows: jax.Array | None = None,
    total_rows: int | None = None,
) -> jax.Array:
  """Samples int32[B] from logits[B, V] (greedy when temperature <= 0).

  Gumbel-max sampling, the same draws as `jax.random.categorical(rng, ...)`.
  With `rows` (int32[B]), logits row i is row rows[i] of a batch of
  `total_rows` and gets that row's noise: a subset of a batch samples exactly
  what the whole batch would (search kernels decode only their active rows).
  """
  ids = jnp.arange(logits.shape[-1])
  logits = jnp.where((params.vocab_limit <= 0) | (ids < params.vocab_limit), logits, -jnp.inf)

  def sample(lg):
    scaled = filter_logits(lg / jnp.maximum(params.temperature, 1e-6), params.top_k, params.top_p)
    if rows is None:
      noise = jax.random.gumbel(rng, scaled.shape, scaled.dtype)
    else:
      noise = jax.random.gumbel(rng, (total_rows, scaled.shape[-1]), scaled.dtype)[rows]
    return jnp.argmax(scaled + noise, axis=-1).astype(jnp.int32)

  def greedy(lg):
    return jnp.argmax(lg, axis=-1).astype(jnp.int32)

  # A cond, not a where: greedy decoding skips the Gumbel noise and filters.
  return jax.lax.cond(params.temperature > 0, sample, greedy, logits)


def prefill(
    model,
    prompts: jax.Array,
    prompt_lengths: jax.Array,
    buffer_len: int,
    cache_dtype=None,
    cache_len: int | None = None,
) -> DecodeState:
  """Feeds prompts[B, P] (right-padded, lengths[B] >= 1) into a fresh cache.

  All prompt tokens but the last enter the cache; the last one is pending. The cache has
  `cache_len` slots (default `buffer_len`; at least P), stored in `cache_dtype` (default the
  model's compute dtype).
  """
  b, p = prompts.shape
  chex.assert_shape(prompt_lengths, (b,))
  if buffer_len < p:
    raise ValueError(f"buffer_len={buffer_len} shorter than prompts ({p})")
  cache_len = buffer_len if cache_len is None else cache_len
  if cache_len < p:
    raise ValueError(f"cache_len={cache_len} shorter than prompts ({p})")
  cache = init_cache(model.cfg, b, cache_len, cache_dtype)
  positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
  mask = positions < (prompt_lengths - 1)[:, None]
  _, cache = model(prompts, positions, cache, attention_mask=mask)
  tokens = (
      jnp.zeros((b, buffer_len), jnp.int32)
      .at[:, :p]
      .set(jnp.where(positions < prompt_lengths[:, None], prompts, 0))
  )
  return DecodeState(
      tokens=tokens,
      length=prompt_lengths.astype(jnp.int32),
      logprobs=jnp.zeros((b, buffer_len), jnp.float32),
      done=jnp.zeros((b,), bool),
      cache=cache,
  )


def repeat_state(state: DecodeState, n: int) -> DecodeState:
  """Repeats each sequence n times along the batch: [B, ...] -> [B*n, ...] (a shared prompt
  cache's prefix stays as it is, `prefix_cache.map_rows`)."""
  return prefix_cache.map_rows(lambda x: jnp.repeat(x, n, axis=0), state)


def gather_state(state, idx: jax.Array):
  """Reorders/selects sequences (beams) with int32 idx[B'] over the batch axis of every
  leaf (a `DecodeState`, a KV cache or any pytree of [B, ...] arrays; a shared prompt
  cache's prefix, per question, is left alone: `prefix_cache.map_rows`)."""
  return prefix_cache.map_rows(lambda x: jnp.take(x, idx, axis=0), state)


def token_ids(ids: int | Sequence[int]) -> tuple[int, ...]:
  """One token id or a sequence of them as a tuple of ints (a hashable, static argument):
  a step delimiter or EOS may be several ids (e.g. every token containing "\\n\\n")."""
  if isinstance(ids, (int, np.integer)) or getattr(ids, "ndim", None) == 0:
    return (int(ids),)
  return tuple(int(i) for i in ids)


def is_eos(stopped: jax.Array, eos_id: int | Sequence[int]) -> jax.Array:
  """bool[...]: `stopped` (decode's stop tokens, -1 for none) is one of the EOS ids."""
  eos = jnp.asarray(token_ids(eos_id), jnp.int32)
  return (stopped >= 0) & jnp.any(stopped[..., None] == eos, axis=-1)


def _at(x: jax.Array, idx: jax.Array) -> jax.Array:
  """x[b, idx[b]] for x[B, L], idx int32[B] (a gather batched over rows, so each
  device of a data-sharded mesh reads its own rows without collectives)."""
  return jnp.take_along_axis(x, idx[:, None], axis=1)[:, 0]


def decode(
    model,
    state: DecodeState,
    rng: jax.Array,
    params: SamplingParams,
    *,
    max_new_tokens: int,
    eos_id: int | Sequence[int],
    stop_ids: Sequence[int] = (),
    rows: jax.Array | None = None,
    total_rows: int | None = None,
    max_length: jax.Array | None = None,
) -> tuple[DecodeState, jax.Array]:
  """Runs up to `max_new_tokens` decode steps; see the module docstring.

  `max_length` (int32[B], optional): a sequence whose length reaches it is done
  (truncated) as if its buffer ended there. A shared-prefix cache (`prefix_cache`) ends a
  sequence the same way where its suffix is full (`prefix_cache.room`).

  `rows`/`total_rows`: the state holds rows `rows` of a larger batch; each
  samples with that row's noise (`sample_token`). Returns the new state and
  `stopped[B]`: the token that ended this call's segment for each sequence
  (EOS, a stop id), or -1 if it ran out of steps.
  """
  b, buf = state.tokens.shape
  stop_arr = jnp.asarray(tuple(stop_ids) or (-1,), jnp.int32)
  room = prefix_cache.room(state.cache)
  if room is not None:
    max_length = room if max_length is None else jnp.minimum(max_length, room)
  eos_arr = jnp.asarray(token_ids(eos_id), jnp.int32)

  def cond(carry):
    i, st, paused, _ = carry
    return (i < max_new_tokens) & jnp.any(~st.done & ~paused)

  def body(carry):
    i, st, paused, stopped = carry
    active = ~st.done & ~paused
    last = st.length - 1
    tok = _at(st.tokens, last)
    logits, cache = model(tok[:, None], last[:, None], st.cache, attention_mask=active[:, None])
    logits = logits[:, 0]
    nxt = sample_token(logits, jax.random.fold_in(rng, i), params, rows, total_rows)
    lp = _at(jax.nn.log_softmax(logits), nxt)
    write = jnp.minimum(st.length, buf - 1)
    tokens = write_rows(st.tokens, write, jnp.where(active, nxt, _at(st.tokens, write))[:, None], 1)
    logprobs = write_rows(
        st.logprobs, write, jnp.where(active, lp, _at(st.logprobs, write))[:, None], 1
    )
    length = st.length + active.astype(jnp.int32)
    is_eos = active & jnp.any(nxt[:, None] == eos_arr[None], axis=-1)
    is_stop = active & jnp.any(nxt[:, None] == stop_arr[None], axis=-1)
    full = active & (length >= (buf if max_length is None else jnp.minimum(max_length, buf)))
    done = st.done | is_eos | full
    stopped = jnp.where(is_eos | is_stop, nxt, stopped)
    st = DecodeState(tokens=tokens, length=length, logprobs=logprobs, done=done, cache=cache)
    return i + 1, st, paused | is_stop, stopped

  init = (jnp.int32(0), state, jnp.zeros((b,), bool), jnp.full((b,), -1, jnp.int32))
  _, state, _, stopped = jax.lax.while_loop(cond, body, init)
  return state, stopped


@flax.struct.dataclass
class SampleOutput:
  """Generated continuations for B prompts x N samples.

  tokens: int32[B, N, max_new_tokens] generated tokens, PAD after the end.
  lengths: int32[B, N] number of generated tokens (including EOS/stop token).
  logprobs: float32[B, N, max_new_tokens] per-token model log-probs.
  finished: bool[B, N] ended with EOS (False: stopped at a stop id or cut off).
  """

  tokens: jax.Array
  lengths: jax.Array
  logprobs: jax.Array
  finished: jax.Array


@functools.partial(
    jax.jit, static_argnames=("graphdef", "num_samples", "max_new_tokens", "eos_id", "stop_ids")
)
def _generate(
    graphdef,
    model_state,
    prompts,
    prompt_lengths,
    rng,
    params,
    *,
    num_samples,
    max_new_tokens,
    eos_id,
    stop_ids,
):
  model = nnx.merge(graphdef, model_state)
  b, p = prompts.shape
  state = prefill(model, prompts, prompt_lengths, p + max_new_tokens)
  state = repeat_state(state, num_samples)
  state, stopped = decode(
      model, state, rng, params, max_new_tokens=max_new_tokens, eos_id=eos_id, stop_ids=stop_ids
  )
  start = jnp.repeat(prompt_lengths, num_samples)  # [B*N]
  idx = start[:, None] + jnp.arange(max_new_tokens)[None]  # [B*N, M]
  gen_len = state.length - start
  valid = jnp.arange(max_new_tokens)[None] < gen_len[:, None]
  take = lambda x: jnp.where(valid, jnp.take_along_axis(x, jnp.minimum(idx, x.shape[1] - 1), 1), 0)
  shape = (b, num_samples, max_new_tokens)
  return SampleOutput(
      tokens=take(state.tokens).reshape(shape),
      lengths=gen_len.reshape(b, num_samples),
      logprobs=take(state.logprobs).reshape(shape),
      finished=is_eos(stopped, eos_id).reshape(b, num_samples),
  )


# The jitted core of `generate`, for use inside other jitted code that holds a
# model as (graphdef, state): generate_split(graphdef, state, prompts, lengths,
# rng, params, num_samples=, max_new_tokens=, eos_id=, stop_ids=).
generate_split = _generate


def check_fits(cfg, prompt_len: int, max_new_tokens: int, what: str = "model") -> None:
  """Raises ValueError when prompt_len + max_new_tokens exceeds `cfg.max_len`."""
  total = prompt_len + max_new_tokens
  if total > cfg.max_len:
    raise ValueError(
        f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} = "
        f"{total} exceeds the {what}'s max_len {cfg.max_len}"
    )


def generate(
    model,
    prompts,
    prompt_lengths,
    rng,
    *,
    num_samples: int = 1,
    max_new_tokens: int,
    eos_id: int | Sequence[int],
    stop_ids: Sequence[int] = (),
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    params: SamplingParams | None = None,
) -> SampleOutput:
  """Samples `num_samples` continuations of each right-padded prompt.

  prompts: int32[B, P]; prompt_lengths: int32[B] (each >= 1). Compiles once
  per (model structure, B, P, num_samples, max_new_tokens, stop ids).
  """
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  if prompt_lengths.ndim != 1 or prompt_lengths.shape[0] != prompts.shape[0]:
    raise ValueError(
        f"prompt_lengths shape {prompt_lengths.shape} does not match " f"prompts {prompts.shape}"
    )
  check_fits(model.cfg, prompts.shape[1], max_new_tokens)
  if params is None:
    params = SamplingParams.make(temperature, top_k, top_p)
  graphdef, state = nnx.split(model)
  return _generate(
      graphdef,
      state,
      jnp.asarray(prompts, jnp.int32),
      prompt_lengths,
      rng,
      params,
      num_samples=num_samples,
      max_new_tokens=max_new_tokens,
      eos_id=token_ids(eos_id),
      stop_ids=tuple(int(s) for s in stop_ids),
  )
