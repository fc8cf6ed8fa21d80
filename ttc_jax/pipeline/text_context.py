"""The text pipeline's run context: a local HF policy, PRM and prompts over GSM8K / MATH.

`make_context` builds the `RunContext` the stages read (`text.STAGES`): the
policy's tokenizer, `cfg.mesh`, the TFDS dataset in <workdir>/tfds, questions
with their `cfg.prompt` prompts, the task's grader applied after
`prompt.stop_strings`, and loaders for the policy, the PRM and hf.large_policy.
An external PRM reads solutions in its own format with its own tokenizer
(`load_external_prm`); the search gets it through `search_prm`.
"""

from __future__ import annotations

import functools
import os
import re

import ml_collections

from ttc_jax import grading, io_utils, parallel
from ttc_jax.models import external_prm, hf
from ttc_jax.models.config import ModelConfig
from ttc_jax.models.hf_config import config_from_hf
from ttc_jax.pipeline.context import RunContext
from ttc_jax.prm import processbench_load
from ttc_jax.prm import train as prm_train
from ttc_jax.search import bridge, prm_steps
from ttc_jax.tokenizers.hf import HFTokenizer, chat_prompt, few_shot_prompt


def shot_answer(task: str, solution: str) -> str:
  """A reference solution as a few-shot answer: GSM8K's `<<a*b=c>>` calculator notes
  dropped and its `#### N` line written as "The answer is N."."""
  if task != "gsm8k":
    return solution
  text = re.sub(r"<<[^>]*>>", "", solution)
  return re.sub(r"\n?####\s*(.+)\s*$", lambda m: f"\nThe answer is {m.group(1).strip()}.", text)


def build_prompt(pc, task: str, question: str, shots=()) -> str:
  """The prompt for `question` under cfg.prompt `pc`; shots: ((question, solution), ...)."""
  if pc.style == "plain":
    return pc.template.replace("{question}", question)
  if pc.style == "few_shot":
    return few_shot_prompt(
        [(q, shot_answer(task, s)) for q, s in shots],
        question,
        question_format=pc.question_format,
        answer_format=pc.answer_format,
        separator=pc.separator,
    )
  messages = ([dict(role="system", content=pc.system)] if pc.system else []) + [
      dict(role="user", content=pc.user_format.replace("{question}", question))
  ]
  return chat_prompt(messages, pc.chat_style)


def trim(cfg, text: str) -> str:
  """`text` up to the first of prompt.stop_strings (e.g. a few-shot model's next question)."""
  for s in cfg.prompt.stop_strings:
    if s and s in text:
      text = text[: text.index(s)]
  return text


def _dtypes(cfg) -> dict:
  h = cfg.hf
  return dict(param_dtype=h.param_dtype, dtype=h.dtype or None, max_len=int(h.max_len))


def hf_config(cfg, path: str) -> ModelConfig:
  """The ModelConfig of the HF checkpoint at `path`, with the run's dtypes and max_len."""
  return config_from_hf(io_utils.read_json(os.path.join(path, "config.json")), **_dtypes(cfg))


def load_hf_model(cfg, mesh, path: str):
  """The HF causal LM at `path` as a `Transformer` on `mesh`."""
  return hf.load_model(path, mesh=mesh, **_dtypes(cfg))


def load_prm(cfg, tokenizer, model_cfg: ModelConfig, mesh, remap: bool = True):
  """The PRM named by cfg.hf for the search kernels: a ttc_jax `ValueModel`, or an external
  adapter reading the policy's steps in its own format (`search_prm`). Without `remap`, the
  bare adapter (it reads its own tags only: `format_steps`)."""
  h = cfg.hf
  if h.prm_type == "value_model":
    d = os.path.join(h.prm, "model") if os.path.isdir(os.path.join(h.prm, "model")) else h.prm
    base = hf_config(cfg, h.prm_base) if h.prm_base else model_cfg
    return prm_train.load_value_model(d, base, tokenizer, kind="prm", seed=cfg.seed, mesh=mesh)
  loaded = load_external_prm(cfg, mesh)
  return search_prm(loaded, tokenizer) if remap else loaded.model


def prm_tokenizer(cfg) -> HFTokenizer:
  """The external PRM's own tokenizer: the PRM directory's tokenizer.json, else the
  policy's. (Its step delimiter is unused; the step tag, one token by definition, stands in.)"""
  h = cfg.hf
  own = os.path.isfile(os.path.join(h.prm, "tokenizer.json"))
  path = h.prm if own else (h.tokenizer or h.policy)
  try:
    return HFTokenizer.from_file(path, step_delimiter=h.prm_step_tag)
  except ValueError as e:
    raise ValueError(f"the PRM's tokenizer {path}: {e}") from e


def load_external_prm(cfg, mesh) -> processbench_load.LoadedPRM:
  """The external PRM of cfg.hf with its model-card input format: its own tokenizer
  (`prm_tokenizer`), its step tag and good/bad tokens looked up there, and its prompt:
  Qwen2.5-Math-PRM's system/user chat turn (classifier) or "{question} " (Math-Shepherd,
  token_prob); steps are joined with the tag by `format_steps`."""
  h = cfg.hf
  tok = prm_tokenizer(cfg)

  def token(text: str, what: str) -> int:
    try:
      return tok.id_of(text)
    except ValueError as e:
      raise ValueError(f"config.hf.{what}={text!r} in the PRM's tokenizer: {e}") from e

  kw = dict(
      step_token_id=token(h.prm_step_tag, "prm_step_tag"),
      delimiter_ids=(),
      mesh=mesh,
      **_dtypes(cfg),
  )
  if h.prm_type == "token_prob":
    model = external_prm.load_token_prm(
        h.prm,
        good_token_id=token(h.prm_good_token, "prm_good_token"),
        bad_token_id=token(h.prm_bad_token, "prm_bad_token"),
        **kw,
    )
    prompt = processbench_load.plain_prompt("{problem} ")
  else:
    model = external_prm.load_classifier_prm(h.prm, positive_class=int(h.prm_positive_class), **kw)
    prompt = processbench_load.chat_prompt("chatml")
  return processbench_load.LoadedPRM(model, tok, h.prm_type, prompt, h.prm_step_tag)


def search_prm(loaded: processbench_load.LoadedPRM, policy_tokenizer):
  """`loaded` as the search kernels read it: when the PRM's vocabulary holds the policy's,
  a `prm_steps.StepTagPRM` (the policy's tokens, step ends rewritten to the PRM's tags, its
  own prompt); otherwise a `bridge.BridgedPRM` (steps decoded with the policy's tokenizer and
  re-encoded with the PRM's, on the host)."""
  if not prm_steps.shares_vocabulary(policy_tokenizer, loaded.tokenizer):
    return bridge.BridgedPRM(loaded, policy_tokenizer)
  rewrites = prm_steps.step_rewrites(
      policy_tokenizer, loaded.tokenizer, loaded.model, loaded.tag_text
  )
  return prm_steps.StepTagPRM(
      loaded.model, rewrites, prompt_ids=lambda question: loaded.encode(question, [])[0]
  )


def build_dataset(cfg, workdir: str):
  """The task's TFDS dataset in <workdir>/tfds, from data.manual_dir (built on first use)."""
  from ttc_jax.data import text_tfds  # tfds is only needed here

  return text_tfds.build_text_dataset(
      cfg.task.name, os.path.join(workdir, "tfds"), cfg.data.manual_dir
  )


def select_problems(cfg, builder, limit: int | None = None) -> list[dict]:
  """The first `limit` (default eval.questions) questions of task.split with their prompts.

  Dicts: question, prompt, answer, level ("Level 3"; "all" for GSM8K), subject, solution.
  """
  from ttc_jax.data import text_tfds

  b = builder()
  rows = text_tfds.load_problems(b, cfg.task.split)[: int(limit or cfg.eval.questions)]
  shots = []
  if cfg.prompt.style == "few_shot" and int(cfg.prompt.shots) > 0:
    src = text_tfds.load_split(b, "train")
    shots = [
        (r["question"], r["solution"])
        for r in (text_tfds.decode_record(src[i]) for i in range(min(len(src), cfg.prompt.shots)))
    ]
  return [
      dict(
          r,
          level=r["level"] or "all",
          prompt=build_prompt(cfg.prompt, cfg.task.name, r["question"], shots),
      )
      for r in rows
  ]


def make_context(cfg: ml_collections.ConfigDict, workdir: str, progress: bool) -> RunContext:
  """The text run context; `levels` stays empty until the pipeline reads the eval questions."""
  h = cfg.hf
  task = cfg.task.name
  grader = grading.get_grader(task)
  tokenizer = HFTokenizer.from_file(
      h.tokenizer or h.policy,
      generation_config=h.policy,  # every EOS id of the policy's generation_config.json
      step_delimiter=h.step_delimiter,
      **({"eos_token": h.eos_token} if h.eos_token else {}),
  )
  model_cfg = hf_config(cfg, h.policy)
  if tokenizer.vocab_size > model_cfg.vocab_size:
    raise ValueError(
        f"tokenizer {h.tokenizer or h.policy} has {tokenizer.vocab_size} "
        f"tokens, more than the policy's vocab_size={model_cfg.vocab_size}"
    )
  mesh = parallel.make_mesh(tuple(cfg.mesh.shape))
  workdir = os.path.abspath(workdir)

  builder = functools.partial(build_dataset, cfg, workdir)
  problems = functools.partial(select_problems, cfg, builder)

  return RunContext(
      cfg=cfg,
      workdir=workdir,
      tokenizer=tokenizer,
      model_cfg=model_cfg,
      mesh=mesh,
      levels=[],
      progress=progress,
      builder=builder,
      problems=problems,
      test_problems=lambda section: problems(int(section.questions)),
      extract_answer=lambda text: grader.extract_answer(trim(cfg, text)),
      equivalent=grader.equivalent,
      load_policy=lambda: load_hf_model(cfg, mesh, h.policy),
      load_prm=lambda: load_prm(cfg, tokenizer, model_cfg, mesh),
      large_cfg=lambda: hf_config(cfg, h.large_policy) if h.large_policy else None,
      load_large=lambda: load_hf_model(cfg, mesh, h.large_policy),
  )
