"""PRMs for ProcessBench: loading any PRM the project scores with, formatting, scoring.

``load_prm(path, ...)`` accepts

* a Hugging Face PRM directory (config.json + *.safetensors): a ``score`` head makes it
  a ``external_prm.ClassifierPRM`` (Qwen2.5-Math-PRM style; tag ``<extra_0>``), else a
  ``TokenProbPRM`` (Math-Shepherd style; tag ``ки``, good ``+``, bad ``-``). The tokenizer
  is the directory's tokenizer.json unless ``tokenizer`` is given. Adapters are loaded
  without delimiter remapping and read at their own tags (``format_steps``);
* a ttc_jax value-model checkpoint directory (``<dir>/model`` or ``<dir>``) with
  ``prm_base`` (the HF config its backbone follows) and ``tokenizer``: the value is read
  at each step's delimiter (``prm.data.solution_tokens``; a delimiter inside a step is
  written as a space, so the steps are the ones given);
* a run directory: the embedded pipeline's (``config.json`` + ``prm/model``; character
  tokenizer) or the text pipeline's (its ``hf`` section names the PRM and its settings).

Prompts: ``{problem}`` in a plain template (value models: "{problem}\\n", Math-Shepherd:
"{problem} ") or, for classifier PRMs by default, ChatML with the Qwen math system prompt.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

PRM_TYPES = ("auto", "value_model", "classifier", "token_prob")
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT_TAGS = {"classifier": "<extra_0>", "token_prob": "\u043a\u0438"}


class PRMLoadError(ValueError):
  """The PRM (or its tokenizer/base config) cannot be loaded; the message names the path."""


@dataclasses.dataclass
class LoadedPRM:
  """A PRM with what ProcessBench needs: its tokenizer, kind and prompt."""

  model: Any  # .score(tokens[B,T], lengths[B]) -> values[B,T]; .cfg
  tokenizer: Any  # encode(text) -> ids, BOS, EOS, newline_id
  kind: str  # value_model | classifier | token_prob
  prompt: Callable[[str], str]  # problem -> prompt text
  tag_text: str | None = None  # adapters: the step tag as text (joint encoding)

  def encode(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of the item as this PRM reads it and the position of each step's score."""
    prompt = self.prompt(problem)
    if self.kind != "value_model":
      return self.model.format_steps(self.tokenizer, prompt, steps, tag_text=self.tag_text)
    from ttc_jax.prm import data as prm_data

    delim = getattr(self.tokenizer, "step_delimiter", "\n")
    clean = [s.replace(delim, " ").strip() or " " for s in steps]
    return prm_data.solution_tokens(self.tokenizer, prompt, clean)


def plain_prompt(template: str) -> Callable[[str], str]:
  if "{problem}" not in template:
    raise PRMLoadError(f"prompt template {template!r} has no {{problem}}")
  return lambda problem: template.replace("{problem}", problem)


def chat_prompt(style: str = "chatml", system: str = SYSTEM) -> Callable[[str], str]:
  from ttc_jax.tokenizers.hf import chat_prompt as chat

  sys_turn = [dict(role="system", content=system)] if system else []
  return lambda problem: chat(sys_turn + [dict(role="user", content=problem)], style)


def _hf_tokenizer(path: str, delimiter: str = "\n"):
  from ttc_jax.tokenizers.hf import HFTokenizer

  try:
    return HFTokenizer.from_file(path, step_delimiter=delimiter)
  except (FileNotFoundError, ValueError) as e:
    raise PRMLoadError(f"tokenizer {path}: {e}") from e


def _token_id(tok, text: str, what: str, path: str) -> int:
  try:
    return tok.id_of(text)
  except ValueError as e:
    raise PRMLoadError(f"{what} {text!r} is not one token of the tokenizer for {path}: {e}")


def load_prm(
    path: str,
    *,
    prm_type: str = "auto",
    tokenizer: str | None = None,
    step_tag: str | None = None,
    good_token: str = "+",
    bad_token: str = "-",
    positive_class: int = 1,
    prm_base: str | None = None,
    step_delimiter: str = "\n",
    prompt_template: str | None = None,
    chat_style: str | None = None,
    param_dtype: str = "float32",
    max_len: int = 4096,
    mesh=None,
) -> LoadedPRM:
  """The PRM at ``path`` (see the module docstring); PRMLoadError naming what is missing."""
  from ttc_jax import io_utils
  from ttc_jax.models import external_prm, hf

  if prm_type not in PRM_TYPES:
    raise PRMLoadError(f"prm_type must be one of {PRM_TYPES}, got {prm_type!r}")
  if not os.path.isdir(path):
    raise PRMLoadError(f"PRM directory {path} does not exist")
  conf = os.path.join(path, "config.json")
  if os.path.isfile(conf) and prm_type == "auto":
    run_cfg = io_utils.read_json(conf)
    if isinstance(run_cfg.get("hf"), dict) and run_cfg["hf"].get("prm"):  # text pipeline run
      h = run_cfg["hf"]
      kind = h.get("prm_type", "classifier")
      return load_prm(
          h["prm"],
          prm_type=kind,
          tokenizer=h.get("tokenizer") or h["policy"],
          step_tag=step_tag or h.get("prm_step_tag"),
          good_token=h.get("prm_good_token", good_token),
          bad_token=h.get("prm_bad_token", bad_token),
          positive_class=int(h.get("prm_positive_class", positive_class)),
          prm_base=h.get("prm_base") or h["policy"],
          step_delimiter=h.get("step_delimiter", step_delimiter),
          prompt_template=prompt_template,
          chat_style=chat_style,
          param_dtype=param_dtype,
          max_len=max_len,
          mesh=mesh,
      )
    if isinstance(run_cfg.get("model"), dict) and os.path.isdir(os.path.join(path, "prm")):
      return _embedded_run_prm(path, run_cfg, prompt_template, mesh)
  if prm_type == "auto":
    if not os.path.isfile(conf):
      prm_type = "value_model"
    else:
      try:
        _, reader = hf.open_checkpoint(path)
      except (FileNotFoundError, ValueError) as e:
        raise PRMLoadError(f"PRM checkpoint {path}: {e}") from e
      heads = any(k == "score.weight" or k.startswith("score.") for k in reader.keys())
      prm_type = "classifier" if heads else "token_prob"
  if prm_type == "value_model":
    return _value_model(
        path, tokenizer, prm_base, step_delimiter, prompt_template, max_len, param_dtype, mesh
    )
  tok = _hf_tokenizer(tokenizer or path)
  tag_text = step_tag or DEFAULT_TAGS[prm_type]
  tag = _token_id(tok, tag_text, "step tag", path)
  kw = dict(
      step_token_id=tag, delimiter_ids=(), mesh=mesh, param_dtype=param_dtype, max_len=max_len
  )
  try:
    if prm_type == "classifier":
      model = external_prm.load_classifier_prm(path, positive_class=positive_class, **kw)
    else:
      model = external_prm.load_token_prm(
          path,
          good_token_id=_token_id(tok, good_token, "good token", path),
          bad_token_id=_token_id(tok, bad_token, "bad token", path),
          **kw,
      )
  except (FileNotFoundError, KeyError) as e:
    raise PRMLoadError(f"PRM checkpoint {path}: {e}") from e
  if prompt_template is not None:
    prompt = plain_prompt(prompt_template)
  elif prm_type == "classifier" or chat_style:
    prompt = chat_prompt(chat_style or "chatml")
  else:
    prompt = plain_prompt("{problem} ")
  return LoadedPRM(model, tok, prm_type, prompt, tag_text)


def _value_model(path, tokenizer, prm_base, delimiter, template, max_len, param_dtype, mesh):
  from ttc_jax import io_utils
  from ttc_jax.models import hf_config
  from ttc_jax.prm import train as prm_train

  if not prm_base or not tokenizer:
    raise PRMLoadError(
        f"{path} is not a Hugging Face PRM (no config.json): as a ttc_jax value "
        f"model it needs --prm-base (the HF checkpoint whose config.json its "
        f"backbone follows) and --tokenizer"
    )
  base_conf = os.path.join(prm_base, "config.json")
  if not os.path.isfile(base_conf):
    raise PRMLoadError(f"--prm-base {prm_base} has no config.json")
  cfg = hf_config.config_from_hf(
      io_utils.read_json(base_conf), max_len=max_len, param_dtype=param_dtype
  )
  tok = _hf_tokenizer(tokenizer, delimiter)
  model_dir = os.path.join(path, "model") if os.path.isdir(os.path.join(path, "model")) else path
  try:
    model = prm_train.load_value_model(model_dir, cfg, tok, kind="prm", mesh=mesh)
  except (FileNotFoundError, ValueError) as e:
    raise PRMLoadError(f"value model {model_dir}: {e}") from e
  return LoadedPRM(model, tok, "value_model", plain_prompt(template or "{problem}\n"))


def _embedded_run_prm(path, run_cfg, template, mesh):
  from ttc_jax.models.config import ModelConfig
  from ttc_jax.prm import train as prm_train
  from ttc_jax.tokenizers import CharTokenizer

  tok = CharTokenizer()
  model_dir = os.path.join(path, "prm", "model")
  try:
    model = prm_train.load_value_model(
        model_dir,
        ModelConfig.from_dict(run_cfg["model"]),
        tok,
        kind="prm",
        seed=int(run_cfg.get("seed", 0)),
        mesh=mesh,
    )
  except (FileNotFoundError, ValueError) as e:
    raise PRMLoadError(f"run directory {path}: the PRM in {model_dir}: {e}") from e
  return LoadedPRM(model, tok, "value_model", plain_prompt(template or "{problem}\n"))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _score(graphdef, state, tokens, lengths):
  return nnx.merge(graphdef, state).score(tokens, lengths)


def score_items(
    prm: LoadedPRM, items: Sequence[dict], batch_size: int = 8, max_batch_tokens: int = 32768
) -> tuple[list[list[float]], dict]:
  """Per item, the scores of its steps in order (those past max_len left out); counts.

  Sequences are padded to a power of two (few shapes to compile) and scored in batches of
  ``batch_size`` rows, fewer for long ones (at most ``max_batch_tokens`` tokens a batch)."""
  max_len = int(prm.model.cfg.max_len)
  seqs, truncated, unencodable = [], 0, 0
  for it in items:
    try:
      ids, pos = prm.encode(it["problem"], it["steps"])
    except ValueError:  # text the tokenizer cannot encode (e.g. the embedded task's chars)
      seqs.append(([], []))
      unencodable += 1
      continue
    keep = [p for p in pos if p < max_len]
    truncated += len(keep) < len(pos)
    seqs.append((ids[:max_len], keep))
  if unencodable == len(items) and items:
    raise PRMLoadError(
        f"the PRM's tokenizer ({prm.tokenizer!r}) cannot encode any of the " f"{len(items)} items"
    )
  out: list[list[float]] = [[] for _ in seqs]
  groups: dict[int, list[int]] = {}
  for i, (ids, pos) in enumerate(seqs):
    if pos:
      bucket = 1 << max(6, math.ceil(math.log2(len(ids))))  # few shapes, few compiles
      groups.setdefault(min(bucket, max_len), []).append(i)
  graphdef, state = nnx.split(prm.model)
  for length, idx in sorted(groups.items()):
    rows = max(1, min(batch_size, max_batch_tokens // length))
    for s in range(0, len(idx), rows):
      part = idx[s : s + rows]
      toks = np.zeros((rows, length), np.int32)
      lens = np.ones((rows,), np.int32)
      for r, i in enumerate(part):
        toks[r, : len(seqs[i][0])], lens[r] = seqs[i][0], len(seqs[i][0])
      vals = np.asarray(_score(graphdef, state, jnp.asarray(toks), jnp.asarray(lens)))
      for r, i in enumerate(part):
        out[i] = [float(vals[r, p]) for p in seqs[i][1]]
  return out, dict(truncated=truncated, unencodable=unencodable)


def add_arguments(p) -> None:
  """The PRM-loading flags of the CLI."""
  g = p.add_argument_group("PRM")
  g.add_argument("--prm-type", default="auto", choices=PRM_TYPES)
  g.add_argument(
      "--tokenizer",
      default=None,
      help="tokenizer.json or its directory " "(default: the PRM directory's)",
  )
  g.add_argument(
      "--step-tag",
      default=None,
      help="adapter step tag (default: <extra_0> for " "classifier PRMs, ки for token-prob PRMs)",
  )
  g.add_argument("--good-token", default="+")
  g.add_argument("--bad-token", default="-")
  g.add_argument("--positive-class", type=int, default=1)
  g.add_argument(
      "--prm-base",
      default=None,
      help="value models: the HF checkpoint whose " "config.json describes the backbone",
  )
  g.add_argument("--step-delimiter", default="\n", help="value models: the token ending a step")
  g.add_argument("--prompt-template", default=None, help="plain prompt with {problem}")
  g.add_argument("--chat-style", default=None, choices=("chatml", "llama3"))
  g.add_argument("--param-dtype", default="float32", choices=("float32", "bfloat16"))
  g.add_argument("--max-len", type=int, default=4096)


def load_from_args(args) -> LoadedPRM:
  return load_prm(
      args.prm,
      prm_type=args.prm_type,
      tokenizer=args.tokenizer,
      step_tag=args.step_tag,
      good_token=args.good_token,
      bad_token=args.bad_token,
      positive_class=args.positive_class,
      prm_base=args.prm_base,
      step_delimiter=args.step_delimiter,
      prompt_template=args.prompt_template,
      chat_style=args.chat_style,
      param_dtype=args.param_dtype,
      max_len=args.max_len,
  )
