"""Data layer: TFDS builders, grain pipelines, packing into fixed-shape rows.

Only the numpy packer is imported here; ``arith_tfds`` (tensorflow-datasets)
and ``pipeline`` (grain) are imported explicitly where those are installed::

    from ttc_jax.data import arith_tfds, pipeline
"""

from ttc_jax.data.packing import (
    BATCH_KEYS,
    iterate_batches,
    make_example,
    pack_examples,
    pad_rows,
    tokenize_example,
)

__all__ = [
    "BATCH_KEYS",
    "iterate_batches",
    "make_example",
    "pack_examples",
    "pad_rows",
    "tokenize_example",
]
