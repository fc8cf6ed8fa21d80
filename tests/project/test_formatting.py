"""The tree stays formatted as pyproject.toml's [tool.pyink] says (2-space, 100 columns)."""

import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytest.importorskip("pyink", reason="pyink is not installed (the test extra)")

FORMATTED = ("ttc_jax", "tests", "benchmarks", "configs", "scripts")


def test_sources_are_pyink_formatted():
  proc = subprocess.run(
      [sys.executable, "-m", "pyink", "--check", *FORMATTED],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, f"run `pyink {' '.join(FORMATTED)}`:\n{proc.stderr[-3000:]}"
