"""README's two commands stay true: CI runs exactly the README's test command."""

import os
import re

from conftest import REPO_ROOT

ROOT = REPO_ROOT


def _readme_commands():
  text = open(os.path.join(ROOT, "README.md")).read()
  blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
  return [b.strip() for b in blocks]


def test_readme_has_main_and_test_commands_and_ci_runs_the_test_one():
  cmds = _readme_commands()
  main = [c for c in cmds if "ttc_jax.run --config configs/arith_quick.py" in c]
  tests = [c for c in cmds if "pytest" in c]
  assert main and tests
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  assert tests[0] in ci
