"""A tiny Hugging Face `tokenizers` BPE for CPU tests (no downloads)."""

from __future__ import annotations

from typing import Sequence


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
