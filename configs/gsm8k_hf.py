"""A local Hugging Face policy + a PRM on GSM8K: search sweep and compute-optimal analysis.

  python -m ttc_jax.run --config configs/gsm8k_hf.py \
      --config.hf.policy=/models/Qwen2.5-Math-1.5B-Instruct \
      --config.hf.prm=/models/Qwen2.5-Math-PRM-7B \
      --config.data.manual_dir=/data/gsm8k        # train.jsonl, test.jsonl (openai format)

Sized for one 80 GB GPU with a 0.5B-1.5B policy in bfloat16 and a PRM of up to 7B
(stages and outputs: ttc_jax/pipeline/text.py). Every path is a config field, empty by
default (the run stops naming an empty or missing one); nothing is downloaded. An
external PRM reads the question and the steps in its model-card format with its *own*
tokenizer (the PRM directory's tokenizer.json, else the policy's), where its step tag and
good/bad tokens are looked up: Qwen2.5-Math-PRM a system/user chat turn, then the steps
each followed by <extra_0>; Math-Shepherd "{question} " then "step ки" lines. When its
vocabulary holds the policy's, the search kernels feed it the policy's tokens (step ends
rewritten); otherwise steps are decoded and re-encoded on the host (search/bridge.py).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "gsm8k_hf"
  c.seed = 0
  c.task = dict(name="gsm8k", split="test")  # held-out split (MATH also: "test500")
  c.data = dict(manual_dir="")  # dir with train.jsonl / test.jsonl (text_tfds.py)
  c.hf = dict(
      policy="",  # HF causal LM dir (Llama/Qwen2/Mistral): config.json + *.safetensors
      tokenizer="",  # tokenizer.json (or its dir); empty: the policy dir's
      # end-of-answer token; empty: tokenizer_config.json's eos_token. Every eos_token_id of
      # the policy's generation_config.json also ends answers; no BOS is added where
      # tokenizer_config.json has none (Qwen2: "bos_token": null).
      eos_token="",
      step_delimiter="\n",  # ends a reasoning step; one token of the tokenizer
      param_dtype="bfloat16",
      dtype="",  # storage / compute dtype ("" = param_dtype)
      max_len=1536,  # longest prompt + answer; sets the KV cache length
      # PRM: "value_model" (a ttc_jax value-model checkpoint dir, its backbone shaped like
      # `prm_base`, default the policy), "classifier" (Qwen2.5-Math-PRM style: P(class
      # prm_positive_class) at prm_step_tag), "token_prob" (Math-Shepherd style:
      # P(prm_good_token) vs P(prm_bad_token) at prm_step_tag). Adapters: models/external_prm.py.
      prm="",
      prm_type="classifier",
      prm_step_tag="<extra_0>",
      prm_positive_class=1,
      prm_good_token="+",
      prm_bad_token="-",
      prm_base="",
      # Optional larger policy (same tokenizer) for the FLOPs-matched comparison; needs
      # compute_optimal.pretrain_tokens.
      large_policy="",
  )
  # Prompt: "chat" (ChatML/Llama-3 markup for instruct models), "few_shot" (the first
  # `shots` training solutions, "#### N" written as "The answer is N."), or "plain"
  # (`template` with {question}). stop_strings cut the model's text before grading/scoring.
  c.prompt = dict(
      style="chat",
      chat_style="chatml",
      system="Please reason step by step, and put your final answer within \\boxed{}.",
      user_format="{question}",
      shots=4,
      question_format="Question: {question}\n",
      answer_format="Answer: {answer}",
      separator="\n\n",
      template="Question: {question}\nAnswer: ",
      stop_strings=("\n\nQuestion:",),
  )
  c.mesh = dict(shape=(-1, 1, 1))  # (data, fsdp, tensor); -1 = all devices
  # Policy evaluation: greedy + num_samples samples per question (best-of-N pool).
  c.eval = dict(
      questions=200,
      num_samples=64,
      majority_ns=(1, 2, 4, 8, 16, 32, 64),
      max_new_tokens=512,
      temperature=0.7,
      top_k=0,
      top_p=1.0,
      max_batch=512,
  )  # sequences per sampler call
  c.verify = dict(aggregation="last", score_batch=32)  # step scores -> one score: last, min or prod
  # Step-level search on the first `questions` eval questions (ttc_jax/search/sweep.py).
  c.search = dict(
      questions=100,
      budgets=(4, 16, 64),  # add 256 for the paper's range
      methods=("beam_m4", "beam_sqrt", "lookahead_k1", "lookahead_k3", "dvts"),
      max_rounds=16,
      max_step_tokens=96,
      max_new_tokens=512,
      temperature=0.7,
      top_k=0,
      top_p=1.0,
      max_beams=256,
      seed=0,
      # beams still unfinished after max_rounds (or cut off at max_step_tokens) get one
      # completion to EOS before answers are read (search-and-learn's last iteration)
      final_completion=True,
      # prompt KV caches held once per question, read by all its beams (memory only), stored
      # in each model's compute dtype ("" ; or "bfloat16" for bfloat16 models, "float32")
      share_prefix=True,
      cache_dtype="",
  )
  # Compute-optimal analysis (paper §3.2, §7) without revisions: difficulty bins of the
  # searched questions, 2-fold CV of the per-bin strategy; pretrain_tokens: the checkpoints'
  # documented pre-training tokens (only used with hf.large_policy).
  c.compute_optimal = dict(
      num_bins=5, num_folds=2, seed=0, r_values=(0.16, 0.79, 22.0), pretrain_tokens=0.0
  )
  # ProcessBench F1 of the PRM on the task's split (stage `processbench`, report key
  # `processbench`): data_dir holds gsm8k.json / math.json (empty: skipped); threshold < 0
  # is chosen on the other split; limit > 0 scores the first items only.
  c.processbench = dict(data_dir="", threshold=-1.0, limit=0)
  return c
