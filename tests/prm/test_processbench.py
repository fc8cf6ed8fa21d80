"""ProcessBench: the metric, per-adapter step formatting, the CLI on tiny random PRMs."""

import json
import os

import numpy as np
import pytest

from ttc_jax.prm import processbench
from conftest import REPO_ROOT

DATA = processbench.default_data_dir()
HAVE_DATA = all(os.path.isfile(os.path.join(DATA, f"{s}.json")) for s in processbench.SPLITS)


# ----------------------------------------------------------------------------- metric
def test_metric_on_hand_made_predictions():
  labels = [2, 0, -1, -1, 1, -1]
  preds = [2, 1, -1, 0, 1, -1]  # erroneous: 2 of 3 right; correct: 2 of 3 right
  m = processbench.split_metrics(preds, labels)
  assert m["acc_err"] == pytest.approx(2 / 3) and m["acc_cor"] == pytest.approx(2 / 3)
  assert m["f1"] == pytest.approx(2 / 3) and (m["erroneous"], m["correct"]) == (3, 3)
  m = processbench.split_metrics([0, -1, -1], [1, -1, -1])  # acc_err 0 -> F1 0
  assert (m["acc_err"], m["acc_cor"], m["f1"]) == (0.0, 1.0, 0.0)
  m = processbench.split_metrics([3, -1], [3, 0])
  assert m["acc_err"] == 0.5 and np.isnan(m["acc_cor"])  # no correct items
  with pytest.raises(ValueError, match="2 predictions for 3 labels"):
    processbench.split_metrics([1, 2], [1, 2, 3])


def test_first_error_and_threshold_choice():
  assert processbench.first_error([0.9, 0.4, 0.2], 0.5) == 1
  assert processbench.first_error([0.9, 0.6], 0.5) == -1
  assert processbench.first_error([0.3], 0.3) == -1  # "below" is strict
  scores = [[0.9, 0.35, 0.1], [0.8, 0.7], [0.45, 0.9]]
  labels = [1, -1, 0]
  t = processbench.choose_threshold(scores, labels)
  assert 0.45 < t <= 0.7  # all three right in (0.45, 0.7]
  assert processbench.metrics_at(scores, labels, t)["f1"] == 1.0
  assert t == 0.46  # ties go to the smallest


def test_summary_chooses_threshold_on_the_other_split():
  scores = {"gsm8k": [[0.9, 0.2], [0.9, 0.8]], "math": [[0.7, 0.6], [0.65, 0.9]]}
  labels = {"gsm8k": [1, -1], "math": [1, -1]}
  out = processbench.summarize(scores, labels, ["gsm8k"])
  g = out["splits"]["gsm8k"]
  t_math = processbench.choose_threshold(scores["math"], labels["math"])
  assert g["threshold"] == t_math and g["threshold_source"] == "chosen (max F1) on math"
  assert g["f1"] == processbench.metrics_at(scores["gsm8k"], labels["gsm8k"], t_math)["f1"]
  both = processbench.summarize(scores, labels, ["gsm8k", "math"], threshold=0.5)
  assert both["threshold"] == 0.5 and both["threshold_source"] == "given"
  f1s = [both["splits"][s]["f1"] for s in ("gsm8k", "math")]
  assert both["f1_mean"] == pytest.approx(np.mean(f1s))  # unweighted mean over splits
  with pytest.raises(ValueError, match="no split other than gsm8k"):
    processbench.summarize({"gsm8k": scores["gsm8k"]}, labels, ["gsm8k"])


# ----------------------------------------------------------------------------- data
def test_missing_data_gives_a_clear_error(tmp_path, capsys):
  missing = tmp_path / "nowhere"
  with pytest.raises(processbench.DataError, match=str(missing)):
    processbench.load_split("gsm8k", str(missing))
  assert (
      processbench.main(["--prm", str(tmp_path), "--split", "math", "--data-dir", str(missing)])
      == 2
  )
  err = capsys.readouterr().err
  assert str(missing) in err and "Traceback" not in err
  (tmp_path / "gsm8k.json").write_text("[]")
  assert (
      processbench.main(
          [
              "--prm",
              str(tmp_path),
              "--split",
              "math",
              "--threshold",
              "0.5",
              "--data-dir",
              str(tmp_path),
          ]
      )
      == 2
  )
  assert str(tmp_path / "math.json") in capsys.readouterr().err
  (tmp_path / "math.json").write_text(json.dumps([{"problem": "p", "steps": ["a"], "label": 3}]))
  with pytest.raises(processbench.DataError, match="item 0 needs"):
    processbench.load_split("math", str(tmp_path))


@pytest.mark.skipif(not HAVE_DATA, reason=f"ProcessBench data not found in {DATA}")
def test_shared_data_has_both_splits():
  g, m = processbench.load_split("gsm8k"), processbench.load_split("math")
  assert (len(g), len(m)) == (400, 1000)
  assert {it["label"] == -1 for it in g} == {True, False}


# ----------------------------------------------------------------------------- formatting
@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  pytest.importorskip("tokenizers")
  from hf_toys import bpe_tokenizer

  corpus = ["Tom has 3 apples.", "So 3+4=7.\nThe answer is 7.", "What is 3+4?"]
  if HAVE_DATA:
    corpus += [
        it["problem"] + "\n".join(it["steps"])
        for it in processbench.load_split("gsm8k", limit=20)
        + processbench.load_split("math", limit=20)
    ]
  path = tmp_path_factory.mktemp("pbtok")
  bpe_tokenizer(corpus, ["<tag>"]).save(str(path / "tokenizer.json"))
  return str(path)


def _tiny_cfg(vocab):
  from conftest import tiny_config

  return tiny_config(vocab_size=vocab, max_len=1024)


def test_step_formats_per_adapter(tok_dir):
  import dataclasses
  from flax import nnx
  from ttc_jax.tokenizers.hf import HFTokenizer
  from ttc_jax.models import external_prm
  from ttc_jax.models.reward import ValueModel
  from ttc_jax.prm.processbench_load import LoadedPRM, plain_prompt

  tok = HFTokenizer.from_file(tok_dir)
  tag, enc = tok.id_of("<tag>"), tok.encode
  cfg = _tiny_cfg(tok.vocab_size)
  steps = ["Tom has 3 apples.", "So 3+4=7.\nThe answer is 7."]
  prompt = plain_prompt("Q: {problem}\n")
  shape = nnx.eval_shape  # formatting needs no parameters
  cls = LoadedPRM(
      shape(
          lambda: external_prm.ClassifierPRM(cfg, [(32, 2)], step_token_id=tag, rngs=nnx.Rngs(0))
      ),
      tok,
      "classifier",
      prompt,
  )
  ids, pos = cls.encode("What is 3+4?", steps)  # Qwen2.5-Math-PRM: step<tag>step<tag>
  assert ids == enc("Q: What is 3+4?\n") + enc(steps[0]) + [tag] + enc(steps[1]) + [tag]
  assert [ids[p] for p in pos] == [tag, tag] and pos[-1] == len(ids) - 1
  from ttc_jax.models.transformer import Transformer

  lm = shape(lambda: Transformer(cfg, rngs=nnx.Rngs(1)))
  shep = LoadedPRM(
      external_prm.TokenProbPRM(lm, step_token_id=tag, good_token_id=5, bad_token_id=6),
      tok,
      "token_prob",
      prompt,
  )
  ids, pos = shep.encode("What is 3+4?", steps)  # Math-Shepherd: BOS, "step <tag>\n"
  assert ids == (
      [tok.BOS]
      + enc("Q: What is 3+4?\n")
      + enc(steps[0] + " ")
      + [tag]
      + enc("\n")
      + enc(steps[1] + " ")
      + [tag]
  )
  assert [ids[p] for p in pos] == [tag, tag]
  vm = LoadedPRM(shape(lambda: ValueModel(cfg, rngs=nnx.Rngs(2))), tok, "value_model", prompt)
  ids, pos = vm.encode("What is 3+4?", steps)  # ours: BOS prompt s0 \n s1 EOS
  want = (
      [tok.BOS]
      + enc("Q: What is 3+4?\n")
      + enc(steps[0])
      + [tok.newline_id]
      + enc("So 3+4=7. The answer is 7.")
      + [tok.EOS]
  )
  assert ids == want and [ids[p] for p in pos] == [tok.newline_id, tok.EOS]
  # with the tag's text, the solution is one string (as the PRMs' own code encodes it)
  joint = dataclasses.replace(shep, tag_text="<tag>")
  ids, pos = joint.encode("What is 3+4?", steps)
  assert ids == [tok.BOS] + enc(f"Q: What is 3+4?\n{steps[0]} <tag>\n{steps[1]} <tag>")
  assert [ids[p] for p in pos] == [tag, tag] and pos[-1] == len(ids) - 1
  ids, pos = dataclasses.replace(cls, tag_text="<tag>").encode("What is 3+4?", steps)
  assert ids == enc(f"Q: What is 3+4?\n{steps[0]}<tag>{steps[1]}<tag>") and len(pos) == 2
  tricky = ["a <tag> inside", "b"]  # the steps' own text holds the tag:
  ids, pos = joint.encode("p", tricky)  # encoded piece by piece instead
  first = [tok.BOS] + enc("Q: p\n") + enc("a <tag> inside ") + [tag]
  assert ids == first + enc("\n") + enc("b ") + [tag]
  assert pos == [len(first) - 1, len(ids) - 1]
  remapping = shape(
      lambda: external_prm.ClassifierPRM(
          cfg, [(32, 2)], step_token_id=tag, delimiter_ids=(7,), rngs=nnx.Rngs(0)
      )
  )
  with pytest.raises(ValueError, match="delimiter_ids"):
    remapping.format_steps(tok, "p", steps)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def classifier_dir(tok_dir, tmp_path_factory):
  """A random 1-layer Llama backbone + a 2-class `score` head (Qwen2.5-Math-PRM layout),
  written with the project's own safetensors writer (no torch needed)."""
  import shutil
  from ttc_jax.tokenizers.hf import HFTokenizer
  from ttc_jax.models import hf, safetensors_io
  from ttc_jax.models.transformer import create_model

  vocab = HFTokenizer.from_file(tok_dir).vocab_size
  path = str(tmp_path_factory.mktemp("pbprm"))
  from conftest import tiny_config

  hf.save_model(
      create_model(tiny_config(vocab_size=vocab, num_layers=1, max_len=512), 0),
      path,
      model_type="llama",
  )
  _, reader = hf.open_checkpoint(path)
  tensors = {k: reader.get(k) for k in reader.keys()}
  rng = np.random.default_rng(0)
  tensors.update(
      {
          "score.weight": rng.normal(0, 0.5, (2, 32)).astype(np.float32),
          "score.bias": np.zeros((2,), np.float32),
      }
  )
  safetensors_io.write_safetensors(os.path.join(path, "model.safetensors"), tensors)
  shutil.copy(os.path.join(tok_dir, "tokenizer.json"), os.path.join(path, "tokenizer.json"))
  return path


@pytest.mark.skipif(not HAVE_DATA, reason=f"ProcessBench data not found in {DATA}")
def test_cli_end_to_end_on_a_tiny_random_classifier(classifier_dir, capsys):
  from ttc_jax.models import external_prm
  from ttc_jax.prm import processbench_load

  argv = [
      "--prm",
      classifier_dir,
      "--split",
      "gsm8k",
      "--limit",
      "3",
      "--step-tag",
      "<tag>",
      "--max-len",
      "512",
      "--prompt-template",
      "{problem}\n",
      "--batch-size",
      "4",
      "--max-batch-tokens",
      "600",
  ]  # 512-token rows one at a time
  assert processbench.main(argv) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["prm_type"] == "classifier" and out["scored_splits"] == ["gsm8k", "math"]
  g = out["splits"]["gsm8k"]
  assert g["items"] == 3 and g["threshold_source"] == "chosen (max F1) on math"
  # the same figures from step scores computed independently (adapter's step_scores)
  prm = processbench_load.load_prm(
      classifier_dir, step_tag="<tag>", max_len=512, prompt_template="{problem}\n"
  )
  scores = {}
  for split in ("gsm8k", "math"):
    items = processbench.load_split(split, limit=3)
    scores[split] = []
    for it in items:
      ids, pos = prm.encode(it["problem"], it["steps"])
      ids = ids[:512]
      s = external_prm.step_scores(prm.model, np.array([ids]), [len(ids)])[0]
      scores[split].append(s[: sum(p < 512 for p in pos)])
  labels = {s: [it["label"] for it in processbench.load_split(s, limit=3)] for s in scores}
  want = processbench.summarize(scores, labels, ["gsm8k"])["splits"]["gsm8k"]
  assert g["threshold"] == want["threshold"]
  for k in ("acc_err", "acc_cor", "f1"):
    assert g[k] == (None if want[k] != want[k] else pytest.approx(want[k]))
  assert out["f1_mean"] == g["f1"]
  assert g["truncated"] == sum(
      len(s) < len(it["steps"])
      for s, it in zip(scores["gsm8k"], processbench.load_split("gsm8k", limit=3))
  )


@pytest.mark.skipif(not HAVE_DATA, reason=f"ProcessBench data not found in {DATA}")
def test_cli_with_our_value_model_and_a_given_threshold(classifier_dir, tok_dir, tmp_path, capsys):
  from flax import nnx
  from ttc_jax.tokenizers.hf import HFTokenizer
  from ttc_jax.models import hf_config
  from ttc_jax.models.reward import create_value_model
  from ttc_jax.train.checkpoint import Checkpointer

  cfg = hf_config.config_from_hf(
      json.load(open(os.path.join(classifier_dir, "config.json"))), max_len=512
  )
  ck = Checkpointer(str(tmp_path / "vm" / "model"), max_to_keep=1, async_save=False)
  ck.save(
      0,
      nnx.state(create_value_model(cfg, seed=1)),
      dict(kind="prm", tokenizer=HFTokenizer.from_file(tok_dir).fingerprint()),
      force=True,
  )
  ck.close()
  argv = [
      "--prm",
      str(tmp_path / "vm"),
      "--split",
      "all",
      "--limit",
      "2",
      "--threshold",
      "0.5",
      "--prm-base",
      classifier_dir,
      "--tokenizer",
      tok_dir,
      "--max-len",
      "512",
      "--batch-size",
      "4",
  ]
  assert processbench.main(argv) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["prm_type"] == "value_model" and out["threshold"] == 0.5
  assert set(out["splits"]) == {"gsm8k", "math"} and out["threshold_source"] == "given"
  assert all(out["splits"][s]["threshold"] == 0.5 for s in out["splits"])
  assert (
      processbench.main(["--prm", str(tmp_path / "vm"), "--split", "gsm8k", "--threshold", "0.5"])
      == 2
  )
  assert "--prm-base" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_DATA, reason=f"ProcessBench data not found in {DATA}")
def test_text_pipeline_stage_reports_processbench(classifier_dir, tmp_path, capsys):
  from ttc_jax import config as config_lib
  from ttc_jax.pipeline.text import TextPipeline

  root = REPO_ROOT
  manual = tmp_path / "gsm8k"
  manual.mkdir()
  pytest.importorskip("tensorflow_datasets")  # the data sections' fingerprint
  for split in ("train", "test"):
    (manual / f"{split}.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}))
  base = [
      f"hf.policy={classifier_dir}",
      f"hf.prm={classifier_dir}",
      "hf.prm_step_tag=<tag>",
      f"data.manual_dir={manual}",
      "hf.param_dtype=float32",
      "hf.max_len=512",
      "eval.max_new_tokens=16",
      "prompt.style=plain",
      "verify.score_batch=4",
  ]
  path = os.path.join(root, "configs", "gsm8k_hf.py")
  cfg = config_lib.load_config(path, base)
  assert TextPipeline(cfg, str(tmp_path / "off"), progress=False).stage_processbench() is None
  on = config_lib.load_config(
      path, base + [f"processbench.data_dir={DATA}", "processbench.limit=2"]
  )
  pipe = TextPipeline(on, str(tmp_path / "run"), progress=False)
  hash_of = config_lib.config_hash
  assert hash_of(pipe._prm_sections()) == hash_of(
      TextPipeline(cfg, str(tmp_path / "off"), progress=False)._prm_sections()
  )  # other stages unchanged
  out = pipe.stage_processbench()
  g = out["splits"]["gsm8k"]
  assert set(out["splits"]) == {"gsm8k"} and g["items"] == 2
  assert g["threshold_source"] == "chosen (max F1) on math" and 0 < g["threshold"] < 1
  saved = json.load(open(tmp_path / "run" / "processbench" / "eval.json"))
  assert saved["splits"] == out["splits"]
  capsys.readouterr()
  assert pipe.stage_processbench() == out
  assert "[processbench] done before" in capsys.readouterr().out
  with pytest.raises(config_lib.ConfigError, match="has no gsm8k.json"):
    config_lib.load_config(path, base + [f"processbench.data_dir={manual}"])
  with pytest.raises(config_lib.ConfigError, match="threshold <= 1"):
    config_lib.load_config(
        path, base + [f"processbench.data_dir={DATA}", "processbench.threshold=2.0"]
    )


def test_embedded_run_directory_value_model(tmp_path):
  """A run directory of the embedded pipeline: its PRM and character tokenizer load; text
  outside the arithmetic alphabet is unencodable (counted), and all of it is an error."""
  import dataclasses
  from flax import nnx
  from conftest import tiny_config
  from ttc_jax.models.reward import create_value_model
  from ttc_jax.prm import processbench_load
  from ttc_jax.tokenizers import CharTokenizer
  from ttc_jax.train.checkpoint import Checkpointer

  tok = CharTokenizer()
  cfg = tiny_config(vocab_size=tok.vocab_size, max_len=64)
  (tmp_path / "config.json").write_text(json.dumps({"model": dataclasses.asdict(cfg), "seed": 0}))
  ck = Checkpointer(str(tmp_path / "prm" / "model"), max_to_keep=1, async_save=False)
  ck.save(
      0,
      nnx.state(create_value_model(cfg, seed=0)),
      dict(kind="prm", tokenizer=tok.fingerprint()),
      force=True,
  )
  ck.close()
  prm = processbench_load.load_prm(str(tmp_path))
  assert prm.kind == "value_model" and prm.tokenizer == tok
  items = [
      dict(problem="1+2*3=", steps=["2*3=6", "1+6=7", "Answer: 7"], label=-1),
      dict(problem="Tom has 3 apples.", steps=["He eats one."], label=0),
  ]
  scores, counts = processbench_load.score_items(prm, items, batch_size=2)
  assert [len(s) for s in scores] == [3, 0] and counts == dict(truncated=0, unencodable=1)
  assert all(0 < v < 1 for v in scores[0])
  with pytest.raises(processbench_load.PRMLoadError, match="cannot encode any of the 1 items"):
    processbench_load.score_items(prm, items[1:])
