"""Stage hashes are a contract: existing run directories resume only while every stage's
`config_hash(sections)` stays what it was. The pinned values below were computed by the
pipelines as they were when this test was written; a refactor that moves code must keep
them. A deliberate config change that should invalidate finished stages updates the
pinned file in the same commit and says so (regenerate with
`python tests/config/test_stage_hashes.py > tests/fixtures/stage_hashes.json`).

The sections are collected without running anything: `_stage` is replaced by a recorder
that returns no outputs, and each `stage_*` method is called in the pipeline's order.
"""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PINNED = os.path.join(ROOT, "tests", "fixtures", "stage_hashes.json")
ARITH = {"smoke": "configs/arith_smoke.py", "quick": "configs/arith_quick.py"}
# the text pipeline hashes its model paths (fixed stand-ins, never opened) and the sha256 of
# its data files (fixed bytes, written to a temporary directory)
TEXT = {"gsm8k_hf": "configs/gsm8k_hf.py", "math_hf": "configs/math_hf.py"}
TEXT_DATA = {
    "train.jsonl": '{"question": "1+1?", "answer": "#### 2"}\n',
    "test.jsonl": '{"question": "2+2?", "answer": "#### 4"}\n',
}
TEXT_PATHS = dict(policy="/models/policy", prm="/models/prm", large_policy="/models/large")


def _record(pipe, calls) -> dict:
  from ttc_jax import config as config_lib

  seen = {}

  def stage(name, sections, fn):
    seen[name] = config_lib.config_hash(sections)
    return {}

  pipe._stage = stage
  for call in calls:
    call(pipe)
  return seen


def arith_hashes(config_path: str, edit=None) -> dict:
  """The arith stage hashes of a config file (`edit(cfg)` changes it first)."""
  from ttc_jax import config as config_lib
  from ttc_jax.pipeline import Pipeline

  cfg = config_lib.load_config(os.path.join(ROOT, config_path))
  if edit is not None:
    edit(cfg)
  pipe = Pipeline.__new__(Pipeline)
  pipe.cfg = cfg
  calls = [
      Pipeline.stage_data,
      Pipeline.stage_policy,
      Pipeline.stage_eval_policy,
      Pipeline.stage_prm_labels,
      lambda p: p._value_stage("prm"),
      lambda p: p._value_stage("orm"),
      Pipeline.stage_eval_verifiers,
      Pipeline.stage_eval_search,
      Pipeline.stage_verifier_ablation,
      Pipeline.stage_revision_data,
      Pipeline.stage_revision_sft,
      Pipeline.stage_revision_chains,
      Pipeline.stage_revision_orm,
      Pipeline.stage_revision_rl,
      Pipeline.stage_eval_revision,
      Pipeline.stage_large_policy,
      Pipeline.stage_eval_large,
      Pipeline.stage_compute_optimal,
  ]
  return _record(pipe, calls)


def text_hashes(config_path: str, manual_dir: str) -> dict:
  from ttc_jax import config as config_lib
  from ttc_jax.pipeline.text import TextPipeline

  for name, text in TEXT_DATA.items():
    with open(os.path.join(manual_dir, name), "w") as f:
      f.write(text)
  cfg = config_lib.load_config_file(os.path.join(ROOT, config_path))  # paths are not checked
  cfg.data.manual_dir = manual_dir
  cfg.hf.update(TEXT_PATHS)
  pipe = TextPipeline.__new__(TextPipeline)
  pipe.cfg, pipe.task = cfg, cfg.task.name
  calls = [
      TextPipeline.stage_data,
      TextPipeline.stage_eval_policy,
      TextPipeline.stage_score_samples,
      TextPipeline.stage_eval_search,
      TextPipeline.stage_eval_large,
      TextPipeline.stage_compute_optimal,
  ]
  return _record(pipe, calls)


def all_hashes(tmp: str) -> dict:
  out = {name: arith_hashes(path) for name, path in ARITH.items()}
  out.update({name: text_hashes(path, tmp) for name, path in TEXT.items()})
  return out


@pytest.mark.parametrize("name", sorted(list(ARITH) + list(TEXT)))
def test_stage_hashes_are_unchanged(name, tmp_path):
  with open(PINNED) as f:
    pinned = json.load(f)[name]
  got = arith_hashes(ARITH[name]) if name in ARITH else text_hashes(TEXT[name], str(tmp_path))
  assert got == pinned


def _label_source_only(cfg):
  del cfg.prm["label"]
  cfg.prm.label_source = "monte_carlo"


def _both_fields(cfg):
  cfg.prm.label_source = "monte_carlo"


def _more_ablation(cfg):
  cfg.verify.ablation = ("exact", "monte_carlo_hard")


def _no_ablation(cfg):
  del cfg.verify["ablation"]


@pytest.mark.parametrize("edit", [_label_source_only, _both_fields, _more_ablation, _no_ablation])
def test_label_source_and_ablation_leave_other_stage_hashes_alone(edit):
  """prm.label_source equal to what prm.label said hashes as before, and verify.ablation is in
  no stage's hash but verifier_ablation's."""
  pinned = arith_hashes(ARITH["quick"])
  got = arith_hashes(ARITH["quick"], edit)
  same = edit in (_label_source_only, _both_fields)
  assert {k: v for k, v in got.items() if not (k == "verifier_ablation" and not same)} == {
      k: v for k, v in pinned.items() if not (k == "verifier_ablation" and not same)
  }
  if not same:
    assert got["verifier_ablation"] != pinned["verifier_ablation"]


if __name__ == "__main__":
  import tempfile

  sys.path.insert(0, ROOT)
  with tempfile.TemporaryDirectory() as d:
    json.dump(all_hashes(d), sys.stdout, indent=1, sort_keys=True)
  print()
