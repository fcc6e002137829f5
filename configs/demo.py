"""The demo's config, gio_ada_jax/configs/demo.py (in the package: `python -m gio_ada_jax.demo`
loads it by default wherever the package is installed), for `--config configs/demo.py`."""

from gio_ada_jax.configs.demo import get_config  # noqa: F401
