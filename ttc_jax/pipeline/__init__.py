"""The pipelines as tuples of resumable stages over an explicit run context.

  stage.py            `Stage` records (name, hashed sections, inputs, outputs, run function)
                      and the bookkeeping: markers <workdir>/stages/<name>.json, wall times,
                      `StageMismatchError`
  context.py          `RunContext`: cfg, run directory, tokenizer, mesh, questions, answer
                      functions, model loaders
  policy.py           policy training, eval_policy, eval_large (both pipelines)
  verifiers.py        PRM labels, PRM/ORM training, verifier evaluation, eval_search
  revision.py         revision data, SFT, chains, ORM, RL, chain evaluation
  compute_optimal.py  the larger model, the analysis, `compute_optimal_policy`
  arith.py            the embedded task's `STAGES`, its context and the `Pipeline` facade
  text.py             GSM8K / MATH with local HF models: `STAGES` and `TextPipeline`
  text_context.py     the text context: prompts, HF tokenizer and model/PRM loaders
  context_probe.py    a diagnostic over a finished arith run (`python -m
                      ttc_jax.pipeline.context_probe`)

`from ttc_jax.pipeline import Pipeline` runs the arith stages;
`ttc_jax.pipeline.text.TextPipeline` the text ones (`python -m ttc_jax.run` picks by task).
"""

from ttc_jax.pipeline.arith import Pipeline
from ttc_jax.pipeline.context import RunContext
from ttc_jax.pipeline.stage import Stage, StageMismatchError

__all__ = ["Pipeline", "RunContext", "Stage", "StageMismatchError"]
