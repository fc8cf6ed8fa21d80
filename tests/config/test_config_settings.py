"""Typed settings from config sections (`ttc_jax.config.settings`): the configs' sections build,
a missing optional field takes the dataclass default, unknown and ill-typed fields are errors."""

import ml_collections
import pytest

from ttc_jax import config as config_lib
from ttc_jax.config import settings as config_settings
from ttc_jax.revision.rl_settings import RLSettings
from ttc_jax.search import beam
from ttc_jax.train.loop import FitSettings


@pytest.mark.parametrize("name", ["arith_smoke", "arith_quick", "arith_paper"])
def test_every_config_section_builds_with_its_values(name):
  cfg = config_lib.load_config(f"configs/{name}.py")
  for kind in ("prm", "orm"):
    s = config_settings.value_train_settings(cfg[kind], kind)
    assert (s.fit.steps, s.optim.lr, s.seq_len) == (
        cfg[kind].steps,
        cfg[kind].lr,
        cfg[kind].seq_len,
    )
  orm = config_settings.value_train_settings(cfg.revision.orm, "revision.orm")
  assert orm.batch_size == cfg.revision.orm.batch_size
  sft = config_settings.sft_settings(cfg.revision.sft)
  assert (sft.fit.patience, sft.optim.weight_decay) == (
      cfg.revision.sft.patience,
      cfg.revision.sft.weight_decay,
  )
  rl = config_settings.rl_settings(cfg.revision.rl)
  assert (rl.group_size, rl.loss) == (cfg.revision.rl.group_size, cfg.revision.rl.loss)
  lb = config_settings.label_settings(cfg.labels)
  assert (lb.rollouts, lb.keep_rollouts, lb.budget_slack) == (
      cfg.labels.rollouts,
      cfg.labels.keep_rollouts,
      1.5,
  )
  sc = config_settings.search_settings(cfg.search)
  assert (sc.methods, sc.budgets, sc.compact_levels) == (
      tuple(cfg.search.methods),
      tuple(cfg.search.budgets),
      cfg.search.compact_levels,
  )


@pytest.mark.parametrize("name", ["gsm8k_hf", "math_hf"])
def test_text_search_sections_build_with_the_default_compaction(name):
  cfg = config_lib.load_config_file(f"configs/{name}.py")
  assert "compact_levels" not in cfg.search
  sc = config_settings.search_settings(cfg.search)
  assert sc.compact_levels == beam.COMPACT_LEVELS and sc.max_beams == cfg.search.max_beams


def _rl_section(**kw):
  d = dict(
      steps=2,
      prompts_per_step=2,
      group_size=4,
      temperature=1.0,
      max_new_tokens=4,
      lr=1e-3,
      warmup_steps=0,
      clip_norm=1.0,
      clip_eps=0.2,
      kl_coef=0.0,
      advantage="group_normalized",
      loss="clipped_pg",
      log_every=1,
      eval_every=0,
      checkpoint_every=1,
  )
  d.update(kw)
  return ml_collections.ConfigDict(d)


def test_missing_optional_fields_take_the_dataclass_defaults():
  s = config_settings.rl_settings(_rl_section())
  defaults = RLSettings.__dataclass_fields__
  for f in ("updates_per_batch", "top_k", "top_p", "skip_nonfinite"):
    assert getattr(s, f) == defaults[f].default
  assert (s.updates_per_batch, s.top_k, s.top_p, s.skip_nonfinite) == (1, 0, 1.0, False)
  fit = config_settings.fit_settings(dict(steps=3, eval_every=1, log_every=1, patience=0))
  assert fit == FitSettings(steps=3, eval_every=1, log_every=1, patience=0)
  assert isinstance(config_settings.rl_settings(_rl_section(lr=1)).lr, float)  # int is a float


@pytest.mark.parametrize(
    "section,match",
    [
        (_rl_section(kl_coeff=0.1), r"config\.revision\.rl: unknown field\(s\) \['kl_coeff'\]"),
        (_rl_section(group_size="4"), r"config\.revision\.rl\.group_size must be int"),
        (_rl_section(steps=2.0), r"config\.revision\.rl\.steps must be int"),
        (_rl_section(skip_nonfinite=1), r"config\.revision\.rl\.skip_nonfinite must be bool"),
        (_rl_section(max_new_tokens=True), r"max_new_tokens must be int"),
    ],
)
def test_unknown_and_ill_typed_fields_are_config_errors(section, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_settings.rl_settings(section)


def test_a_missing_required_field_is_named():
  sec = ml_collections.ConfigDict(dict(steps=2, eval_every=1, log_every=1))
  with pytest.raises(config_lib.ConfigError, match=r"config\.prm has no field 'patience'"):
    config_settings.value_train_settings(sec, "prm")


def test_pipeline_fields_are_allowed_where_the_pipeline_reads_them():
  cfg = config_lib.load_config("configs/arith_smoke.py")
  assert "label" in cfg.prm and "replay_fraction" in cfg.revision.sft
  assert "contexts" in cfg.revision.rl
  with pytest.raises(config_lib.ConfigError, match="unknown field"):  # not a fit field
    config_settings.fit_settings(cfg.prm, "prm")


def test_tuple_fields_take_lists_and_check_their_items():
  cfg = config_lib.load_config("configs/arith_smoke.py")
  d = dict(cfg.search.to_dict(), budgets=[4, 16])
  assert config_settings.search_settings(d).budgets == (4, 16)
  with pytest.raises(config_lib.ConfigError, match=r"config\.search\.budgets\[1\] must be int"):
    config_settings.search_settings(dict(d, budgets=(4, "16")))
  with pytest.raises(config_lib.ConfigError, match=r"config\.search\.methods must be a tuple"):
    config_settings.search_settings(dict(d, methods="beam_m4"))


def test_a_settings_check_is_a_config_error():
  cfg = config_lib.load_config("configs/arith_smoke.py")
  with pytest.raises(config_lib.ConfigError, match=r"config\.labels: LabelSettings\.rollouts"):
    config_settings.label_settings(dict(cfg.labels.to_dict(), rollouts=0))
