"""Test set-up: 8 fake CPU devices for mesh tests and a persistent compile cache."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = os.environ.get("TTC_JAX_TEST_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "ttc_jax", "xla_tests"))
os.makedirs(_CACHE, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

from ttc_jax.models.config import ModelConfig  # noqa: E402


def tiny_config(**kw) -> ModelConfig:
  base = dict(vocab_size=32, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
              head_dim=8, mlp_dim=64, max_len=48)
  base.update(kw)
  return ModelConfig(**base)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
  return tiny_config()


SMOKE_CONFIG = "configs/arith_smoke.py"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """The main job on the smoke config, run once per test session (worker): every test that
  uses it is in the `smoke_run` xdist group (pytest.ini: --dist=loadgroup), so the pipeline
  runs once for the report-contract tests and the notebook alike."""
  from ttc_jax import run
  workdir = str(tmp_path_factory.mktemp("smoke"))
  assert run.main(["--config", SMOKE_CONFIG, "--workdir", workdir, "--no_progress"]) == 0
  return workdir
