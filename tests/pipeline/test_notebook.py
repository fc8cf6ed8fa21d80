"""notebooks/quickstart.ipynb runs headless end to end.

The kernel is a kernelspec written to tmp_path (found through JUPYTER_PATH), running
this interpreter with the repository on PYTHONPATH, one CPU device (the 8 fake devices
of conftest.py are switched off for it) and the tests' persistent compilation cache.
The work directory, passed through TTC_QUICKSTART_WORKDIR, is the session's smoke run
(conftest.smoke_run, the same config): the notebook's `Pipeline.run()` resumes it (every
stage found done, the report and plots rebuilt) instead of training everything a second
time; the stages themselves are tested in test_pipeline.py.
"""

import json
import os
import sys

import pytest

from conftest import REPO_ROOT, TEST_CACHE

pytestmark = pytest.mark.xdist_group("smoke_run")  # shares conftest.smoke_run's run
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = REPO_ROOT
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
KERNEL = "ttc_jax_test_python"


def _text(cell) -> str:
  out = []
  for o in cell.get("outputs", []):
    if o.get("output_type") == "stream":
      out.append(o["text"])
    elif "data" in o and "text/plain" in o["data"]:
      out.append(o["data"]["text/plain"])
  return "".join(out)


def _kernelspec(tmp_path, workdir) -> None:
  spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  env = {
      "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
      "XLA_FLAGS": "",  # one CPU device, like a laptop or Colab CPU
      "JAX_PLATFORMS": "cpu",
      "TTC_JAX_CACHE_DIR": TEST_CACHE,
      "TTC_QUICKSTART_WORKDIR": str(workdir),
      "TTC_QUICKSTART_REPO": ROOT,
      "TTC_QUICKSTART_OVERRIDES": "",
      "TTC_JAX_DISTRIBUTED": "",
      "JAX_COORDINATOR_ADDRESS": "",
  }
  with open(spec_dir / "kernel.json", "w") as f:
    json.dump(
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "ttc_jax test",
            "language": "python",
            "env": env,
        },
        f,
    )


def test_quickstart_notebook_runs(tmp_path, monkeypatch, smoke_run):
  import pathlib

  workdir = pathlib.Path(smoke_run)
  _kernelspec(tmp_path, workdir)
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL, timeout=900, resources={"metadata": {"path": str(tmp_path)}}
  )
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"notebook cell failed:\n{str(e)[-4000:]}")

  code = [c for c in nb.cells if c.cell_type == "code"]
  for c in code:
    errors = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
  # the install cell was skipped: the package is importable from the checkout
  assert "install skipped" in _text(code[0])
  setup = _text(code[1])
  assert "config: arith_smoke" in setup and str(workdir) in setup

  report_path = workdir / "report.json"
  assert report_path.exists()
  with open(report_path) as f:
    rep = json.load(f)
  figures = _text(code[3])
  for needle in (
      "greedy pass@1 by level:",
      "PRM step AUROC:",
      "majority",
      "beam_m4",
      "compute-optimal search (oracle bins):",
      "FLOPs-matched at R=0.16",
      "wall seconds by stage:",
      "report keys:",
  ):
    assert needle in figures, (needle, figures)
  for key in (
      "policy",
      "curves",
      "prm",
      "orm",
      "search",
      "revision",
      "compute_optimal",
      "flops_matched",
      "plots",
      "wall_seconds",
  ):
    assert f"'{key}'" in figures.split("report keys:")[1], key

  plots = code[4]
  images = [
      o
      for o in plots.get("outputs", [])
      if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
  ]
  assert rep["plots"] and len(images) == len(rep["plots"]), (rep["plots"], _text(plots))
  for o in images:
    assert len(o["data"]["image/png"]) > 1000  # base64 of a real PNG
  for p in rep["plots"]:
    assert os.path.basename(p) in _text(plots)
