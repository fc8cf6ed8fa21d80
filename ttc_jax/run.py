"""The main job: `python -m ttc_jax.run --config configs/arith_quick.py [--workdir DIR]
[--config.<field>=<value> ...]`.

Runs the pipeline (ttc_jax.pipeline; ttc_jax.pipeline.text for a Hugging Face
policy + PRM on GSM8K / MATH, e.g. `--config configs/gsm8k_hf.py
--config.hf.policy=DIR --config.hf.prm=DIR --config.data.manual_dir=DIR`) and
prints the headline figures; the run directory (default `runs/<config name>`)
receives report.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def setup_jax_cache(path: str | None = None) -> None:
  """Persistent XLA compilation cache (`parallel.setup_jax_cache`: halves repeat compile
  time on CPU); jax is imported only when the job starts."""
  from ttc_jax import parallel

  parallel.setup_jax_cache(path)


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m ttc_jax.run",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--config", required=True, help="config file defining get_config()")
  p.add_argument("--workdir", default=None, help="run directory (default runs/<config name>)")
  p.add_argument("--no_progress", action="store_true", help="disable progress bars")
  p.add_argument(
      "--host_devices",
      type=int,
      default=None,
      help="split a CPU host into this many XLA devices (e.g. one per core) so "
      "the (-1,1,1) mesh runs data-parallel over the cores; no effect on "
      "accelerators (default: one CPU device)",
  )
  args, rest = p.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    p.error(f"unrecognised arguments {bad} (overrides look like --config.train.steps=100)")
  return args, rest


def main(argv=None) -> int:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  if args.host_devices is not None:
    if args.host_devices < 1:
      print(f"error: --host_devices must be >= 1, got {args.host_devices}", file=sys.stderr)
      return 2
    from ttc_jax import parallel  # before the config touches jax.devices()

    parallel.split_host_cpu(args.host_devices)
  from ttc_jax import config as config_lib

  try:
    cfg = config_lib.load_config(args.config, overrides)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from ttc_jax import parallel

  parallel.maybe_initialize_distributed()
  setup_jax_cache()
  if cfg.task.get("name") in config_lib.TEXT_TASKS:  # a HF policy + PRM on GSM8K / MATH
    from ttc_jax.pipeline.text import TextPipeline as Pipeline
  else:
    from ttc_jax.pipeline import Pipeline
  workdir = args.workdir or os.path.join("runs", cfg.name)
  rep = Pipeline(cfg, workdir, progress=not args.no_progress).run()
  p = rep["policy"]
  print(
      json.dumps(
          {
              "workdir": os.path.abspath(workdir),
              "pass_at_1_by_level": p["pass_at_1_by_level"],
              "sampled_pass_at_1_by_level": p["sampled_pass_at_1_by_level"],
              "distinct_answers_by_level": p["distinct_answers_by_level"],
              "curves.majority": rep["curves"]["majority"],
              "wall_seconds": rep["wall_seconds"],
          },
          indent=1,
      )
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
