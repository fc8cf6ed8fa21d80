"""scripts/launch_tpu_vm.sh and scripts/launch_gpu.sh: syntax, usage, and what they run.

`gcloud` and `python3` are replaced by fakes on PATH: the fake gcloud runs each
`tpu-vm ssh --worker=all --command=...` locally (HOME in tmp_path standing in for a
worker) and `tpu-vm scp` as a copy; the fake python3 records its arguments and the
distributed-launch environment. So the tests check the commands as a worker's shell
would see them, quoting included, without a cloud project or a GPU.
"""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from ttc_jax import parallel

ROOT = REPO_ROOT
TPU = os.path.join(ROOT, "scripts", "launch_tpu_vm.sh")
GPU = os.path.join(ROOT, "scripts", "launch_gpu.sh")
ENV_KEYS = (
    "TTC_JAX_DISTRIBUTED",
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "JAX_LOCAL_DEVICE_IDS",
)

FAKE_PYTHON = """#!{py}
import json, os, sys
with open({log!r}, "a") as f:
  f.write(json.dumps(dict(argv=sys.argv[1:], cwd=os.getcwd(),
                          env={{k: os.environ.get(k) for k in {keys!r}}})) + "\\n")
"""

FAKE_GCLOUD = """#!{py}
import os, shutil, subprocess, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
  f.write(repr(args) + "\\n")
assert args[:3] == ["compute", "tpus", "tpu-vm"], args
assert "--worker=all" in args, args
if args[3] == "scp":
  src, dest = args[4], args[5].split(":", 1)[1]
  shutil.copy(src, dest.replace("/tmp/", {tmp!r} + "/"))
  sys.exit(0)
assert args[3] == "ssh", args
cmd = [a for a in args if a.startswith("--command=")][0][len("--command="):]
cmd = cmd.replace("/tmp/ttc_jax_src.tar.gz", {tmp!r} + "/ttc_jax_src.tar.gz")
sys.exit(subprocess.call(["bash", "-c", cmd]))
"""


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


@pytest.fixture
def fakes(tmp_path):
  """A PATH with fake gcloud/python3; returns (env, read_python_calls, gcloud_log)."""
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  bin_dir.mkdir()
  home.mkdir()
  py_log, gc_log = str(tmp_path / "python3.jsonl"), str(tmp_path / "gcloud.log")
  _write(bin_dir / "python3", FAKE_PYTHON.format(py=sys.executable, log=py_log, keys=ENV_KEYS))
  _write(bin_dir / "gcloud", FAKE_GCLOUD.format(py=sys.executable, log=gc_log, tmp=str(tmp_path)))
  env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
  for k in (
      "TPU_NAME",
      "ZONE",
      "PROJECT",
      "CONFIG",
      "WORKDIR",
      "REPO_URL",
      "COORDINATOR_ADDRESS",
      "NUM_PROCESSES",
      "PROCESS_ID",
      "PYTHON",
  ):
    env.pop(k, None)
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", HOME=str(home))

  def calls():
    if not os.path.exists(py_log):
      return []
    with open(py_log) as f:
      return [json.loads(line) for line in f]

  return env, calls, gc_log


def _run(cmd, env, **kw):
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize("script", [TPU, GPU])
def test_syntax_and_shellcheck(script):
  assert os.access(script, os.X_OK), f"{script} is not executable"
  r = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  if shutil.which("shellcheck"):
    r = subprocess.run(["shellcheck", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", [TPU, GPU])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_runs_nothing(script, flag, fakes):
  env, calls, gc_log = fakes
  r = _run([script, flag], env)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("usage: scripts/"), r.stdout
  assert "--config" in r.stdout and "--workdir" in r.stdout
  assert calls() == [] and not os.path.exists(gc_log)


def test_tpu_missing_arguments_exit_2(fakes):
  env, calls, gc_log = fakes
  r = _run([TPU, "--zone", "z"], env)
  assert r.returncode == 2 and "no TPU name" in r.stderr
  r = _run([TPU, "--tpu", "t", "--zone", "z"], env)
  assert r.returncode == 2 and "no workdir" in r.stderr
  r = _run([TPU, "--tpu", "t", "--zone", "z", "-w", "/shared/x", "--", "--bogus"], env)
  assert r.returncode == 2 and "--config.FIELD" in r.stderr
  assert calls() == [] and not os.path.exists(gc_log)


def test_tpu_runs_the_same_job_on_every_worker(fakes):
  env, calls, gc_log = fakes
  overrides = ["--config.train.steps=7", "--config.mesh.shape=(-1, 1, 1)"]
  r = _run(
      [
          TPU,
          "--tpu",
          "my-v4",
          "--zone",
          "us-central2-b",
          "--project",
          "proj",
          "--config",
          "configs/arith_smoke.py",
          "--workdir",
          "/shared/runs/a b",
          "--",
      ]
      + overrides,
      env,
  )
  assert r.returncode == 0, r.stdout + r.stderr
  with open(gc_log) as f:
    gcloud = f.read()
  assert "'--zone', 'us-central2-b', '--project', 'proj'" in gcloud
  home = env["HOME"]
  # the checkout was copied to the worker
  assert os.path.exists(os.path.join(home, "ttc_jax", "ttc_jax", "parallel.py"))
  assert os.path.exists(os.path.join(home, "ttc_jax", ".ttc_jax_installed"))
  argv = [c["argv"] for c in calls()]
  assert ["-m", "pip", "install", "-q", "-e", ".", "jax[tpu]"] in argv
  job = [c for c in calls() if c["argv"][:2] == ["-m", "ttc_jax.run"]]
  assert len(job) == 1
  assert (
      job[0]["argv"]
      == [
          "-m",
          "ttc_jax.run",
          "--config",
          "configs/arith_smoke.py",
          "--workdir",
          "/shared/runs/a b",
          "--no_progress",
      ]
      + overrides
  )
  assert job[0]["cwd"] == os.path.join(home, "ttc_jax")
  assert job[0]["env"]["TTC_JAX_DISTRIBUTED"] == "1"
  assert os.path.exists(os.path.join(home, "ttc_jax_run.log"))
  # a second launch does not reinstall
  r = _run([TPU, "-t", "my-v4", "-z", "z", "-w", "/shared/runs/b"], env)
  assert r.returncode == 0, r.stdout + r.stderr
  assert sum(c["argv"][:3] == ["-m", "pip", "install"] for c in calls()) == 2  # pip -U pip, -e .


def _git(cwd, *args):
  return subprocess.run(
      ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
      cwd=cwd,
      check=True,
      capture_output=True,
      text=True,
  ).stdout


def _files_under(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture
def newcomer_checkout(tmp_path):
  """A git checkout holding the real launch script and .gitignore, plus what a newcomer leaves
  in it: a virtual environment with a 2 GB (sparse) file, a stray run directory under a name
  no ignore rule knows, the default runs/, and new untracked source files."""
  root = tmp_path / "checkout"
  for rel, text in {
      "scripts/launch_tpu_vm.sh": open(TPU).read(),
      ".gitignore": open(os.path.join(ROOT, ".gitignore")).read(),
      "setup.py": "",
      "ttc_jax/__init__.py": "",
      "ttc_jax/parallel.py": "",
      "configs/arith_smoke.py": "",
      "docs/notes.md": "x",
  }.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  os.chmod(root / "scripts/launch_tpu_vm.sh", 0o755)
  _git(root, "init", "-q")
  _git(root, "add", "-A")
  _git(root, "commit", "-q", "-m", "init")
  tracked = sorted(_git(root, "ls-files").split())
  for rel, size in {
      ".venv/lib/python3.11/site-packages/torch/libtorch.so": 2 << 30,
      "my_experiment/policy/ckpt/params.bin": 300 << 20,
      "runs/arith_quick/report.json": 10,
  }.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    with open(root / rel, "wb") as f:
      f.truncate(size)
  (root / "ttc_jax/new_stage.py").write_text("X = 1\n")
  (root / "configs/mine.py").write_text("Y = 2\n")
  (root / "scratch.txt").write_text("not source\n")
  return root, tracked


def test_gitignore_covers_local_environments_and_outputs(newcomer_checkout):
  root, _ = newcomer_checkout
  for rel in (
      ".venv/bin/python",
      "venv/bin/python",
      "env/bin/python",
      ".tox/py311/x",
      "ttc_jax.egg-info/PKG-INFO",
      "runs/arith_quick/report.json",
      "ttc_jax/__pycache__/run.cpython-311.pyc",
      ".pytest_cache/v",
      ".hypothesis/x",
  ):
    r = subprocess.run(["git", "check-ignore", "-q", rel], cwd=root)
    assert r.returncode == 0, f"{rel} is not ignored"


def test_tpu_ships_source_only_not_environments_or_run_dirs(fakes, newcomer_checkout):
  env, calls, _ = fakes
  root, tracked = newcomer_checkout
  r = _run([str(root / "scripts/launch_tpu_vm.sh"), "-t", "v4", "-z", "z", "-w", "/shared/r"], env)
  assert r.returncode == 0, r.stdout + r.stderr
  shipped = os.path.join(env["HOME"], "ttc_jax")
  got = [f for f in _files_under(shipped) if f != ".ttc_jax_installed"]
  assert got == sorted(tracked + ["configs/mine.py", "ttc_jax/new_stage.py"])
  assert len([c for c in calls() if c["argv"][:2] == ["-m", "ttc_jax.run"]]) == 1


def test_tpu_refuses_an_archive_over_the_limit(fakes, newcomer_checkout):
  env, calls, gc_log = fakes
  root, _ = newcomer_checkout
  with open(root / "ttc_jax/table.py", "w") as f:
    f.write("# " + "x" * (3 << 20) + "\n")
  script = str(root / "scripts/launch_tpu_vm.sh")
  for extra in ([], ["--dry-run"]):
    r = _run([script, "-t", "v4", "-z", "z", "-w", "/shared/r", "--max-ship-mb", "2"] + extra, env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "over the limit of 2 MB" in r.stderr and "ttc_jax/table.py" in r.stderr, r.stderr
    assert "--max-ship-mb" in r.stderr
  assert calls() == [] and not os.path.exists(gc_log)
  r = _run([script, "-t", "v4", "-z", "z", "-w", "/shared/r", "--max-ship-mb", "2MB"], env)
  assert r.returncode == 2 and "--max-ship-mb must be" in r.stderr
  env = dict(env, MAX_SHIP_MB="4")
  r = _run([script, "-t", "v4", "-z", "z", "-w", "/shared/r"], env)
  assert r.returncode == 0, r.stdout + r.stderr


def test_tpu_dry_run_runs_nothing(fakes):
  env, calls, gc_log = fakes
  r = _run(
      [
          TPU,
          "-t",
          "t",
          "-z",
          "z",
          "-w",
          "gs://bucket/runs/x",
          "--dry-run",
          "--config.train.steps=3",
      ],
      env,
  )
  assert r.returncode == 0, r.stderr
  assert r.stdout.count("gcloud compute tpus tpu-vm") == 4 and "--worker=all" in r.stdout
  assert "gcsfuse --implicit-dirs bucket /tmp/ttc_gcs/bucket" in r.stdout
  assert "--workdir /tmp/ttc_gcs/bucket/runs/x" in r.stdout
  assert calls() == [] and not os.path.exists(gc_log)


def test_gpu_single_process(fakes):
  env, calls, _ = fakes
  r = _run(
      [GPU, "-c", "configs/arith_smoke.py", "-w", "/tmp/x", "--", "--config.train.steps=2"], env
  )
  assert r.returncode == 0, r.stderr
  (call,) = calls()
  assert call["argv"] == [
      "-m",
      "ttc_jax.run",
      "--config",
      "configs/arith_smoke.py",
      "--workdir",
      "/tmp/x",
      "--config.train.steps=2",
  ]
  assert all(v is None for v in call["env"].values()), call["env"]


def test_gpu_multi_process_env(fakes):
  env, calls, _ = fakes
  env = dict(env, COORDINATOR_ADDRESS="10.0.0.1:1234", NUM_PROCESSES="4", PROCESS_ID="3")
  r = _run([GPU, "--local-devices", "0,1"], env)
  assert r.returncode == 0, r.stderr
  (call,) = calls()
  assert call["env"] == dict(
      TTC_JAX_DISTRIBUTED=None,
      JAX_COORDINATOR_ADDRESS="10.0.0.1:1234",
      JAX_NUM_PROCESSES="4",
      JAX_PROCESS_ID="3",
      JAX_LOCAL_DEVICE_IDS="0,1",
  )
  for bad in (dict(PROCESS_ID="4"), dict(NUM_PROCESSES=""), dict(COORDINATOR_ADDRESS="nohost")):
    r = _run([GPU], dict(env, **bad))
    assert r.returncode == 2, (bad, r.stdout, r.stderr)
  assert len(calls()) == 1


def test_gpu_local_procs(fakes, tmp_path):
  env, calls, _ = fakes
  env = dict(env, LOG_DIR=str(tmp_path / "logs"))
  r = _run([GPU, "--local-procs", "2", "--", "--config.train.steps=1"], env)
  assert r.returncode == 0, r.stdout + r.stderr
  got = sorted(calls(), key=lambda c: c["env"]["JAX_PROCESS_ID"])
  assert [c["env"]["JAX_PROCESS_ID"] for c in got] == ["0", "1"]
  assert [c["env"]["JAX_LOCAL_DEVICE_IDS"] for c in got] == ["0", "1"]
  assert len({c["env"]["JAX_COORDINATOR_ADDRESS"] for c in got}) == 1
  assert all(c["env"]["JAX_NUM_PROCESSES"] == "2" for c in got)
  assert sorted(os.listdir(tmp_path / "logs")) == ["launch_gpu.0.log", "launch_gpu.1.log"]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
            dict(coordinator_address="h:1", num_processes=2, process_id=1),
        ),
        ({"TTC_JAX_DISTRIBUTED": "1"}, {}),
        (
            {"TTC_JAX_DISTRIBUTED": "1", "JAX_COORDINATOR_ADDRESS": "h:1"},
            dict(coordinator_address="h:1"),
        ),
    ],
)
def test_maybe_initialize_distributed_reads_the_launch_env(monkeypatch, env, expected):
  """The variables the scripts export are the ones parallel.py reads."""
  for k in ENV_KEYS:
    monkeypatch.delenv(k, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  seen = []
  monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda **kw: seen.append(kw))
  monkeypatch.setattr(parallel.jax.distributed, "is_initialized", lambda: False)
  assert parallel.maybe_initialize_distributed() is (expected is not None)
  assert seen == ([] if expected is None else [expected])


def test_maybe_initialize_distributed_needs_both_counts(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:1")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  monkeypatch.setattr(parallel.jax.distributed, "is_initialized", lambda: False)
  with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
    parallel.maybe_initialize_distributed()
