"""Every default of gio_ada_jax: gio_ada_jax/configs/default.py, one comment each.

The defaults live in the package because the library's programs start from them (and the
package never imports configs/); this file is that config for `--config configs/default.py`
and `from configs import default`.
"""

from gio_ada_jax.configs.default import get_config  # noqa: F401
