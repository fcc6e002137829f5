"""Every default of the procedural benchmark: gio_ada_jax/configs/procedural.py (in the package,
as configs/default.py says why), for `from configs import procedural`."""

from gio_ada_jax.configs.procedural import procedural_config  # noqa: F401
