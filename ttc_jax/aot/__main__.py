"""`python -m ttc_jax.aot` (see `ttc_jax.aot.cli`)."""

import sys

from ttc_jax.aot.cli import main

sys.exit(main())
