"""CI-sized config: every stage of the pipeline end to end in well under a minute."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith_quick  # noqa: E402


def get_config():
  c = arith_quick.get_config()
  c.name = "arith_smoke"
  c.task.levels = "ops=1-3,digits=1"
  c.task.train_per_level = 200
  c.task.test_per_level = 20
  c.model.update(
      embed_dim=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=64, max_len=64
  )
  c.train.update(
      steps=300,
      batch_size=16,
      seq_len=64,
      warmup_steps=10,
      log_every=100,
      eval_every=300,
      eval_batches=1,
      checkpoint_every=150,
      microbatches=2,
  )  # exercises gradient accumulation in every CI run
  c.eval.update(
      questions_per_level=4, max_new_tokens=40, num_samples=4, majority_ns=(1, 2, 4), max_batch=64
  )
  c.labels.update(
      questions_per_level=4,
      samples_per_question=2,
      rollouts=2,
      max_new_tokens=40,
      max_batch=64,
      shard_questions=6,
  )
  for sec in (c.prm, c.orm):
    sec.update(
        steps=6,
        batch_size=4,
        seq_len=64,
        warmup_steps=1,
        log_every=3,
        eval_every=3,
        patience=2,
        heldout_fraction=0.3,
    )
  c.verify.update(score_batch=16)
  c.search.update(
      questions_per_level=2, budgets=(4,), max_rounds=4, max_new_tokens=40, max_beams=64
  )
  r = c.revision
  r.update(context_attempts=2, max_len=192, max_new_tokens=40, max_rows=64)
  # the smoke policy is too weak for step-exact targets: keep answer-right ones
  r.data.update(
      questions_per_level=10,
      samples_per_question=8,
      max_new_tokens=40,
      max_batch=64,
      exact_targets=False,
  )
  r.sft.update(
      steps=4,
      batch_size=2,
      seq_len=192,
      warmup_steps=1,
      log_every=2,
      eval_every=2,
      heldout_fraction=0.3,
  )
  r.chains.update(questions_per_level=3, skip_questions=10, chains=2, steps=2)
  r.orm.update(
      steps=4,
      batch_size=4,
      seq_len=192,
      warmup_steps=1,
      log_every=2,
      eval_every=2,
      patience=2,
      heldout_fraction=0.3,
  )
  r.rl.update(
      steps=2,
      prompts_per_step=2,
      group_size=2,
      max_new_tokens=40,
      log_every=1,
      eval_every=2,
      checkpoint_every=2,
      heldout_fraction=0.3,
      eval_contexts=4,
      contexts="all",
  )  # the smoke policy's chains may hold no mixed question
  r.eval.update(
      questions_per_level=2, budgets=(1, 2, 4), report_steps=4, step_chains=1, score_batch=16
  )
  c.compute_optimal.update(num_bins=2, large_model=dict(embed_dim=48, mlp_dim=96))
  return c
