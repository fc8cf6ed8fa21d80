"""The import contracts of .importlinter: layers (each imports only from below), data libraries."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytest.importorskip("importlinter", reason="import-linter is not installed (the test extra)")

ROOT = REPO_ROOT
CONFIG = os.path.join(ROOT, ".importlinter")


def test_import_contracts_are_kept():
  # In a subprocess: the linter reads source files only, but puts the working directory on
  # sys.path and configures logging, which should not leak into the test process.
  code = (
      "import sys; from importlinter.cli import lint_imports; "
      f"sys.exit(lint_imports(config_filename={CONFIG!r}, no_cache=True, no_logo=True))"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, f"broken import contracts:\n{proc.stdout}\n{proc.stderr}"
