"""Hugging Face `tokenizer.json` adapter and prompt templates.

`HFTokenizer` wraps a local `tokenizers.Tokenizer` with the interface the
sampler, search and PRM code use from `char.CharTokenizer`: `PAD`,
`BOS`, `EOS` ids, `eos_ids` (EOS and every other id that ends a generation, from the
checkpoint's generation_config.json), `add_bos` (False for models without a BOS,
e.g. Qwen2), `encode`, `encode_batch(texts, max_len, add_bos) ->
(tokens int32[B, max_len], lengths int32[B])`, `decode`, `decode_batch`,
`vocab_size`, `newline_id` (the id of the step delimiter, "\\n" or "\\n\\n" or
any string that is one token), `delimiter_ids` (every id whose text contains the
delimiter: byte-level BPE vocabularies such as Qwen2's and Llama-3's merge
punctuation with the newlines after it, so ".\\n\\n" and "$\\n\\n" are single tokens
that end a step too; the sampler and the search kernels stop on all of them) and
`fingerprint()`. Nothing is downloaded.

Prompt templates: `few_shot_prompt` (question/answer pairs in a configurable
format) and `chat_prompt` (ChatML or Llama-3 turn markup, no jinja).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Mapping, Sequence

from ttc_jax.tokenizers.codec import BatchCodec, ids_1d

# Token strings tried, in order, when a special is not given or configured.
_DEFAULT_SPECIALS = {
    "bos": ("<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"),
    "eos": ("</s>", "<|end_of_text|>", "<|eot_id|>", "<eos>", "<|im_end|>", "<|endoftext|>"),
    "pad": ("<pad>", "<|finetune_right_pad_id|>", "<|endoftext|>"),
}


def _special_from_config(value) -> str | None:
  """tokenizer_config.json stores specials as strings or {"content": ...}."""
  if isinstance(value, Mapping):
    return value.get("content")
  return value if isinstance(value, str) else None


def generation_eos_ids(path: str) -> tuple[int, ...]:
  """The `eos_token_id` (an int or a list) of generation_config.json at `path` (a file or
  a checkpoint directory), else of config.json there; () when neither says."""
  d = os.path.dirname(path) if os.path.isfile(path) else path
  names = [path] if os.path.isfile(path) else []
  names += [os.path.join(d, "generation_config.json"), os.path.join(d, "config.json")]
  for name in names:
    if os.path.isfile(name):
      with open(name) as fh:
        eos = json.load(fh).get("eos_token_id")
      if eos is not None:
        return tuple(int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]))
  return ()


class HFTokenizer(BatchCodec):
  """A `tokenizers.Tokenizer` with CharTokenizer's interface.

  Attributes:
    PAD, BOS, EOS: int ids of the padding, begin and end tokens (PAD falls
      back to EOS when the vocabulary has no padding token).
    step_delimiter: the string that ends a reasoning step; `newline_id` is
      its id, `delimiter_ids` every id whose text contains it.
  """

  def __init__(
      self,
      tokenizer,
      *,
      bos_token: str | None = None,
      eos_token: str | None = None,
      pad_token: str | None = None,
      step_delimiter: str = "\n",
      eos_ids: Sequence[int] = (),
      add_bos: bool = True,
  ):
    """`tokenizer`: a `tokenizers.Tokenizer`. Specials given as token strings;
    unset ones are looked up among common names (ValueError when none exist).

    `eos_ids`: more ids that end a generation (a checkpoint's generation_config.json
    may list several, e.g. Qwen2.5-Instruct's <|im_end|> and <|endoftext|>); `eos_ids`
    holds EOS first, then these. `add_bos=False` for models without a BOS (Qwen2):
    `encode(..., add_bos=True)` then adds none, and BOS (kept as an id for code that
    needs one) falls back to EOS when no BOS-like token exists."""
    self._tok = tokenizer
    self.add_bos = bool(add_bos)
    found = {}
    for kind, given in (("eos", eos_token), ("bos", bos_token), ("pad", pad_token)):
      names = (given,) if given is not None else _DEFAULT_SPECIALS[kind]
      ids = [tokenizer.token_to_id(n) for n in names]
      hit = next(((n, i) for n, i in zip(names, ids) if i is not None), None)
      if hit is None and given is None and (kind == "pad" or (kind == "bos" and not add_bos)):
        hit = found["eos"]
      if hit is None:
        raise ValueError(
            f"{kind} token {' / '.join(map(repr, names))} is not in the vocabulary; "
            f"pass {kind}_token= explicitly"
        )
      found[kind] = hit
    self.specials = {k: found[k][0] for k in ("bos", "eos", "pad")}
    self.BOS, self.EOS, self.PAD = found["bos"][1], found["eos"][1], found["pad"][1]
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    bad = [int(i) for i in eos_ids if not 0 <= int(i) < n]
    if bad:
      raise ValueError(f"eos ids {bad} are outside the vocabulary (size {n})")
    self.eos_ids = tuple(dict.fromkeys([self.EOS] + [int(i) for i in eos_ids]))
    ids = self._tok.encode(step_delimiter, add_special_tokens=False).ids
    if len(ids) != 1:
      raise ValueError(
          f"step delimiter {step_delimiter!r} encodes to {len(ids)} tokens {ids}, "
          f"not one; choose a delimiter that is a single token"
      )
    self.step_delimiter = step_delimiter
    self._newline_id = ids[0]

  @classmethod
  def from_file(cls, path: str, generation_config: str | None = None, **kw) -> "HFTokenizer":
    """Loads `path` (a tokenizer.json, or a directory holding one).

    Specials not passed in `kw` are read from a `tokenizer_config.json` next
    to it (bos_token/eos_token/pad_token) when present; there, `"bos_token": null`
    or `"add_bos_token": false` means the model has no BOS (`add_bos=False`, e.g.
    Qwen2). Every EOS id of the checkpoint's generation_config.json (`eos_token_id`,
    an int or a list; without that file, config.json's) joins `eos_ids`: the file is
    `generation_config` (a checkpoint directory or the file), by default the one next to
    the tokenizer.
    """
    from tokenizers import Tokenizer

    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
      raise FileNotFoundError(
          f"tokenizer file {file} does not exist (only local files are " f"supported)"
      )
    conf_path = os.path.join(os.path.dirname(file), "tokenizer_config.json")
    if os.path.isfile(conf_path):
      with open(conf_path) as fh:
        conf = json.load(fh)
      for kind in ("bos", "eos", "pad"):
        value = _special_from_config(conf.get(f"{kind}_token"))
        if value is not None:
          kw.setdefault(f"{kind}_token", value)
      if "add_bos_token" in conf:
        kw.setdefault("add_bos", bool(conf["add_bos_token"]))
      elif "bos_token" in conf and conf["bos_token"] is None:
        kw.setdefault("add_bos", False)
    extra = generation_eos_ids(generation_config or os.path.dirname(file))
    kw["eos_ids"] = tuple(kw.get("eos_ids", ())) + extra
    return cls(Tokenizer.from_file(file), **kw)

  # -- vocabulary ------------------------------------------------------------------
  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def newline_id(self) -> int:
    """Id of the step delimiter."""
    return self._newline_id

  @functools.cached_property
  def delimiter_ids(self) -> tuple[int, ...]:
    """Every id whose text contains `step_delimiter` (`newline_id` first, then by id):
    the tokens a step can end with. Special tokens (PAD/BOS/EOS and added specials)
    are never delimiters. Computed once from the vocabulary."""
    return (self._newline_id,) + tuple(
        i for i in self.ids_containing(self.step_delimiter) if i != self._newline_id
    )

  def ids_containing(self, text: str) -> tuple[int, ...]:
    """Ids (ascending) of the non-special tokens whose decoded text contains `text`."""
    special = {self.PAD, self.BOS, *self.eos_ids} | {
        i for i, t in self._tok.get_added_tokens_decoder().items() if t.special
    }
    n = self.vocab_size
    texts = self._tok.decode_batch([[i] for i in range(n)], skip_special_tokens=False)
    return tuple(i for i, t in enumerate(texts) if text in t and i not in special)

  def id_of(self, token: str) -> int:
    """Id of a single-token string; ValueError otherwise."""
    ids = self._tok.encode(token, add_special_tokens=False).ids
    if len(ids) != 1:
      raise ValueError(f"{token!r} is {len(ids)} tokens {ids}, not one")
    return ids[0]

  # -- encode / decode -------------------------------------------------------------
  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Ids of `text` (the tokenizer's own post-processor specials are not added); BOS
    first when asked and the model has one (`add_bos`)."""
    ids = self._tok.encode(text, add_special_tokens=False).ids
    bos = [self.BOS] if add_bos and self.add_bos else []
    return bos + list(ids) + ([self.EOS] if add_eos else [])

  def decode(self, ids, stop_at_eos: bool = True) -> str:
    """Text of a 1-D id sequence: PAD/BOS dropped, cut at the first of `eos_ids` if asked
    (else they are dropped).

    Ids outside the vocabulary (a padded embedding table) are dropped.
    """
    keep = []
    drop = {self.PAD, self.BOS, *self.eos_ids}
    for t in ids_1d(ids).tolist():
      if stop_at_eos and t in self.eos_ids:
        break
      if t not in drop and 0 <= t < self.vocab_size:
        keep.append(int(t))
    return self._tok.decode(keep, skip_special_tokens=False)

  # -- identity --------------------------------------------------------------------
  def fingerprint(self) -> str:
    """Stable id of vocabulary + specials + delimiter, e.g. 'hf-50-1a2b3c4d5e6f7a8b'."""
    desc = json.dumps(
        {
            "tokenizer": self._tok.to_str(),
            "specials": self.specials,
            "delimiter": self.step_delimiter,
        },
        sort_keys=True,
    )
    return f"hf-{self.vocab_size}-{hashlib.sha256(desc.encode()).hexdigest()[:16]}"

  def __repr__(self) -> str:
    return (
        f"HFTokenizer(vocab_size={self.vocab_size}, specials={self.specials}, "
        f"eos_ids={self.eos_ids}, add_bos={self.add_bos}, "
        f"step_delimiter={self.step_delimiter!r})"
    )


# --- prompt templates -----------------------------------------------------------------


def few_shot_prompt(
    examples: Sequence[tuple[str, str]],
    question: str,
    *,
    question_format: str = "Question: {question}\n",
    answer_format: str = "Answer: {answer}",
    separator: str = "\n\n",
) -> str:
  """Few-shot prompt: solved examples then the open question.

  Each example is `question_format.format(question=q) +
  answer_format.format(answer=a)`; examples and the query are joined with
  `separator`; the query ends with the part of `answer_format` before
  `{answer}` (e.g. "Answer: "), so the model continues with the answer.
  """
  if "{answer}" not in answer_format or "{question}" not in question_format:
    raise ValueError("question_format needs {question} and answer_format needs {answer}")
  shots = [question_format.format(question=q) + answer_format.format(answer=a) for q, a in examples]
  lead = answer_format.split("{answer}")[0]
  return separator.join(shots + [question_format.format(question=question) + lead])


CHAT_STYLES = {
    # style: (begin text, turn format, generation prompt)
    "chatml": ("", "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n"),
    "llama3": (
        "<|begin_of_text|>",
        "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
}


def chat_prompt(
    messages: Sequence[Mapping[str, str]],
    style: str = "chatml",
    *,
    add_generation_prompt: bool = True,
    include_bos: bool = False,
) -> str:
  """Formats chat turns ({"role": system|user|assistant, "content": str}).

  style "chatml" (Qwen): `<|im_start|>role\\ncontent<|im_end|>\\n` per turn;
  "llama3": `<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>`
  per turn, with `<|begin_of_text|>` first when `include_bos` (leave it off
  when the tokenizer adds BOS itself, e.g. `encode(..., add_bos=True)`).
  `add_generation_prompt` opens the assistant turn.
  """
  if style not in CHAT_STYLES:
    raise ValueError(f"unknown chat style {style!r}; expected one of {sorted(CHAT_STYLES)}")
  begin, turn, gen = CHAT_STYLES[style]
  parts = [begin] if include_bos else []
  for i, m in enumerate(messages):
    if m.get("role") not in ("system", "user", "assistant") or not isinstance(
        m.get("content"), str
    ):
      raise ValueError(f"message {i} needs role system/user/assistant and str content: {m!r}")
    parts.append(turn.format(role=m["role"], content=m["content"]))
  if add_generation_prompt:
    parts.append(gen)
  return "".join(parts)
