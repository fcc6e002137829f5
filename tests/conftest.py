"""Shared test setup: float32 convolutions at full precision, configs by name."""

import jax
import pytest

# Parity is defined in float32; on accelerators XLA would otherwise use TF32-like precision.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def default_model_config():
  """Paper-sized networks (configs/default.py)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  return default.get_config().model


@pytest.fixture
def tiny_model_config():
  """Narrow networks for fast tests (configs/test.py)."""
  from configs import test  # pylint: disable=g-import-not-at-top
  return test.get_config().model

# JAX 0.10's default partitionable threefry makes XLA:CPU spend about a second compiling each
# random initializer; the classic threefry compiles in a fraction of that. Tests only need
# some random init, not the production one, so they use the fast one.
jax.config.update("jax_threefry_partitionable", False)
