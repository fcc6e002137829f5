"""The paper's ablations on the command line: `--config FILE.py:INPUT,OUTPUT` sets
config.variant (gio_ada_jax/variants.py derives everything else from it)."""

from gio_ada_jax import variants


def apply_variant(config, variant: str | None):
  """Set config.variant to "INPUT,OUTPUT" (e.g. "+sd,joint", "na,na", "gd,ss") and return
  `config`; None or "" keeps the config's own.

  INPUT is Table 2's input level (na, cg, gd, +d, +s, +sd), OUTPUT Table 3's output level
  (na, ss, depth, sep, joint). An unknown one is an error naming the allowed values.
  """
  if not variant:
    return config
  config.variant = str(variants.parse(variant))
  return config
