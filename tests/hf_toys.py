"""Tiny Hugging Face-style assets for CPU tests (no downloads): BPE tokenizers built with the
real tokenizer rules, a scripted policy, and PRM checkpoints in the public layouts."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from conftest import tiny_config


def bpe_tokenizer(corpus: Sequence[str], special_tokens: Sequence[str] = ()):
  """A byte-level BPE trained on `corpus`, with <pad>/<s>/</s> (ids 0, 1, 2), an added
  "\\n\\n" token (Llama-3/Qwen vocabularies have one; GPT-2's split regex keeps newlines
  apart) and any extra `special_tokens`."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=300,
      special_tokens=["<pad>", "<s>", "</s>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(list(corpus), trainer)
  tok.add_tokens([AddedToken("\n\n", normalized=False)])
  if special_tokens:
    tok.add_special_tokens(list(special_tokens))
  return tok


# The pre-tokenizer split of Qwen2's tokenizer.json (Llama-3's differs only in \p{N}{1,3}):
# punctuation keeps the newlines after it (" ?[^\s\p{L}\p{N}]+[\r\n]*"), so ".\n\n" and
# "$\n\n" are one pre-token and BPE merges them into one token.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def qwen2_like_tokenizer(corpus: Sequence[str], special_tokens: Sequence[str] = QWEN2_SPECIALS):
  """A byte-level BPE built the way Qwen2's is: its split regex, then byte-level mapping
  without its own regex, trained on `corpus` (so frequent ".\\n\\n", "$\\n\\n", ".\\n" become
  single tokens), with `special_tokens` (default Qwen2's <|endoftext|>, <|im_start|>,
  <|im_end|>; no <pad>/<s>/</s>)."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence(
      [
          pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
      ]
  )
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=400,
      special_tokens=list(special_tokens),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(list(corpus), trainer)
  return tok


class ScriptedLM(nnx.Module):
  """A policy that writes `ids` (after their first token) whatever it is fed: logits =
  table[position]; past the end it repeats the last id. `choices` {position: {id: p}}
  branch there."""

  def __init__(self, ids, vocab: int, max_len: int = 64, choices=None):
    self.cfg = tiny_config(vocab_size=vocab, num_layers=1, max_len=max_len)
    table = np.full((max_len, vocab), -1e9, np.float32)
    for t in range(max_len):
      table[t, ids[t + 1] if t + 1 < len(ids) else ids[-1]] = 0.0
    for t, dist in (choices or {}).items():
      table[t] = -1e9
      for i, p in dist.items():
        table[t, i] = np.log(p)
    self.table = nnx.Variable(jnp.asarray(table))

  def __call__(self, tokens, positions, cache=None, attention_mask=None, segment_ids=None):
    logits = jnp.take(self.table[...], positions, axis=0)
    if cache is not None:
      n = tokens.shape[1] if attention_mask is None else attention_mask.astype(jnp.int32).sum(-1)
      cache = dict(cache, index=cache["index"] + n)
    return logits, cache


def save_qwen_prm(path, vocab: int, seed: int = 1):
  """A Qwen2.5-Math-PRM-shaped checkpoint at `path` (Qwen2 body + score = Linear, ReLU,
  Linear(d, 2), tensors model.* / score.*); returns a torch reference: ids -> P(positive)."""
  import torch
  import transformers
  from safetensors.torch import save_file

  conf = transformers.Qwen2Config(
      vocab_size=vocab,
      hidden_size=32,
      intermediate_size=48,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=512,
      architectures=["Qwen2ForProcessRewardModel"],
  )
  torch.manual_seed(seed)
  body = transformers.Qwen2Model(conf).eval()
  head = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
  with torch.no_grad():
    for m in (body, head):
      for name, p in m.named_parameters():
        p.copy_(torch.rand_like(p) + 0.5 if "norm" in name else torch.randn_like(p) * 0.3)
  conf.save_pretrained(str(path))
  tensors = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
  tensors.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
  save_file(tensors, str(path / "model.safetensors"))

  def reference(ids):
    with torch.no_grad():
      h = body(torch.tensor([list(ids)])).last_hidden_state
      return torch.softmax(head(h).float(), -1)[0, :, 1].numpy()

  return reference
