"""Ahead-of-time compilation of a config's programs for TPU topologies, without a TPU.

`python -m ttc_jax.aot --config CONFIG --topology v5e-8` (`cli`) compiles every jitted program
the config's pipeline runs (`plan`: training steps, samplers, value scoring, search kernels,
revision chains, the RL step) at its largest shapes on the config's mesh mapped onto the
topology's abstract devices (`chips`), from abstract models (`programs`, `kernels`: no weights;
Hugging Face models from config.json alone), and reports the TPU compiler's memory and cost
figures with a roofline estimate per program (`analysis`). docs/accelerators.md has the tables.
"""
