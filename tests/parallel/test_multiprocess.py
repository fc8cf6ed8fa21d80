"""Two local processes on the CPU backend act as one multi-host job.

Each process runs tests/mp_worker.py with 2 local CPU devices and the
coordinator variables scripts/launch_gpu.sh exports (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), so `parallel.maybe_initialize_distributed`
calls `jax.distributed.initialize` (gloo collectives on CPU). Over a global
(data=1, fsdp=2, tensor=2) mesh of the 4 devices -- the fsdp axis spans the
two processes, so every parameter all-gather and gradient reduction crosses
them -- each process feeds only its half of one fixed batch, and two Trainer
steps run. Both losses (the second depends on the all-reduced gradients of
the first) must equal those of the same steps on one device in this process.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import mp_worker
from conftest import CHEAP_COMPILES, TESTS_DIR, TEST_CACHE

HERE = TESTS_DIR
ROOT = os.path.dirname(HERE)
NUM_PROCESSES = 2
LOCAL_DEVICES = 2
MESH = "1,2,2"
TIMEOUT_S = 120


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _tail(text: str, n: int = 40) -> str:
  return "\n".join(text.splitlines()[-n:])


def _run_processes(out: str) -> list[tuple[int | None, str]]:
  port = _free_port()
  procs = []
  for i in range(NUM_PROCESSES):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={LOCAL_DEVICES} " f"{CHEAP_COMPILES}",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(NUM_PROCESSES),
        JAX_PROCESS_ID=str(i),
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("TTC_JAX_DISTRIBUTED", None)
    cmd = [sys.executable, os.path.join(HERE, "mp_worker.py"), "--out", out, "--mesh", MESH]
    cmd += ["--cache_dir", TEST_CACHE]
    procs.append(
        subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    )
  results = []
  for p in procs:
    try:
      text, _ = p.communicate(timeout=TIMEOUT_S)
      results.append((p.returncode, text))
    except subprocess.TimeoutExpired:
      for q in procs:  # one stuck process blocks the other in a collective
        q.kill()
      text, _ = p.communicate()
      results.append((None, text + f"\n[killed after {TIMEOUT_S}s]"))
  return results


def test_two_processes_match_single_process(tmp_path):
  out = str(tmp_path / "loss")
  results = _run_processes(out)
  report = "\n".join(
      f"--- process {i} (exit {rc}) ---\n{_tail(text)}" for i, (rc, text) in enumerate(results)
  )
  if any(rc != 0 for rc, _ in results):
    if any("collectives" in t.lower() and "not implemented" in t.lower() for _, t in results):
      pytest.skip("this jax's CPU backend cannot run multi-process collectives:\n" + report)
    pytest.fail("a worker process failed:\n" + report)
  infos = []
  for i in range(NUM_PROCESSES):
    with open(f"{out}.{i}") as f:
      infos.append(json.load(f))
  for i, info in enumerate(infos):
    assert info["initialised"], report
    assert info["process_index"] == i and info["process_count"] == NUM_PROCESSES, info
    assert info["device_count"] == NUM_PROCESSES * LOCAL_DEVICES, info
    assert info["local_device_count"] == LOCAL_DEVICES, info
  np.testing.assert_allclose(infos[0]["losses"], infos[1]["losses"], rtol=0, atol=1e-7)

  reference = mp_worker.run_steps(mesh=None)  # one device, this process
  assert reference[1] < reference[0]  # the step really trained
  np.testing.assert_allclose(infos[0]["losses"], reference, rtol=1e-5, atol=1e-5, err_msg=report)
