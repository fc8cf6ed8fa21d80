"""The optional final completion of the search kernels (`beam.search(final_completion=True)`):
beams not finished after the last round decode to EOS and are scored once more, against the
host-loop reference; off by default, so the embedded task's searches are unchanged."""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import numpy as np
import pytest

from conftest import REPO_ROOT, tiny_config
from ttc_jax.config import settings as config_settings
from ttc_jax.models.reward import create_value_model
from ttc_jax.models.transformer import create_model
from ttc_jax.sampling import SamplingParams
from ttc_jax.search import beam, dvts, lookahead, reference

CFG = tiny_config(vocab_size=8, num_layers=1, max_len=40)
EOS, DELIM, B, N, M = 2, 4, 8, 4, 2
KW = dict(max_rounds=2, max_step_tokens=6, max_new_tokens=24, eos_id=EOS, delimiter_id=DELIM)
T1 = SamplingParams.make(1.0)
FIELDS = ("tokens", "lengths", "num_steps", "finished", "generated_tokens", "policy_tokens")


@pytest.fixture(scope="module")
def models():
  return create_model(CFG, 1), create_value_model(CFG, 4)


def _prompts(b=B, seed=0):
  rng = np.random.default_rng(seed)
  lens = rng.integers(2, 5, b).astype(np.int32)
  toks = np.zeros((b, 4), np.int32)
  for q, n in enumerate(lens):
    toks[q, :n] = [1] + list(rng.choice([3, 5, 6, 7], n - 1))
  return toks, lens


@pytest.mark.parametrize("strategy", ["beam", "dvts", "lookahead"])
def test_final_completion_matches_the_host_loop(models, strategy):
  groups, keep = (N // M, 1) if strategy == "dvts" else (1, N // M)
  k = 1 if strategy == "lookahead" else 0
  run = dict(
      beam=beam.beam_search,
      dvts=dvts.dvts,
      lookahead=functools.partial(lookahead.lookahead_search, k=k),
  )[strategy]
  args = (*models, *_prompts(), jax.random.key(1))
  res = run(*args, n=N, m=M, params=T1, final_completion=True, **KW)
  ref = reference.reference_search(
      *args, n=N, groups=groups, keep=keep, params=T1, lookahead=k, final_completion=True, **KW
  )
  for f in FIELDS + ("prm_tokens", "rounds"):
    np.testing.assert_array_equal(np.asarray(getattr(res, f)), ref[f], err_msg=f)
  np.testing.assert_allclose(res.scores, ref["scores"], atol=1e-5)
  np.testing.assert_allclose(res.step_scores, ref["step_scores"], atol=1e-5)
  assert res.step_scores.shape[-1] == KW["max_rounds"] + 1
  # without it: beams still running after max_rounds stay unfinished; with it, only those
  # that filled their buffer without sampling EOS are
  off = run(*args, n=N, m=M, params=T1, **KW)
  assert off.step_scores.shape[-1] == KW["max_rounds"]
  fin_off, fin_on = np.asarray(off.finished), np.asarray(res.finished)
  assert (~fin_off).sum() > (~fin_on).sum() and (fin_on | ~fin_off).all()
  full = np.asarray(res.lengths) == KW["max_new_tokens"]
  assert (fin_on | full).all()
  assert (np.asarray(res.generated_tokens) > np.asarray(off.generated_tokens)).all()
  # the completion is one more step for each beam it extended; rounds count step rounds
  grew = np.asarray(res.num_steps) > np.asarray(off.num_steps)
  assert grew.any() and int(res.rounds) == int(off.rounds) == KW["max_rounds"]


def _get_config(name: str):
  """A config file's get_config() without validation (the text configs need local paths)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "configs", name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


@pytest.mark.parametrize(
    "name,on",
    [
        ("arith_quick.py", False),
        ("arith_smoke.py", False),
        ("gsm8k_hf.py", True),
        ("math_hf.py", True),
    ],
)
def test_final_completion_is_on_for_the_text_configs_only(name, on):
  """configs/gsm8k_hf.py (and math_hf.py, built on it) turn it on; the arith configs leave
  SearchSettings' default off."""
  assert config_settings.search_settings(_get_config(name).search).final_completion is on
