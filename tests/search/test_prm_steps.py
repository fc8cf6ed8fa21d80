"""An external PRM in the search, read in its model-card format: a Qwen2.5-Math-PRM-shaped
checkpoint (torch reference) whose tokenizer adds <extra_0> to a Qwen2-like BPE (the fast
path, `prm_steps.StepTagPRM`) or is another BPE altogether (the host bridge,
`bridge.BridgedPRM`). The policy is scripted and prompted with ChatML, whose <|im_end|> (the
policy's EOS) and newlines must not become step tags."""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from hf_toys import ScriptedLM, qwen2_like_tokenizer, save_qwen_prm  # noqa: E402
from ttc_jax.pipeline import text_context  # noqa: E402
from ttc_jax.prm import processbench_load  # noqa: E402
from ttc_jax.sampling import SamplingParams  # noqa: E402
from ttc_jax.search import beam, bridge, prm_steps, sweep  # noqa: E402
from ttc_jax.tokenizers.hf import HFTokenizer, chat_prompt  # noqa: E402

QUESTION = "Tom has 3 apples and buys 4. How many?"
SOLUTION = "Tom has 3 apples.\n\nHe buys $4$\n\nSo $3+4=7$.\n\nThe answer is 7."
STEPS = SOLUTION.split("\n\n")
CORPUS = [QUESTION + "\n" + SOLUTION, "Step one.\n\nStep two\n\nDone.\n", "x\n\ny\nz.\n"] * 30
OTHER = ["apples and pears, 3 + 4 = 7; buys more.\n\n", "How many? Seven $7$\n\n"] * 40
QWEN_CONF = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
KW = dict(max_rounds=6, max_step_tokens=10, max_new_tokens=40, temperature=1.0)


def _save_tokenizer(raw, path, extra=()):
  if extra:
    raw.add_special_tokens(list(extra))
  path.mkdir(exist_ok=True)
  raw.save(str(path / "tokenizer.json"))
  json.dump(QWEN_CONF, open(path / "tokenizer_config.json", "w"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("prm_steps")
  _save_tokenizer(qwen2_like_tokenizer(CORPUS), root / "policy")
  _save_tokenizer(qwen2_like_tokenizer(CORPUS), root / "prm", ["<extra_0>"])
  _save_tokenizer(qwen2_like_tokenizer(OTHER), root / "other_prm", ["<extra_0>"])
  refs = {}
  for name in ("prm", "other_prm"):
    n = HFTokenizer.from_file(str(root / name)).vocab_size
    refs[name] = save_qwen_prm(root / name, -(-n // 8) * 8, seed=3)
  tok = HFTokenizer.from_file(str(root / "policy"), step_delimiter="\n\n")
  prompt = chat_prompt([dict(role="user", content=QUESTION)])
  ids = tok.encode(prompt, add_bos=True)
  policy = ScriptedLM(ids + tok.encode(SOLUTION) + [tok.EOS], -(-tok.vocab_size // 8) * 8)
  return dict(root=root, refs=refs, tok=tok, prompt=prompt, policy=policy)


def _cfg(assets, prm: str):
  hf = dict(
      policy=str(assets["root"] / "policy"),
      tokenizer="",
      prm=str(assets["root"] / prm),
      prm_type="classifier",
      prm_step_tag="<extra_0>",
      prm_positive_class=1,
      prm_good_token="+",
      prm_bad_token="-",
      param_dtype="float32",
      dtype="",
      max_len=256,
  )
  return ml_collections.ConfigDict(dict(hf=hf))


def _model_card_scores(assets, prm: str, steps=STEPS):
  """Qwen2.5-Math-PRM's own recipe: system/user/assistant chat, steps joined and ended by
  <extra_0>, P(positive) at each <extra_0> (torch)."""
  raw = HFTokenizer.from_file(str(assets["root"] / prm))._tok
  system = processbench_load.SYSTEM
  text = chat_prompt(
      [dict(role="system", content=system), dict(role="user", content=QUESTION)]
  ) + "".join(s + "<extra_0>" for s in steps)
  ids = raw.encode(text, add_special_tokens=False).ids
  probs = assets["refs"][prm](ids)
  return probs[[i for i, t in enumerate(ids) if t == raw.token_to_id("<extra_0>")]]


def _search(
    assets, search_prm, final_completion=False, max_rounds=6, method="beam_m4", share_prefix=True
):
  tok = assets["tok"]
  problems = [dict(prompt=assets["prompt"], question=QUESTION, answer="7")]
  plen, kw = sweep.kernel_args(
      assets["policy"], tok, [assets["prompt"]], **dict(KW, max_rounds=max_rounds)
  )
  toks, lens = tok.encode_batch([assets["prompt"]], plen, add_bos=True)
  kw.update(sweep.prm_prompt_arrays(search_prm, problems), final_completion=final_completion)
  kw.update(share_prefix=share_prefix)
  spec = sweep.plan(method, 4)
  return sweep._run_kernel(
      method, assets["policy"], search_prm, toks, lens, jax.random.key(0), spec, kw
  )


def test_fast_path_reads_steps_in_the_prm_format(assets):
  """Shared vocabulary (the PRM only adds <extra_0>): the kernel feeds the PRM its own chat
  prompt and the policy's steps with ".\\n\\n" -> "." <extra_0>, "$\\n\\n" -> "$" <extra_0>,
  EOS -> <extra_0>; its step scores are the model card's."""
  loaded = text_context.load_external_prm(_cfg(assets, "prm"), None)
  assert loaded.tokenizer.vocab_size == assets["tok"].vocab_size + 1  # <extra_0> added
  assert loaded.model.step_token_id == loaded.tokenizer._tok.token_to_id("<extra_0>")
  sp = text_context.search_prm(loaded, assets["tok"])
  assert isinstance(sp, prm_steps.StepTagPRM) and sp.extra_per_step >= 1
  res = _search(assets, sp)
  gen = np.asarray(res.tokens[0, 0, : int(res.lengths[0, 0])])
  assert assets["tok"].decode(gen) == SOLUTION and bool(res.finished.all())
  assert (np.asarray(res.num_steps) == 4).all()
  want = _model_card_scores(assets, "prm")
  np.testing.assert_allclose(res.step_scores[0, 0, :4], want, atol=2e-5)
  # the PRM's own (longer) prompt held once per question, or copied per beam: the same search
  plain = _search(assets, sp, final_completion=True, share_prefix=False)
  shared = _search(assets, sp, final_completion=True)
  for f in ("tokens", "lengths", "num_steps", "prm_tokens", "prm_flops"):
    np.testing.assert_array_equal(getattr(plain, f), getattr(shared, f), err_msg=f)
  np.testing.assert_allclose(plain.step_scores, shared.step_scores, atol=1e-5)
  # the host scoring of samples (score_samples, processbench) reads the same format
  got, _ = processbench_load.score_items(loaded, [dict(problem=QUESTION, steps=STEPS)])
  np.testing.assert_allclose(got[0], want, atol=2e-5)


def test_bridge_re_encodes_steps_with_the_prms_own_tokenizer(assets):
  """Another vocabulary: steps decoded with the policy's tokenizer, re-encoded with the
  PRM's (the search rounds on the host); the scores are still the model card's."""
  loaded = text_context.load_external_prm(_cfg(assets, "other_prm"), None)
  assert not prm_steps.shares_vocabulary(assets["tok"], loaded.tokenizer)
  sp = text_context.search_prm(loaded, assets["tok"])
  assert isinstance(sp, bridge.BridgedPRM)
  res = _search(assets, sp)
  gen = np.asarray(res.tokens[0, 0, : int(res.lengths[0, 0])])
  assert assets["tok"].decode(gen) == SOLUTION and bool(res.finished.all())
  assert (np.asarray(res.num_steps) == 4).all() and int(res.rounds) == 4
  np.testing.assert_allclose(
      res.step_scores[0, 0, :4], _model_card_scores(assets, "other_prm"), atol=2e-5
  )
  assert res.prm_tokens[0] > 0 and res.prm_flops[0] > 0


@pytest.mark.parametrize(
    "method,final_completion",
    [("beam_m4", False), ("beam_m4", True), ("lookahead_k1", False), ("dvts", True)],
)
def test_bridge_equals_the_kernel_on_a_shared_vocabulary(assets, method, final_completion):
  """With one vocabulary and text that re-encodes to the policy's tokens, the host bridge is
  the kernel: same beams, steps, scores and budgets (also with the final completion)."""
  loaded = text_context.load_external_prm(_cfg(assets, "prm"), None)
  tok, rounds = assets["tok"], 2 if final_completion else 6
  ids = tok.encode(assets["prompt"], add_bos=True) + tok.encode(SOLUTION) + [tok.EOS]
  four, seven = ids.index(tok.encode("4")[0], len(ids) - 20), len(ids) - 3  # "$4$", "7."
  branch = {t - 1: {ids[t]: 0.5, tok.encode(d)[0]: 0.5} for t, d in ((four, "5"), (seven, "8"))}
  vocab = -(-tok.vocab_size // 8) * 8
  branching = dict(assets, policy=ScriptedLM(ids, vocab, choices=branch))
  fast = _search(branching, text_context.search_prm(loaded, tok), final_completion, rounds, method)
  host = _search(branching, bridge.BridgedPRM(loaded, tok), final_completion, rounds, method)
  n = fast.tokens.shape[1]
  texts = {tok.decode(np.asarray(fast.tokens[0, i, : int(fast.lengths[0, i])])) for i in range(n)}
  assert len(texts) > 1  # the beams really differ
  for f in ("tokens", "lengths", "num_steps", "finished", "rounds", "generated_tokens"):
    np.testing.assert_array_equal(np.asarray(getattr(host, f)), np.asarray(getattr(fast, f)), f)
  for f in ("policy_tokens", "prm_tokens", "generations"):
    np.testing.assert_array_equal(np.asarray(getattr(host, f)), np.asarray(getattr(fast, f)), f)
  np.testing.assert_allclose(host.step_scores, fast.step_scores, atol=2e-5)
  np.testing.assert_allclose(host.prm_flops, fast.prm_flops, rtol=1e-6)
  assert int(fast.num_steps[0, 0]) == (3 if final_completion else 4)


def test_step_rewrites_and_vocabulary_checks(assets):
  loaded = text_context.load_external_prm(_cfg(assets, "prm"), None)
  tok, prm_tok = assets["tok"], loaded.tokenizer
  tag = loaded.model.step_token_id
  table = prm_steps.step_rewrites(tok, prm_tok, loaded.model, "<extra_0>")
  assert set(table) == set(tok.delimiter_ids) | set(tok.eos_ids)
  dot = tok.encode(".\n\n")[0]
  assert table[dot] == (tuple(prm_tok.encode(".")) + (tag,), 1)
  assert table[tok.newline_id] == ((tag,), 0) and table[tok.EOS] == ((tag,), 0)
  assert prm_steps.shares_vocabulary(tok, prm_tok) and not prm_steps.shares_vocabulary(prm_tok, tok)
  assert prm_steps.piece_ids(prm_tok, "") == []


def test_math_shepherd_format_in_the_kernel(assets, tmp_path):
  """A token_prob PRM (Math-Shepherd: "{question} " then "step ки" lines, P(+) vs P(-) at
  ки): the kernel's rewritten "\\n" steps (".\\n" -> "." " ки" "\\n", read at ки) score what
  the host scoring of the same lines in that format gives."""
  import torch
  import transformers

  raw = HFTokenizer.from_file(str(assets["root"] / "policy"))._tok
  raw.add_tokens(["ки"])  # a plain token, as in Math-Shepherd's vocabulary
  _save_tokenizer(raw, tmp_path / "shepherd")
  conf = transformers.LlamaConfig(
      vocab_size=-(-raw.get_vocab_size() // 8) * 8,
      hidden_size=32,
      intermediate_size=48,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=512,
  )
  torch.manual_seed(5)
  transformers.LlamaForCausalLM(conf).save_pretrained(str(tmp_path / "shepherd"))
  cfg = _cfg(assets, "prm")
  cfg.hf.update(prm=str(tmp_path / "shepherd"), prm_type="token_prob", prm_step_tag="ки")
  loaded = text_context.load_external_prm(cfg, None)
  tok = HFTokenizer.from_file(str(assets["root"] / "policy"), step_delimiter="\n")
  lines = SOLUTION.replace("\n\n", "\n")
  ids = tok.encode(assets["prompt"]) + tok.encode(lines) + [tok.EOS]
  sp = text_context.search_prm(loaded, tok)
  dot = tok.encode(".\n")[0]
  tag = loaded.model.step_token_id
  assert sp.prompt_ids(QUESTION) == loaded.tokenizer.encode(QUESTION + " ")
  table = prm_steps.step_rewrites(tok, loaded.tokenizer, loaded.model, "ки")
  assert table[dot][0][-2:] == (tag, tok.newline_id) and table[dot][1] == len(table[dot][0]) - 2
  shepherd = dict(assets, tok=tok, policy=ScriptedLM(ids, -(-tok.vocab_size // 8) * 8))
  res = _search(shepherd, sp)
  assert bool(res.finished.all()) and (np.asarray(res.num_steps) == 4).all()
  want, _ = processbench_load.score_items(loaded, [dict(problem=QUESTION, steps=lines.split("\n"))])
  np.testing.assert_allclose(res.step_scores[0, 0, :4], want[0], atol=2e-5)
  host = _search(shepherd, bridge.BridgedPRM(loaded, tok))
  np.testing.assert_allclose(host.step_scores, res.step_scores, atol=2e-5)
