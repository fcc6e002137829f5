"""A tiny configuration for tests: narrow networks, two residual blocks."""

from configs import default


def get_config():
  """Default settings with networks small enough for a CPU test suite."""
  config = default.get_config()
  config.model.width = 0.0625  # 1/16 of every channel count.
  config.model.generator.num_blocks = 2
  return config
