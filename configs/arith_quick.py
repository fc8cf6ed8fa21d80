"""The default main job: the embedded arithmetic task on a 2-core CPU in minutes.

Difficulty ladder: 1..7 operations over 1-digit operands (DESIGN.md §7: a
~1M-parameter policy trained a few minutes half-solves it).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "arith_quick"
  c.seed = 0
  c.task = dict(
      name="arith",
      levels="ops=1-7,digits=1",  # difficulty levels (train and held-out), easiest first
      train_per_level=10000,
      test_per_level=100,
      data_seed=0,
  )
  c.model = dict(
      vocab_size=32,
      embed_dim=128,
      num_layers=4,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      mlp_dim=512,
      max_len=160,
      rope_theta=10000.0,
      tie_embeddings=True,
      param_dtype="float32",
      dtype="float32",
      # reference | xla | cudnn | splash; auto: reference on CPU, splash on TPU, cudnn on GPU
      # (ttc_jax/models/attention.py). Not hashed: every one computes the same attention.
      attention="auto",
  )
  c.mesh = dict(shape=(-1, 1, 1))  # (data, fsdp, tensor); -1 = all devices
  c.train = dict(
      steps=400,
      batch_size=64,
      seq_len=128,
      lr=3e-3,
      warmup_steps=40,
      weight_decay=0.1,
      clip_norm=1.0,
      b1=0.9,
      b2=0.95,
      final_lr_fraction=0.05,
      log_every=50,
      eval_every=200,
      eval_batches=4,
      checkpoint_every=100,
      # gradient-accumulation row groups per step: speed only (not in stage
      # hashes). 8 trains this model ~1.5x faster on the 2-core CPU
      # (docs/benchmarks.md); 1 keeps the documented run's weights bit for bit.
      microbatches=1,
  )
  c.eval = dict(
      questions_per_level=30,
      max_new_tokens=112,
      temperature=0.7,
      top_k=0,
      top_p=1.0,
      num_samples=64,
      majority_ns=(1, 2, 4, 8, 16, 32, 64),
      max_batch=2048,
  )
  # Monte Carlo step labels on training questions (paper: 16 samples x 16 rollouts).
  c.labels = dict(
      questions_per_level=30,
      samples_per_question=8,
      rollouts=8,
      temperature=0.7,
      top_k=0,
      top_p=1.0,
      max_new_tokens=112,
      max_batch=2048,
      shard_questions=70,
      seed=0,
      keep_rollouts=True,
  )
  # use_rollouts: also train on the labelling rollouts (complete solutions from every step
  # prefix, their outcome the last-step label; ttc_jax/prm/data.py). Measured on this config
  # it raised step AUROC but lowered best-of-N weighted accuracy (docs/results.md), so off.
  value_train = dict(
      steps=240,
      batch_size=32,
      seq_len=128,
      lr=3e-4,
      warmup_steps=20,
      weight_decay=0.0,
      clip_norm=1.0,
      b1=0.9,
      b2=0.95,
      final_lr_fraction=0.1,
      log_every=40,
      eval_every=40,
      patience=3,
      heldout_fraction=0.1,
      use_rollouts=False,
  )
  # PRM: soft MC labels (the fraction of rollouts right, the paper's choice) at every step
  # end; "hard" (any rollout right) is the alternative, compared in docs/results.md. Equivalent:
  # label_source="monte_carlo" ("monte_carlo_hard", "exact"; ttc_jax/config/labels.py).
  c.prm = dict(value_train, label="soft")
  c.orm = dict(value_train)  # ORM: final-answer correctness at the last step
  # Verifier evaluation on the eval_policy samples (eval.num_samples per question).
  # ablation: label sources of further PRMs trained like the main one (stage verifier_ablation,
  # ttc_jax/pipeline/ablation.py): "exact" = the task checker's step labels (human-label
  # analogue), "monte_carlo_hard"; not in the other stages' hashes
  c.verify = dict(aggregation="last", threshold=0.5, score_batch=256, ablation=("exact",))
  # Step-level search kernels on a subset of the held-out questions (ttc_jax/search/sweep.py).
  c.search = dict(
      questions_per_level=20,
      budgets=(4, 16, 64),
      methods=("beam_m4", "beam_sqrt", "lookahead_k1", "lookahead_k3", "dvts"),
      max_rounds=10,
      max_step_tokens=16,
      max_new_tokens=112,
      temperature=0.7,
      top_k=0,
      top_p=1.0,
      max_beams=2048,
      seed=0,
      # no row compaction (beam_round.sample_and_score): on the 2-core CPU each kernel
      # shape compiles 3-5 s longer with it and 2048-row calls seldom fit in half;
      # eval_search measured 355 s without, 425-435 s with (docs/benchmarks.md)
      compact_levels=0,
      # prompt KV caches held once per question (memory only; ttc_jax.models.prefix_cache) and
      # stored in the model's compute dtype ("" ; "bfloat16" for bfloat16 models, "float32")
      share_prefix=True,
      cache_dtype="",
  )
  # Revisions (paper §6): trajectories of wrong-then-right attempts from policy samples, SFT of
  # the revision model, SFT chains on other training questions (ORM data and RL contexts), an
  # ORM on revision outputs, RL of the revision policy, chains on held-out questions.
  c.revision = dict(
      context_attempts=4,  # previous attempts in context (paper: 4)
      # where revision prompts put the question: "first" (question, attempts) or "last"
      # (attempts, question: the new attempt starts right after it; revision/format.py)
      question_position="first",
      max_len=544,
      max_new_tokens=96,
      max_rows=1024,
      # 300 questions per level (was 100): 4,351 trajectories, and SFT early-stops later with a
      # lower held-out loss (0.090 vs 0.137); flips 0.31 -> 0.19 (docs/results.md)
      data=dict(
          questions_per_level=300,
          samples_per_question=16,
          temperature=1.0,
          max_new_tokens=96,
          max_batch=2048,
          max_per_question=4,
          seed=0,
          # targets must be right at every step (the task's exact checker), not only in
          # their final answer: lucky right answers taught wrong arithmetic (docs/results.md)
          exact_targets=True,
          # "keep" trajectories (a right attempt last in context, a right target;
          # trajectories.py), half of them; 0 is the paper's data, which taught the model
          # to revise right answers into wrong ones (flips 0.50 -> 0.31, docs/results.md)
          keep_fraction=0.5,
      ),
      sft=dict(
          steps=300,
          batch_size=16,
          seq_len=448,
          lr=3e-4,
          warmup_steps=20,
          weight_decay=0.1,
          clip_norm=1.0,
          b1=0.9,
          b2=0.95,
          final_lr_fraction=0.1,
          log_every=20,
          eval_every=20,
          patience=2,
          heldout_fraction=0.1,
          # half the SFT examples are policy rows (plain prompt, reference solution;
          # revision/sft.py): without them SFT over-fit and its first attempt fell from the
          # policy's 0.30 to 0.125 on hard questions; parallel@16 0.407 -> 0.557
          replay_fraction=0.5,
          # share of the replay rows that get attempts at other questions in context
          # (revision/sft.py foreign_context); 0 = plain rows only
          replay_foreign_fraction=0.0,
      ),
      # chains on training questions after the revision data's 300 per level
      chains=dict(
          questions_per_level=24, skip_questions=300, chains=4, steps=4, temperature=1.0, seed=1
      ),
      orm=dict(value_train, seq_len=448, steps=100, batch_size=16),
      # 60 steps x 16 contexts x 8 samples (was 30 x 8 x 8): flips 0.19 -> 0.17 (docs/results.md)
      rl=dict(
          steps=60,
          prompts_per_step=16,
          group_size=8,
          temperature=1.0,
          max_new_tokens=96,
          lr=5e-5,
          warmup_steps=5,
          clip_norm=1.0,
          clip_eps=0.2,
          kl_coef=0.05,
          advantage="group_normalized",
          loss="clipped_pg",
          updates_per_batch=1,
          microbatches=1,  # row groups per update (activation memory; not hashed)
          log_every=10,
          eval_every=15,
          checkpoint_every=15,
          heldout_fraction=0.1,
          eval_contexts=64,
          # contexts only from questions whose SFT chains were mixed (rl_settings.RL_CONTEXTS): with
          # "all", most groups were all right or all wrong and RL lost 8.6 points at 16
          contexts="mixed",
      ),
      eval=dict(
          questions_per_level=20,
          budgets=(1, 2, 4, 8, 16),
          temperature=0.7,
          report_steps=8,
          step_chains=4,
          score_batch=64,
          seed=2,
      ),
  )
  # Compute-optimal study (paper §3.2, §7): 5 difficulty bins of the search questions, 2-fold
  # CV of the per-bin strategy choice, and a larger model trained on the same data and tokens.
  c.compute_optimal = dict(
      num_bins=5,
      num_folds=2,
      seed=0,
      r_values=(0.16, 0.79, 22.0),
      large_model=dict(embed_dim=192, num_heads=6, mlp_dim=768),
  )
  return c
