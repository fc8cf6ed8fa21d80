"""TextPipeline end to end on CPU: a tiny random HF Llama policy, a tiny GSM8K, two PRM kinds."""

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("tensorflow_datasets")

from ttc_jax import config as config_lib  # noqa: E402
from ttc_jax import io_utils, run  # noqa: E402
from hf_toys import bpe_tokenizer  # noqa: E402
from ttc_jax.tokenizers.hf import HFTokenizer  # noqa: E402
from ttc_jax.prm import evaluate  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402

ROOT = REPO_ROOT
GSM8K_CFG, MATH_CFG = os.path.join(ROOT, "configs/gsm8k_hf.py"), os.path.join(
    ROOT, "configs/math_hf.py"
)
QUESTIONS = [
    (
        f"Tom has {a} apples and buys {b} more. How many apples does he have?",
        f"Tom has {a} apples.\nHe buys {b} more, so {a}+{b}=<<{a}+{b}={a + b}>>{a + b}.\n"
        f"#### {a + b}",
    )
    for a, b in [(3, 4), (5, 2), (7, 8), (1, 9), (6, 6), (2, 3), (4, 4), (9, 1)]
]


def _tokenizer():
  """A byte-level BPE over the questions, with <pad>/<s>/</s>, a "\n\n" token and a <tag>."""
  return bpe_tokenizer([q + "\n" + a for q, a in QUESTIONS] * 4, ["<tag>"])


def _save_llama(path, vocab, seed, width=32):
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(
      transformers.LlamaConfig(
          vocab_size=vocab,
          hidden_size=width,
          intermediate_size=2 * width,
          num_hidden_layers=2,
          num_attention_heads=4,
          num_key_value_heads=2,
          max_position_embeddings=256,
          tie_word_embeddings=False,
          bos_token_id=1,
          eos_token_id=2,
          pad_token_id=0,
      )
  )
  model.save_pretrained(str(path), safe_serialization=True)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  """Paths: policy, token-PRM and larger-policy checkpoints (+ tokenizer.json), our value
  model, GSM8K JSONL."""
  root = tmp_path_factory.mktemp("text_assets")
  tok = _tokenizer()
  vocab = tok.get_vocab_size(with_added_tokens=True)
  out = {k: root / k for k in ("policy", "token_prm", "large", "value_prm", "gsm8k")}
  for name, seed, width in (("policy", 0, 32), ("token_prm", 1, 32), ("large", 2, 64)):
    _save_llama(out[name], vocab, seed, width)
    tok.save(str(out[name] / "tokenizer.json"))
  out["gsm8k"].mkdir()
  for split in ("train", "test"):
    with open(out["gsm8k"] / f"{split}.jsonl", "w") as fh:
      for q, a in QUESTIONS:
        fh.write(json.dumps({"question": q, "answer": a}) + "\n")
  # Ours: a ttc_jax value model on the policy's backbone shape, saved as the PRM stage does.
  from flax import nnx
  from ttc_jax.models import hf_config
  from ttc_jax.models.reward import create_value_model
  from ttc_jax.train.checkpoint import Checkpointer

  with open(out["policy"] / "config.json") as fh:
    cfg = hf_config.config_from_hf(json.load(fh), max_len=160)
  fp = HFTokenizer.from_file(str(out["policy"])).fingerprint()
  ck = Checkpointer(str(out["value_prm"] / "model"), max_to_keep=1, async_save=False)
  ck.save(0, nnx.state(create_value_model(cfg, seed=3)), dict(kind="prm", tokenizer=fp), force=True)
  ck.close()
  return {k: str(v) for k, v in out.items()}


def tiny_overrides(assets, prm_type="token_prob"):
  prm = assets["token_prm"] if prm_type == "token_prob" else assets["value_prm"]
  return [
      f"--config.hf.policy={assets['policy']}",
      f"--config.hf.prm={prm}",
      f"--config.data.manual_dir={assets['gsm8k']}",
      f"--config.hf.prm_type={prm_type}",
      "--config.hf.prm_step_tag=<tag>",
      "--config.hf.param_dtype=float32",
      "--config.hf.max_len=160",
      "--config.prompt.style=few_shot",
      "--config.prompt.shots=1",
      "--config.eval.questions=8",
      "--config.eval.num_samples=4",
      "--config.eval.majority_ns=(1, 2, 4)",
      "--config.eval.max_new_tokens=16",
      "--config.eval.max_batch=64",
      "--config.verify.score_batch=16",
      "--config.search.questions=8",
      "--config.search.budgets=(4,)",
      "--config.search.methods=('beam_m4',)",
      "--config.search.max_rounds=3",
      "--config.search.max_step_tokens=8",
      "--config.search.max_new_tokens=16",
      "--config.search.max_beams=64",
      "--config.compute_optimal.num_bins=2",
  ]


def check_run(workdir, rep, num_samples=4, large=False):
  for k in ("majority", "prm_best_of_n", "prm_best_of_n_weighted", "beam_m4"):
    assert k in rep["curves"], k
  assert set(rep["curves"]["majority"]) == {"1", "2", "4"} and "4" in rep["curves"]["beam_m4"]
  co = rep["compute_optimal"]
  for m in ("oracle", "predicted"):
    assert 0.0 <= co["search"][m]["4"] <= 1.0
    assert "4" in co["efficiency_vs_best_of_n"]["search"][m]
  assert co["questions"] == 8 and "revision" not in co and ("flops_matched" in rep) == large
  assert rep["levels"] == ["all"] and rep["search"]["questions"] == 8
  for f in (
      "report.md",
      "eval/samples.jsonl",
      "eval/policy_eval.json",
      "verifiers/eval.json",
      "search/results.jsonl",
      "compute_optimal/analysis.json",
      "plots/search.png",
      "plots/verifiers.png",
      "plots/compute_optimal.png",
  ):
    assert os.path.isfile(os.path.join(workdir, f)), f
  samples = io_utils.read_jsonl(os.path.join(workdir, "eval", "samples.jsonl"))
  scores = io_utils.read_jsonl(os.path.join(workdir, "verifiers", "scores.jsonl"))
  assert [s["question"] for s in scores] == [r["question"] for r in samples]
  steps_match = 0
  for r, s in zip(samples, scores):
    assert len(r["samples"]) == len(s["prm"]) == num_samples
    for text, sc in zip(r["samples"], s["prm"]):
      assert all(0.0 <= v <= 1.0 for v in sc)
      steps_match += len(sc) == len(evaluate.text_steps(text.split("\n\nQuestion:")[0]))
  assert steps_match >= len(samples) * num_samples // 2  # one score per "\n"-step (if it fits)
  results = io_utils.read_jsonl(os.path.join(workdir, "search", "results.jsonl"))
  assert len(results) == 8 and all(r["generations"] > 0 for r in results)


def test_main_command_with_external_prm(assets, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  argv = ["--config", GSM8K_CFG, "--workdir", workdir, "--no_progress"] + tiny_overrides(assets)
  assert run.main(argv) == 0
  rep = io_utils.read_json(os.path.join(workdir, "report.json"))
  check_run(workdir, rep)
  assert rep["verifier"]["prm_type"] == "token_prob" and rep["policy"]["num_params"] > 0
  # Same command again: every stage is skipped.
  capsys.readouterr()
  assert run.main(argv) == 0
  out = capsys.readouterr().out
  for st in ("data", "eval_policy", "score_samples", "eval_search", "compute_optimal"):
    assert f"[{st}] done before" in out


def test_our_value_model_as_prm_and_a_larger_policy(assets, tmp_path):
  from ttc_jax.pipeline.text import TextPipeline

  cfg = config_lib.load_config(
      GSM8K_CFG,
      tiny_overrides(assets, "value_model")
      + [
          f"--config.hf.large_policy={assets['large']}",
          "--config.compute_optimal.pretrain_tokens=1e6",
      ],
  )
  workdir = str(tmp_path / "run")
  rep = TextPipeline(cfg, workdir, progress=False).run()
  check_run(workdir, rep, large=True)
  assert rep["verifier"]["prm_type"] == "value_model"
  # FLOPs-matched comparison with the larger checkpoint's greedy pass@1 (paper §7).
  assert rep["flops"]["M"] > 2 and rep["flops"]["pretrain_tokens"] == 1e6
  assert set(rep["flops_matched"]) == {"0.16", "0.79", "22"}
  assert 0.0 <= rep["large_model"]["pass_at_1"] <= 1.0
  assert len(io_utils.read_jsonl(os.path.join(workdir, "large_eval", "greedy.jsonl"))) == 8
  assert os.path.isfile(os.path.join(workdir, "plots", "flops_matched.png"))
  # A changed PRM config in the same workdir stops with the stage's name.
  from ttc_jax.pipeline import StageMismatchError

  cfg2 = config_lib.apply_overrides(cfg, ["verify.aggregation=min"])
  with pytest.raises(StageMismatchError, match="score_samples"):
    TextPipeline(cfg2, workdir, progress=False).run()


def test_missing_paths_name_the_field(assets, tmp_path, capsys):
  base = ["--config", GSM8K_CFG, "--workdir", str(tmp_path / "w")]
  assert run.main(base + tiny_overrides(assets) + ["--config.hf.policy="]) == 2
  assert "config.hf.policy is empty" in capsys.readouterr().err
  missing = str(tmp_path / "nope")
  assert run.main(base + tiny_overrides(assets) + [f"--config.hf.prm={missing}"]) == 2
  err = capsys.readouterr().err
  assert "config.hf.prm=" in err and missing in err and "not an existing directory" in err
  assert run.main(base + tiny_overrides(assets) + ["--config.data.manual_dir="]) == 2
  assert "config.data.manual_dir is empty" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize(
    "path,task,delim", [(GSM8K_CFG, "gsm8k", "\n"), (MATH_CFG, "math", "\n\n")]
)
def test_configs_load_and_validate(assets, path, task, delim):
  with pytest.raises(config_lib.ConfigError, match="config.data.manual_dir is empty"):
    config_lib.load_config(path)
  paths = [
      f"--config.hf.policy={assets['policy']}",
      f"--config.hf.prm={assets['token_prm']}",
      f"--config.data.manual_dir={assets['gsm8k']}",
  ]
  cfg = config_lib.load_config(path, paths)
  assert cfg.task.name == task and cfg.hf.step_delimiter == delim
  assert cfg.eval.max_new_tokens == 512 and 64 in cfg.search.budgets
  with pytest.raises(config_lib.ConfigError, match="pretrain_tokens"):
    config_lib.load_config(path, paths + [f"--config.hf.large_policy={assets['policy']}"])
  with pytest.raises(config_lib.ConfigError, match="prm_type"):
    config_lib.load_config(path, paths + ["--config.hf.prm_type=orm"])
  with pytest.raises(config_lib.ConfigError, match="prm_step_tag is empty"):
    config_lib.load_config(path, paths + ["--config.hf.prm_step_tag="])


def test_paragraph_steps_with_a_double_newline_delimiter(assets):
  """MATH-style steps: "\\n\\n" (one token) splits steps, single newlines stay inside one."""
  tok = HFTokenizer.from_file(assets["policy"], step_delimiter="\n\n")
  text = "Tom has 3 apples.\nHe buys 4.\n\n3+4=7.\n\n#### 7"
  assert evaluate.text_steps(text, "\n\n") == ["Tom has 3 apples.\nHe buys 4.", "3+4=7.", "#### 7"]
  assert evaluate.text_steps(text) == text.split("\n")  # arith default unchanged
  from ttc_jax.models import external_prm

  prm = external_prm.load_token_prm(
      assets["token_prm"],
      step_token_id=tok.id_of("<tag>"),
      good_token_id=tok.id_of("+"),
      bad_token_id=tok.id_of("-"),
      delimiter_ids=(tok.newline_id, tok.EOS),
  )
  scores = evaluate.score_solutions(
      prm, tok, ["Question: x\n"] * 2, [text, "one step"], batch_size=2
  )
  assert [len(s) for s in scores] == [3, 1]
  assert np.all((np.array(scores[0]) > 0) & (np.array(scores[0]) < 1))
