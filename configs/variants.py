"""The paper's ablations on the command line: `--config FILE.py:INPUT,OUTPUT` sets
config.variant (gio_ada_jax/variants.py derives everything else from it)."""

from gio_ada_jax.variants import apply_variant  # noqa: F401
