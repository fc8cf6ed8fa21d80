"""Test set-up: 8 fake CPU devices for mesh tests, cheap compiles, a persistent compile cache.

XLA:CPU compilation is most of the suite's time (about two thirds of the in-process test time
on the 2-core machines, measured with jax.monitoring's backend_compile_duration), and the tests
run tiny models for a few steps, so they compile with LLVM's optimisation level 0
(--xla_backend_optimization_level=0): the same HLO, the same fusions, less machine-code
optimisation; a compile-heavy test runs 1.6-3.5x faster with it (docs/benchmarks.md). The
benchmarks that the smoke tests start (tests/bench_utils.py) and the tests' own subprocesses
compile the same way; figures a benchmark reports are only meaningful without it.
"""

import os

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))  # shared helpers and fixtures/
REPO_ROOT = os.path.dirname(TESTS_DIR)
CHEAP_COMPILES = "--xla_backend_optimization_level=0"  # also for the tests' subprocesses
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {CHEAP_COMPILES}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TPU ahead-of-time compiles (tests/aot, splash attention) from several test workers at once:
# libtpu's one-process lock would fail all but one, and its host probing is not needed.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

TEST_CACHE = os.environ.get(
    "TTC_JAX_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ttc_jax", "xla_tests")
)
os.makedirs(TEST_CACHE, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", TEST_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
# the main job run in-process (smoke_run, run.main) keeps its programs in the same cache
os.environ.setdefault("TTC_JAX_CACHE_DIR", TEST_CACHE)

from ttc_jax.models.config import ModelConfig  # noqa: E402


def tiny_config(**kw) -> ModelConfig:
  base = dict(
      vocab_size=32,
      embed_dim=32,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=8,
      mlp_dim=64,
      max_len=48,
  )
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


# Every XLA:CPU executable a process keeps maps memory regions of its own (about 60 for a
# tiny program at opt level 0, hundreds for a search kernel), and a test worker keeps every
# program it compiled in JAX's in-memory caches. A worker reached Linux's default limit of
# 65,530 mappings per process (vm.max_map_count) after a few hundred tests, and the next
# compile or persistent-cache write then aborted or segfaulted (the whole suite in CI and
# here; a crashed xdist worker also hangs the run). Past MAX_MAPPINGS the caches are emptied
# between tests, freeing those executables (later tests recompile, mostly from the
# persistent cache).
MAX_MAPPINGS = 30000


def _mappings() -> int:
  try:
    with open("/proc/self/maps", "rb") as f:
      return f.read().count(b"\n")
  except OSError:  # not Linux: no such limit to watch
    return 0


@pytest.fixture(autouse=True)
def _bounded_mappings():
  yield
  if _mappings() > MAX_MAPPINGS:
    import gc

    jax.clear_caches()
    gc.collect()
