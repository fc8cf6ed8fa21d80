"""Accelerator-sized config: larger policy, 1..8 operations with up to 3-digit operands.

Budgets reach 256 samples per question. Meant for a GPU or TPU slice; mesh
(-1, 1, 1) puts all devices on the data axis, e.g. `--config.mesh.shape=(1,-1,1)`
for FSDP instead.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith_quick  # noqa: E402


def get_config():
  c = arith_quick.get_config()
  c.name = "arith_paper"
  c.task.levels = "ops=1-8,digits=1-2"
  c.task.train_per_level = 200000
  c.task.test_per_level = 100
  c.model.update(
      embed_dim=512,
      num_layers=12,
      num_heads=8,
      num_kv_heads=4,
      head_dim=64,
      mlp_dim=2048,
      max_len=256,
      param_dtype="float32",
      dtype="bfloat16",
  )
  c.train.update(
      steps=20000,
      batch_size=256,
      seq_len=256,
      lr=1e-3,
      warmup_steps=1000,
      eval_every=2000,
      checkpoint_every=2000,
      log_every=100,
  )
  c.eval.update(
      questions_per_level=100,
      max_new_tokens=200,
      num_samples=256,
      majority_ns=(1, 2, 4, 8, 16, 32, 64, 128, 256),
      max_batch=16384,
  )
  # The paper's labelling budget: 16 samples per question, 16 rollouts per step prefix.
  c.labels.update(
      questions_per_level=2000,
      samples_per_question=16,
      rollouts=16,
      max_new_tokens=200,
      max_batch=16384,
      shard_questions=1024,
  )
  for sec in (c.prm, c.orm):
    sec.update(
        steps=5000,
        batch_size=256,
        seq_len=256,
        lr=3e-4,
        warmup_steps=200,
        eval_every=250,
        log_every=50,
        patience=4,
        heldout_fraction=0.05,
    )
  c.verify.update(score_batch=2048)
  c.search.update(
      questions_per_level=100,
      budgets=(4, 16, 64, 256),
      max_rounds=40,
      max_step_tokens=24,
      max_new_tokens=200,
      # rows per kernel call: the most that fits a TPU v5e-8 (16 GiB per chip) for every
      # method (lookahead k=1 needs the most: 11.8 GiB per device at 4,096 rows, 18.0 at
      # 8,192; python -m ttc_jax.aot, docs/accelerators.md)
      max_beams=4096,
      compact_levels=2,
  )  # long searches on one device: row compaction pays for its compiles (off on a mesh)
  # Revisions at the paper's scale: 64 samples per training question, chains to 64 attempts.
  r = c.revision
  # max_rows: chain rows per call, the most that fits a v5e-8 (1,536: 12.4 GiB per device;
  # 1,792 is the largest, 8,192 needed 51.7)
  r.update(max_len=1280, max_new_tokens=200, max_rows=1536)
  r.data.update(
      questions_per_level=2000,
      samples_per_question=64,
      max_new_tokens=200,
      max_batch=16384,
      max_per_question=8,
  )
  r.sft.update(
      steps=4000,
      batch_size=128,
      seq_len=1280,
      lr=3e-4,
      warmup_steps=200,
      eval_every=250,
      log_every=50,
      patience=4,
      heldout_fraction=0.05,
  )
  r.chains.update(questions_per_level=500, skip_questions=2000, chains=8, steps=8)
  r.orm.update(
      steps=4000,
      batch_size=128,
      seq_len=1280,
      lr=3e-4,
      warmup_steps=200,
      eval_every=250,
      log_every=50,
      patience=4,
      heldout_fraction=0.05,
  )
  r.rl.update(
      steps=1000,
      prompts_per_step=64,
      group_size=16,
      max_new_tokens=200,
      lr=1e-5,
      log_every=10,
      eval_every=100,
      checkpoint_every=100,
      eval_contexts=512,
      microbatches=4,  # 1,024 rollouts x 1,279 tokens: 9.1 GiB per v5e device (25.1 at 1)
  )
  r.eval.update(questions_per_level=100, budgets=(1, 2, 4, 8, 16, 32, 64), score_batch=1024)
  # The FLOPs-matched comparison against a model about 14x larger (the paper's M).
  c.compute_optimal.large_model = dict(
      embed_dim=1536, num_layers=24, num_heads=24, num_kv_heads=8, mlp_dim=4608
  )
  return c
