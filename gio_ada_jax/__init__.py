"""GIO-Ada in JAX/Flax: geometry-guided input-output adaptation for semantic segmentation."""

__version__ = "0.1.0"
