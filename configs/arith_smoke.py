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
  c.model.update(embed_dim=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16,
                 mlp_dim=64, max_len=64)
  c.train.update(steps=20, batch_size=8, seq_len=64, warmup_steps=2, log_every=10,
                 eval_every=20, eval_batches=1, checkpoint_every=10)
  c.eval.update(questions_per_level=4, max_new_tokens=40, num_samples=4,
                majority_ns=(1, 2, 4), max_batch=64)
  return c
