"""Batched sampling of completions for many prompts in a few compiled shapes.

`sample_texts` is what policy evaluation (`pipeline.policy.evaluate_policy`), step
labelling, revision data, search baselines and the compute-optimal policy sample with;
`padded_rows` is the row-count ladder they share.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import jax
from tqdm.auto import tqdm

from ttc_jax import parallel, sampling


def _round_up(n: int, m: int) -> int:
  return int(math.ceil(n / m) * m)


def padded_rows(real: int, chunk: int) -> int:
  """Rows to run for `real` prompts in calls of at most `chunk`: a small set of shapes.

  Up to chunk/8 prompts: the next power of two; above: the next multiple of
  chunk/8. So a sweep compiles at most log2(chunk/8) + 8 shapes, and pads at
  most chunk/8 rows (or 2x for a handful of prompts).
  """
  step = max(1, chunk // 8)
  if real <= step:
    return min(chunk, 1 << (real - 1).bit_length())
  return min(chunk, -(-real // step) * step)


def sample_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    rng: jax.Array,
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_batch: int = 1024,
    mesh=None,
    stop_ids: Sequence[int] = (),
    progress: bool = False,
    desc: str = "sample",
) -> tuple[list[list[str]], dict]:
  """Samples `num_samples` completions per prompt; returns texts [P][N] and stats.

  Prompts are encoded with BOS, right-padded to one length and processed in
  chunks of `max_batch // num_samples` prompts; a shorter last chunk (or a
  sweep with fewer prompts) is padded with copies (`padded_rows`), so calls
  with varying prompt counts reuse a few compiled shapes. Stats:
  generated tokens, wall seconds, tokens/s.
  """
  if not prompts:
    raise ValueError("sample_texts got no prompts")
  chunk = max(1, max_batch // num_samples)
  if mesh is not None:
    chunk = _round_up(chunk, mesh.shape["data"] * mesh.shape["fsdp"])
  enc_len = max(len(tokenizer.encode(p)) for p in prompts) + 1
  plen = min(_round_up(enc_len, 8), model.cfg.max_len - max_new_tokens)
  if plen < enc_len:
    raise ValueError(
        f"prompts of {enc_len} tokens + max_new_tokens={max_new_tokens} do not "
        f"fit the model's max_len={model.cfg.max_len}"
    )
  params = sampling.SamplingParams.make(temperature, top_k, top_p, vocab_limit=tokenizer.vocab_size)
  out: list[list[str]] = []
  tokens_generated = 0
  t0 = time.perf_counter()
  starts = range(0, len(prompts), chunk)
  for i, s in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
    part = list(prompts[s : s + chunk])
    real = len(part)
    rows = padded_rows(real, chunk)
    if mesh is not None:
      rows = _round_up(rows, mesh.shape["data"] * mesh.shape["fsdp"])
    part += [part[-1]] * (rows - real)
    toks, lens = tokenizer.encode_batch(part, plen, add_bos=True)
    if mesh is not None:
      sh = parallel.data_sharding(mesh, 2)
      toks, lens = jax.device_put(toks, sh), jax.device_put(lens, parallel.data_sharding(mesh, 1))
    with parallel.use_mesh(mesh):
      res = sampling.generate(
          model,
          toks,
          lens,
          jax.random.fold_in(rng, i),
          num_samples=num_samples,
          max_new_tokens=max_new_tokens,
          eos_id=getattr(tokenizer, "eos_ids", tokenizer.EOS),  # every id ending an answer
          stop_ids=stop_ids,
          params=params,
      )
    gen, glen = jax.device_get((res.tokens, res.lengths))
    tokens_generated += int(glen[:real].sum())
    for b in range(real):
      out.append(tokenizer.decode_batch(gen[b], glen[b]))
  dt = time.perf_counter() - t0
  return out, {
      "generated_tokens": tokens_generated,
      "seconds": dt,
      "tokens_per_s": tokens_generated / max(dt, 1e-9),
  }
