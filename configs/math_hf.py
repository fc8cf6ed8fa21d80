"""A local Hugging Face policy + a PRM on MATH: configs/gsm8k_hf.py with MATH settings.

  python -m ttc_jax.run --config configs/math_hf.py \
      --config.hf.policy=/models/Qwen2.5-Math-1.5B-Instruct \
      --config.hf.prm=/models/Qwen2.5-Math-PRM-7B \
      --config.data.manual_dir=/data/math        # train.jsonl, test.jsonl (+ test500.jsonl)

Steps are paragraphs ("\\n\\n", one token in Qwen/Llama-3 vocabularies); add
--config.task.split=test500 for the paper's 500-question split.
"""

import importlib.util
import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(
      "gsm8k_hf_base", os.path.join(os.path.dirname(os.path.abspath(__file__)), "gsm8k_hf.py")
  )
  base = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(base)
  c = base.get_config()
  c.name = "math_hf"
  c.task.name = "math"
  c.hf.step_delimiter = "\n\n"
  c.hf.max_len = 2048
  c.prompt.update(
      dict(
          question_format="Problem:\n{question}\n",
          answer_format="Solution:\n{answer}",
          separator="\n\n\n",
          template="Problem:\n{question}\n\nSolution:\n",
          stop_strings=("\n\n\nProblem:", "\nProblem:\n"),
      )
  )
  c.eval.update(dict(questions=200, max_new_tokens=512, max_batch=512))
  c.search.update(dict(questions=100, max_rounds=24, max_step_tokens=128, max_new_tokens=512))
  return c
