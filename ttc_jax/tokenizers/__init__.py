"""Tokenizers: ``char`` (the embedded task's character tokenizer), ``hf`` (an adapter for a local
Hugging Face ``tokenizer.json``, plus few-shot and chat prompt templates) and ``codec`` (the
batched encode/decode they share).

``hf`` imports the ``tokenizers`` package only when a file is loaded, so importing this package
needs neither ``tokenizers`` nor ``transformers``.
"""

from ttc_jax.tokenizers.char import ARITH_ALPHABET, CharTokenizer, check_compatible
from ttc_jax.tokenizers.codec import BatchCodec, ids_1d
from ttc_jax.tokenizers.hf import CHAT_STYLES, HFTokenizer, chat_prompt, few_shot_prompt

__all__ = [
    "ARITH_ALPHABET",
    "BatchCodec",
    "CHAT_STYLES",
    "CharTokenizer",
    "HFTokenizer",
    "chat_prompt",
    "check_compatible",
    "few_shot_prompt",
    "ids_1d",
]
