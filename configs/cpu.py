"""The CPU config, gio_ada_jax/configs/cpu.py (in the package: the demo's config starts from it),
for `python train.py --config configs/cpu.py:+sd,joint --workdir /tmp/gio_ada_cpu`."""

from gio_ada_jax.configs.cpu import get_config  # noqa: F401
