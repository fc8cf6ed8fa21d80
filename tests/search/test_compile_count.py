"""Long sampling sweeps compile a fixed set of shapes and do not grow host memory.

Temperature, top-p, top-k, the rng and prompt lengths are traced; prompt counts are padded
to a few row counts (`evaluation.padded_rows`) and prompt lengths to multiples of 8. So
after one call per padded shape, a sweep over many knob values and prompt counts compiles
nothing: counted with jax.monitoring's compile events and the jit cache of
`sampling._generate`, with host RSS checked over the sweep.
"""

import collections
import gc
import os

import jax
import jax.monitoring
import numpy as np
import pytest

from conftest import tiny_config
from ttc_jax import evaluation, sampling
from ttc_jax.models.transformer import create_model
from ttc_jax.tokenizers import CharTokenizer

CFG = tiny_config(max_len=48)
TOK = CharTokenizer()
NUM_SAMPLES, MAX_BATCH, MAX_NEW = 4, 256, 16  # chunk 64 prompts: rows 1, 2, 4, 8, 16, ...
# Prompts of 8..12 characters: with BOS every call pads them to 16 positions.
SHORT = [f"{a}+{b}*{c}-{d}\n" for a, b, c, d in np.random.default_rng(0).integers(0, 99, (40, 4))]
RSS_TOLERANCE_MB = 24.0


class CompileCounter:
  """Counts jax's compile events (tracing, lowering, backend compile) while active."""

  def __init__(self):
    self.counts = collections.Counter()

  def __call__(self, event, duration, **kwargs):
    if event.startswith("/jax/core/compile/"):
      self.counts[event.rsplit("/", 1)[-1]] += 1

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self)

  def total(self):
    return sum(self.counts.values())


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def model():
  return create_model(CFG, 0)


def _knobs(i):
  temperature = [0.0, 0.25, 0.7, 1.0, 1.6][i % 5] + 0.001 * (i % 7)
  top_p = [1.0, 0.95, 0.5, 0.1][i % 4]
  top_k = [0, 1, 3, 10, 32][i % 5 if i % 3 else 0]
  return dict(temperature=temperature if i % 5 else 0.0, top_p=top_p, top_k=top_k)


def _sample(model, n_prompts, i):
  prompts = [SHORT[(i + j) % len(SHORT)] for j in range(n_prompts)]
  texts, _ = evaluation.sample_texts(
      model,
      TOK,
      prompts,
      jax.random.key(i),
      num_samples=NUM_SAMPLES,
      max_new_tokens=MAX_NEW,
      max_batch=MAX_BATCH,
      **_knobs(i),
  )
  assert len(texts) == n_prompts and all(len(t) == NUM_SAMPLES for t in texts)


def _generate(model, i):
  lens = 1 + (np.arange(4) + i) % 8  # traced: any lengths, one shape
  prompts = np.where(np.arange(8)[None] < lens[:, None], 3 + (np.arange(8) + i) % 20, 0)
  out = sampling.generate(
      model,
      prompts.astype(np.int32),
      lens,
      jax.random.key(i),
      num_samples=2,
      max_new_tokens=8,
      eos_id=TOK.EOS,
      **_knobs(i),
  )
  jax.block_until_ready(out.tokens)


def test_padded_row_counts_are_few():
  chunk = MAX_BATCH // NUM_SAMPLES
  rows = {evaluation.padded_rows(n, chunk) for n in range(1, chunk + 1)}
  assert rows == {1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64}
  assert all(evaluation.padded_rows(n, chunk) - n <= max(chunk // 8, n) for n in range(1, 65))


def test_long_sweep_compiles_nothing_after_warm_up_and_keeps_memory_flat(model):
  # Warm-up: one call per padded shape (prompt counts 1, 2, 3, 5, 9 -> rows 1, 2, 4, 8, 16)
  # and one direct generate call.
  for i, n in enumerate((1, 2, 3, 5, 9)):
    _sample(model, n, i)
  _generate(model, 0)
  cache_size = sampling._generate._cache_size()
  assert cache_size >= 6

  with CompileCounter() as cc:
    for i in range(20):  # let the allocators settle
      _sample(model, 1 + i % 16, i)
      _generate(model, i)
    gc.collect()
    rss0 = _rss_mb()
    # The long sweep: 16 prompt counts x 5 temperatures x 4 top-p x 5 top-k, interleaved
    # (240 sampling calls).
    for i in range(20, 140):
      _sample(model, 1 + (i * 7) % 16, i)
      _generate(model, i)
    gc.collect()
    grown = _rss_mb() - rss0

  assert cc.total() == 0, f"compilations after warm-up: {dict(cc.counts)}"
  assert sampling._generate._cache_size() == cache_size
  assert grown < RSS_TOLERANCE_MB, f"host RSS grew {grown:.1f} MiB over 240 sampling calls"


def test_a_new_shape_is_counted(model):
  """The counter sees a compile (the test above is not vacuous)."""
  _generate(model, 0)
  with CompileCounter() as cc:
    out = sampling.generate(
        model,
        np.ones((3, 8), np.int32),
        np.full((3,), 2),
        jax.random.key(0),
        num_samples=1,
        max_new_tokens=5,
        eos_id=-1,
    )
    jax.block_until_ready(out.tokens)
  assert cc.counts["jaxpr_trace_duration"] >= 1 and cc.total() >= 2
