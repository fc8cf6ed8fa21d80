"""Config files and --config.<field>=<value> overrides."""

import pytest

from ttc_jax import config as config_lib

QUICK = "configs/arith_quick.py"


def test_all_configs_load_and_validate():
  for name in ("arith_smoke", "arith_quick", "arith_paper"):
    cfg = config_lib.load_config(f"configs/{name}.py")
    assert cfg.name == name


def test_overrides_are_typed():
  cfg = config_lib.load_config(QUICK, ["--config.train.steps=7", "train.lr=1",
                                       "--config.eval.majority_ns=(1,2)",
                                       "--config.model.tie_embeddings=false",
                                       "--config.task.levels=ops=1-2,digits=1"])
  assert cfg.train.steps == 7 and isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0
  assert tuple(cfg.eval.majority_ns) == (1, 2)
  assert cfg.model.tie_embeddings is False
  assert cfg.task.levels == "ops=1-2,digits=1"


@pytest.mark.parametrize("override,match", [
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
    ("--config.orm.heldout_fraction=1.5", "orm.heldout_fraction"),
    ("--config.prm.seq_len=4096", "prm.seq_len=4096 exceeds"),
    ("--config.verify.aggregation=mean", "verify.aggregation"),
])
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
  empty.write_text("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict()\n")
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
  config_lib.validate(cfg)       # a policy-only config stays valid
