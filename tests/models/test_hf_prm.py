"""External PRM adapters against PyTorch references on tiny random models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ttc_jax.models import external_prm  # noqa: E402
from ttc_jax.prm import evaluate  # noqa: E402
from ttc_jax.tokenizers import CharTokenizer  # noqa: E402

V, STEP, GOOD, BAD, DELIM = 64, 5, 10, 11, 7
CONF = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)


def randomize(module, seed):
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      p.copy_(torch.rand_like(p) + 0.5 if "norm" in name else torch.randn_like(p) * 0.2)
  return module.eval()


def tokens_with_tags(seed=0, b=3, t=16):
  rng = np.random.default_rng(seed)
  toks = rng.integers(12, V, size=(b, t))
  toks[:, 4::5] = STEP  # a step tag every five tokens
  return toks


jscore = jax.jit(lambda m, x, n: m.score(x, n))
jextend = jax.jit(lambda m, c, x, n: m.extend(c, x, n))


def prob_positive(logits):  # torch [B,T,C] -> numpy [B,T]
  return torch.softmax(logits.float(), -1)[..., 1].numpy()


@pytest.fixture(scope="module")
def token_cls(tmp_path_factory):
  """A Qwen2ForTokenClassification (2 classes): one linear head."""
  model = randomize(
      transformers.Qwen2ForTokenClassification(transformers.Qwen2Config(num_labels=2, **CONF)), 0
  )
  path = str(tmp_path_factory.mktemp("tokcls"))
  model.save_pretrained(path, safe_serialization=True)
  return model, path


@pytest.fixture(scope="module")
def qwen_prm(tmp_path_factory):
  """Qwen2.5-Math-PRM layout: Qwen2Model + score = Linear, ReLU, Linear(d, 2)."""
  from safetensors.torch import save_file

  conf = transformers.Qwen2Config(**CONF)
  body = randomize(transformers.Qwen2Model(conf), 1)
  head = randomize(
      torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)), 2
  )
  path = tmp_path_factory.mktemp("qwenprm")
  conf.save_pretrained(str(path))
  tensors = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
  tensors.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
  save_file(tensors, str(path / "model.safetensors"))

  def reference(tokens):
    with torch.no_grad():
      h = body(torch.tensor(tokens)).last_hidden_state
      return prob_positive(head(h))

  return reference, str(path)


@pytest.fixture(scope="module")
def shepherd(tmp_path_factory):
  """A Llama causal LM read Math-Shepherd style."""
  model = randomize(
      transformers.LlamaForCausalLM(transformers.LlamaConfig(tie_word_embeddings=False, **CONF)), 3
  )
  path = str(tmp_path_factory.mktemp("shepherd"))
  model.save_pretrained(path, safe_serialization=True)
  return model, path


def test_classifier_head_matches_token_classification(token_cls):
  model, path = token_cls
  prm = external_prm.load_classifier_prm(path, step_token_id=STEP)
  toks = tokens_with_tags()
  with torch.no_grad():
    ref = prob_positive(model(torch.tensor(toks)).logits)
  lengths = np.array([16, 16, 9])
  got = np.asarray(jscore(prm, jnp.asarray(toks), jnp.asarray(lengths)))
  mask = np.arange(16)[None] < lengths[:, None]
  np.testing.assert_allclose(got[mask], ref[mask], atol=1e-5)  # causal: padding is invisible
  assert (got[~mask] == 0).all() and ref.std() > 0.05
  scores = external_prm.step_scores(prm, toks, lengths)
  assert [len(s) for s in scores] == [3, 3, 1]
  np.testing.assert_allclose(scores[0], ref[0, [4, 9, 14]], atol=1e-5)


def test_qwen_math_prm_two_layer_head_and_delimiter_remap(qwen_prm):
  reference, path = qwen_prm
  prm = external_prm.load_classifier_prm(path, step_token_id=STEP, delimiter_ids=(DELIM,))
  assert len(prm.head_w) == 2 and prm.head_w[0][...].shape == (32, 32)
  toks = tokens_with_tags(1)
  ours = np.where(toks == STEP, DELIM, toks)  # our delimiter where the PRM wants its tag
  got = np.asarray(jscore(prm, jnp.asarray(ours), jnp.full((3,), 16)))
  np.testing.assert_allclose(got, reference(toks), atol=1e-5)
  assert np.asarray(prm.step_mask(jnp.asarray(ours), jnp.full((3,), 16))).sum() == 9


def test_extend_with_cache_matches_score(qwen_prm):
  prm = external_prm.load_classifier_prm(qwen_prm[1], step_token_id=STEP)
  toks = jnp.asarray(tokens_with_tags(2))
  full = jscore(prm, toks, jnp.full((3,), 16))
  cache = prm.init_cache(3, 24)
  first = jnp.array([5, 10, 7])  # ragged prefixes
  v1, l1, cache = jextend(prm, cache, toks[:, :10], first)
  np.testing.assert_allclose(v1, full[jnp.arange(3), first - 1], atol=1e-5)
  np.testing.assert_allclose(jax.nn.sigmoid(l1), v1, atol=1e-6)
  rest = jnp.stack([toks[b, int(first[b]) : int(first[b]) + 6] for b in range(3)])
  v2, _, cache = jextend(prm, cache, rest, jnp.array([6, 6, 6]))
  np.testing.assert_allclose(v2, full[jnp.arange(3), first + 5], atol=1e-5)
  np.testing.assert_array_equal(cache["index"], first + 6)


@pytest.mark.parametrize("tied", [False, True])
def test_token_prob_prm_matches_math_shepherd(shepherd, tmp_path, tied):
  model, path = shepherd
  if tied:
    model = randomize(
        transformers.LlamaForCausalLM(transformers.LlamaConfig(tie_word_embeddings=True, **CONF)), 4
    )
    path = str(tmp_path)
    model.save_pretrained(path, safe_serialization=True)
  prm = external_prm.load_token_prm(path, step_token_id=STEP, good_token_id=GOOD, bad_token_id=BAD)
  toks = tokens_with_tags(3)
  with torch.no_grad():
    logits = model(torch.tensor(toks)).logits[..., [GOOD, BAD]]
  ref = torch.softmax(logits, -1)[..., 0].numpy()
  got = np.asarray(jscore(prm, jnp.asarray(toks), jnp.full((3,), 16)))
  np.testing.assert_allclose(got, ref, atol=1e-5)
  assert ref.std() > 0.05
  scores = external_prm.step_scores(prm, toks, [16, 16, 16])
  np.testing.assert_allclose(scores[1], ref[1, [4, 9, 14]], atol=1e-5)


def test_score_solutions_uses_adapter(shepherd):
  """The repo's PRM evaluation reads an adapter at our newline/EOS step ends."""
  tok = CharTokenizer()
  tag = 40  # outside the character vocabulary
  assert tok.vocab_size <= tag < V
  prm = external_prm.load_token_prm(
      shepherd[1],
      step_token_id=tag,
      good_token_id=GOOD,
      bad_token_id=BAD,
      delimiter_ids=(tok.newline_id, tok.EOS),
  )
  prompts, texts = ["1+2=", "3*4="], ["1+2=3\nAnswer: 3\n", "3*4=12\n12\nAnswer: 12"]
  got = evaluate.score_solutions(prm, tok, prompts, texts, batch_size=4)
  assert [len(g) for g in got] == [2, 3]
  for p, t, g in zip(prompts, texts, got):
    ids = [tok.BOS] + tok.encode(p)
    for k, line in enumerate(evaluate.text_steps(t)):
      ids += tok.encode(line) + [tag]  # the PRM's own format
    want = external_prm.step_scores(prm, np.array([ids]), [len(ids)])[0]
    np.testing.assert_allclose(g, want, atol=1e-5)


def test_errors(token_cls, shepherd, tmp_path):
  with pytest.raises(ValueError, match="step_token_id=99 is outside the vocabulary"):
    external_prm.load_classifier_prm(token_cls[1], step_token_id=99)
  with pytest.raises(ValueError, match="positive_class=2 but the head has 2 classes"):
    external_prm.load_classifier_prm(token_cls[1], step_token_id=STEP, positive_class=2)
  with pytest.raises(ValueError, match="no classification head in the checkpoint"):
    external_prm.load_classifier_prm(shepherd[1], step_token_id=STEP)
  with pytest.raises(ValueError, match="bad_token_id=64 is outside the vocabulary"):
    external_prm.load_token_prm(shepherd[1], step_token_id=STEP, good_token_id=GOOD, bad_token_id=V)


def test_remap_reads_generated_positions_only(qwen_prm):
  """A prompt's own delimiter / turn-end ids stay what they are; only generated ones (from
  prompt_lengths on, or what `extend` appends) become step tags; `extend_prompt` reads text
  as it is."""
  reference, path = qwen_prm
  prm = external_prm.load_classifier_prm(path, step_token_id=STEP, delimiter_ids=(DELIM,))
  toks = tokens_with_tags(4)
  ours = np.where(toks == STEP, DELIM, toks)
  ours[:, 1] = DELIM  # a delimiter inside each prompt (the first 3 tokens)
  prompt_len = jnp.full((3,), 3)
  want = toks.copy()
  want[:, 1] = DELIM  # the PRM must read the prompt's own token there, not a tag
  got = np.asarray(
      jax.jit(lambda m, x, n, p: m.score(x, n, p))(
          prm, jnp.asarray(ours), jnp.full((3,), 16), prompt_len
      )
  )
  np.testing.assert_allclose(got, reference(want), atol=1e-5)
  mask = np.asarray(prm.step_mask(jnp.asarray(ours), jnp.full((3,), 16), prompt_len))
  assert not mask[:, 1].any() and mask.sum() == 9
  # incremental: the prompt through extend_prompt, the rest through extend
  cache = prm.init_cache(3, 24)
  _, _, cache = jax.jit(lambda m, c, x, n: m.extend_prompt(c, x, n))(
      prm, cache, jnp.asarray(ours[:, :3]), prompt_len
  )
  v, _, cache = jextend(prm, cache, jnp.asarray(ours[:, 3:]), jnp.full((3,), 13))
  np.testing.assert_allclose(v, reference(want)[:, -1], atol=1e-5)
