"""Config files and --config.<field>=<value> overrides."""

import jax
import pytest

from ttc_jax import config as config_lib

QUICK = "configs/arith_quick.py"


def test_all_configs_load_and_validate():
  for name in ("arith_smoke", "arith_quick", "arith_paper"):
    cfg = config_lib.load_config(f"configs/{name}.py")
    assert cfg.name == name


def test_overrides_are_typed():
  cfg = config_lib.load_config(
      QUICK,
      [
          "--config.train.steps=7",
          "train.lr=1",
          "--config.eval.majority_ns=(1,2)",
          "--config.model.tie_embeddings=false",
          "--config.task.levels=ops=1-2,digits=1",
      ],
  )
  assert cfg.train.steps == 7 and isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0
  assert tuple(cfg.eval.majority_ns) == (1, 2)
  assert cfg.model.tie_embeddings is False
  assert cfg.task.levels == "ops=1-2,digits=1"


@pytest.mark.parametrize(
    "override,match",
    [
        ("--config.train.stepz=3", "unknown config field 'train.stepz'"),
        ("--config.nope.x=3", "unknown config field 'nope'"),
        ("--config.train.steps=abc", "cannot parse value"),
        ("--config.train.steps=1.5", "expected int"),
        ("--config.model.tie_embeddings=maybe", "expected a boolean"),
        ("--config.train=3", "names a group"),
        ("--config.train.steps", "must look like field=value"),
        ("--config.train.steps=0", "train.steps must be positive"),
        ("--config.model.num_kv_heads=3", "num_kv_heads"),
        ("--config.eval.majority_ns=(1,128)", "majority_ns"),
        ("--config.train.seq_len=4096", "exceeds model.max_len"),
        ("--config.labels.rollouts=0", "labels.rollouts must be positive"),
        ("--config.prm.label=soft-ish", "prm.label must be"),
        (
            "--config.verify.ablation=('exakt',)",
            r"verify\.ablation: unknown label source\(s\) \['exakt'\]",
        ),
        ("--config.verify.ablation=('exact','exact')", "lists a label source twice"),
        ("--config.orm.heldout_fraction=1.5", "orm.heldout_fraction"),
        ("--config.prm.seq_len=4096", "prm.seq_len=4096 exceeds"),
        ("--config.verify.aggregation=mean", "verify.aggregation"),
        ("--config.train.microbatches=3", "positive divisor of config.train.batch_size=64"),
        ("--config.train.microbatches=0", "microbatches=0 must be a positive divisor"),
    ],
)
def test_bad_overrides_name_the_problem(override, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.load_config(QUICK, [override])


def test_bad_config_files(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="not found"):
    config_lib.load_config(str(tmp_path / "missing.py"))
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(:\n")
  with pytest.raises(config_lib.ConfigError, match="failed to load"):
    config_lib.load_config(str(bad))
  none = tmp_path / "none.py"
  none.write_text("x = 1\n")
  with pytest.raises(config_lib.ConfigError, match="defines no get_config"):
    config_lib.load_config(str(none))
  empty = tmp_path / "empty.py"
  empty.write_text(
      "import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict()\n"
  )
  with pytest.raises(config_lib.ConfigError, match="has no 'name'"):
    config_lib.load_config(str(empty))


def test_config_hash_is_stable_and_sensitive():
  a = config_lib.load_config(QUICK)
  b = config_lib.load_config(QUICK, ["--config.train.steps=3"])
  assert config_lib.config_hash(a.task) == config_lib.config_hash(b.task)
  assert config_lib.config_hash(a.train) != config_lib.config_hash(b.train)


def test_verifier_sections_all_or_none():
  cfg = config_lib.load_config(QUICK)
  del cfg["orm"]
  with pytest.raises(config_lib.ConfigError, match="need all of"):
    config_lib.validate(cfg)
  for k in ("labels", "prm", "verify"):
    del cfg[k]
  with pytest.raises(config_lib.ConfigError, match="compute_optimal needs the 'labels' section"):
    config_lib.validate(cfg)
  del cfg["compute_optimal"]
  config_lib.validate(cfg)  # a policy-only config stays valid


@pytest.mark.parametrize(
    "override,match",
    [
        ("--config.compute_optimal.num_folds=1", "num_folds >= 2"),
        ("--config.compute_optimal.r_values=(0.16,-1.0)", "positive ratios"),
        ("--config.compute_optimal.large_model.vocab_size=64", "unknown config field"),
        ("--config.search.questions_per_level=60", "exceeds eval.questions_per_level"),
    ],
)
def test_compute_optimal_section_errors(override, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config_lib.load_config(QUICK, [override]))


def test_larger_model_keeps_the_vocabulary():
  cfg = config_lib.load_config(QUICK)
  cfg.compute_optimal.large_model.vocab_size = 64
  with pytest.raises(config_lib.ConfigError, match=r"must keep the policy's \['vocab_size'\]"):
    config_lib.validate(cfg)


# --- shapes the pipeline cannot run: the mesh, search budgets, empty data ------------------


@pytest.mark.parametrize(
    "override,match",
    [
        (
            "--config.mesh.shape=(3,1,1)",
            r"config.mesh.shape=\(3, 1, 1\) needs 3 devices, but jax.device_count\(\) is 8",
        ),
        ("--config.mesh.shape=(3,-1,1)", r"needs a multiple of 3 devices, .*device_count\(\) is 8"),
        ("--config.mesh.shape=(-1,-1,1)", "at most one -1"),
        ("--config.mesh.shape=(0,1,1)", "must be positive integers"),
        ("--config.mesh.shape=(2,2)", "must have 3 entries"),
        (
            "--config.search.budgets=(4,8)",
            r"method 'beam_sqrt' cannot spend a generation budget of 8 .*round\(sqrt\(G\)\) = 3.*"
            r"nearest budgets it can: \[6, 9\]",
        ),
        ("--config.search.budgets=(6,)", "method 'beam_m4' cannot spend a generation budget of 6"),
        ("--config.search.budgets=(0,)", "search.budgets must be positive"),
        ("--config.search.compact_levels=-1", "search.compact_levels must be >= 0"),
        ("--config.task.train_per_level=0", "train_per_level must be positive .*empty dataset"),
        ("--config.task.test_per_level=0", "test_per_level must be positive"),
        ("--config.task.levels=ops=0-3", "config.task.levels: bad level spec"),
        ("--config.train.eval_batches=0", "eval_batches must be positive"),
        ("--config.eval.num_samples=0", "eval.num_samples must be positive"),
    ],
)
def test_unrunnable_shapes_are_config_errors(override, match):
  assert jax.device_count() == 8  # conftest's fake CPU devices
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.load_config(QUICK, [override])


@pytest.mark.parametrize(
    "method,budgets",
    [
        ("beam_m4", (4, 16, 64)),
        ("beam_sqrt", (1, 4, 9, 16)),
        ("lookahead_k1", (2, 8, 16)),
        ("lookahead_k3", (4, 16, 64)),
        ("dvts", (4, 8, 256)),
    ],
)
def test_budgets_every_method_can_spend_are_accepted(method, budgets):
  cfg = config_lib.load_config(
      QUICK, [f"--config.search.methods=('{method}',)", f"--config.search.budgets={budgets}"]
  )
  from ttc_jax.search import sweep

  assert all(sweep.plan(method, b) is not None for b in cfg.search.budgets)


def test_mesh_shapes_that_fit_the_devices_are_accepted():
  for shape in ("(-1,1,1)", "(2,2,2)", "(1,-1,2)", "(8,1,1)"):
    config_lib.load_config(QUICK, [f"--config.mesh.shape={shape}"])


def test_main_job_reports_a_bad_mesh_and_exits_2(capsys):
  from ttc_jax import run

  assert (
      run.main(
          [
              "--config",
              QUICK,
              "--workdir",
              "/nonexistent/never-created",
              "--config.mesh.shape=(3,1,1)",
          ]
      )
      == 2
  )
  err = capsys.readouterr().err
  assert "config.mesh.shape=(3, 1, 1)" in err and "jax.device_count() is 8" in err


def test_read_jsonl_names_file_and_line_of_bytes_that_are_not_utf8(tmp_path):
  from ttc_jax import io_utils

  p = tmp_path / "x.jsonl"
  p.write_bytes(b'{"a": 1}\n{"b": "\xff\xfe"}\n')
  with pytest.raises(ValueError, match=r"line 2 of .*x.jsonl is not UTF-8"):
    io_utils.read_jsonl(str(p))


def test_speed_only_search_fields_leave_stage_hashes_alone():
  base = config_lib.load_config(QUICK, [])
  for levels in (0, 2, 3):
    other = config_lib.load_config(QUICK, [f"--config.search.compact_levels={levels}"])
    assert config_lib.config_hash(
        config_lib.search_section(other.search)
    ) == config_lib.config_hash(config_lib.search_section(base.search))
  changed = config_lib.load_config(QUICK, ["--config.search.max_rounds=3"])
  assert config_lib.search_section(changed.search) != config_lib.search_section(base.search)


def test_speed_only_train_fields_leave_stage_hashes_alone():
  base = config_lib.load_config(QUICK, [])
  other = config_lib.load_config(QUICK, ["--config.train.microbatches=8"])
  assert other.train.microbatches == 8
  assert config_lib.train_section(other.train) == config_lib.train_section(base.train)
  assert "microbatches" not in config_lib.train_section(base.train)
  changed = config_lib.load_config(QUICK, ["--config.train.steps=3"])
  assert config_lib.train_section(changed.train) != config_lib.train_section(base.train)


def test_speed_only_model_and_rl_fields_leave_stage_hashes_alone():
  from ttc_jax.pipeline import policy, revision

  base = config_lib.load_config(QUICK, [])
  assert base.model.attention == "auto"
  other = config_lib.load_config(
      QUICK, ["--config.model.attention=xla", "--config.revision.rl.microbatches=4"]
  )
  for sections in (policy.policy_sections, revision.revision_sections("sft", "chains", "rl")):
    assert config_lib.config_hash(sections(other)) == config_lib.config_hash(sections(base))
  assert config_lib.config_hash(config_lib.revision_section(other.revision)) == (
      config_lib.config_hash(config_lib.revision_section(base.revision))
  )
  changed = config_lib.load_config(QUICK, ["--config.revision.rl.kl_coef=0.5"])
  rl = revision.revision_sections("rl")
  assert config_lib.config_hash(rl(changed)) != config_lib.config_hash(rl(base))


def test_main_job_host_devices_flag(capsys):
  from ttc_jax import run

  assert run.main(["--config", QUICK, "--host_devices", "0"]) == 2
  assert "--host_devices must be >= 1" in capsys.readouterr().err
  # An explicit device count already in XLA_FLAGS (the tests' 8) wins over the flag.
  assert (
      run.main(
          [
              "--config",
              QUICK,
              "--host_devices",
              "2",
              "--workdir",
              "/nonexistent/never-created",
              "--config.mesh.shape=(3,1,1)",
          ]
      )
      == 2
  )
  assert "jax.device_count() is 8" in capsys.readouterr().err


def test_optional_revision_sft_fields_at_zero_leave_stage_hashes_alone():
  # Runs made before an optional SFT field existed must stay reusable: the compute-optimal
  # stage hashes all of config.revision, the revision stages its sft section.
  base = config_lib.load_config(QUICK, [])
  assert float(base.revision.sft.replay_foreign_fraction) == 0.0
  older = base.revision.to_dict()
  del older["sft"]["replay_foreign_fraction"]  # a config from before the field
  assert config_lib.revision_section(older) == config_lib.revision_section(base.revision)
  assert "replay_foreign_fraction" not in config_lib.revision_sft_section(base.revision.sft)
  assert config_lib.revision_sft_section(base.revision.sft)["replay_fraction"] == 0.5
  used = config_lib.load_config(QUICK, ["--config.revision.sft.replay_foreign_fraction=0.5"])
  assert config_lib.config_hash(
      config_lib.revision_section(used.revision)
  ) != config_lib.config_hash(config_lib.revision_section(base.revision))
