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
