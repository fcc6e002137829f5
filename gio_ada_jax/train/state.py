"""GioAdaState: the four parameter trees, their optimiser states and the step."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from gio_ada_jax.models import GioAdaModels, check_generator_inputs, param_initializer
from gio_ada_jax.variants import NETWORKS, Variant


@flax.struct.dataclass
class GioAdaState:
  """Everything a step reads and writes. Absent networks (e.g. G_img under "na") hold {}.

  No RNG: a GIO-Ada step draws nothing (no dropout, no sampling); the data's randomness lives
  in the input pipeline's own seeded state.
  """

  step: jax.Array
  params: dict[str, Any]
  opt_states: dict[str, Any]


def _learning_rate(train_config):
  if train_config.lr_schedule == "constant":
    return train_config.learning_rate
  if train_config.num_steps <= 0:  # "poly"
    raise ValueError("train.lr_schedule='poly' ends at train.num_steps, which is not resolved "
                     "yet (trainer.with_training_length derives it from train.num_epochs).")
  return optax.polynomial_schedule(train_config.learning_rate, 0.0, train_config.poly_power,
                                   train_config.num_steps)


def learning_rate_at(train_config, step: int) -> float:
  """The learning rate of step `step` (for logs)."""
  lr = _learning_rate(train_config)
  return float(lr(step)) if callable(lr) else float(lr)


def make_optimizers(train_config) -> dict[str, optax.GradientTransformation]:
  """One Adam per network with its own betas (configs/default.py)."""
  lr = _learning_rate(train_config)
  return {name: optax.adam(lr, *getattr(train_config, f"{name}_betas"),
                           eps=train_config.adam_eps)
          for name in NETWORKS}


def init_params(models: GioAdaModels, variant: Variant, num_classes: int, rng: jax.Array,
                height: int, width: int) -> dict[str, Any]:
  """Fresh parameters of every network `variant` uses (absent ones are {})."""
  keys = dict(zip(NETWORKS, jax.random.split(rng, len(NETWORKS))))
  image = jnp.zeros((1, height, width, 3), jnp.float32)
  params = {name: {} for name in NETWORKS}
  if variant.has_generator:
    check_generator_inputs(models.generator, variant)
    params["generator"] = param_initializer(models.generator)(
        keys["generator"], image, jnp.zeros((1, height, width), jnp.int32),
        jnp.zeros((1, height, width, 1), jnp.float32))
    params["d_img"] = param_initializer(models.d_img)(keys["d_img"], image)
  params["task_net"] = param_initializer(models.task_net)(keys["task_net"], image)
  channels = variant.d_out_channels(num_classes)
  d_out_keys = jax.random.split(keys["d_out"], max(len(channels), 1))
  init_d_out = param_initializer(models.d_out)
  params["d_out"] = {name: init_d_out(key, jnp.zeros((1, height, width, c)))
                     for key, (name, c) in zip(d_out_keys, channels.items())}
  return params


def create_state(models: GioAdaModels, variant: Variant, config, rng: jax.Array, height: int,
                 width: int) -> GioAdaState:
  """The initial state of `variant` (models built for it, config.model and config.train):
  parameters from `rng`, optimiser states and step 0."""
  # The first half, as when the state also held an RNG: a seed keeps giving the same networks.
  init_rng, _ = jax.random.split(rng)
  params = init_params(models, variant, config.model.num_classes, init_rng, height, width)
  # One program for the optimiser states: it compiles in less time than the Adam moments
  # take to initialise op by op.
  return jax.jit(functools.partial(state_from_params, optimizers=make_optimizers(
      config.train)))(params)


def state_from_params(params, optimizers) -> GioAdaState:
  """A step-0 state around given parameters (e.g. converted from PyTorch)."""
  opt_states = {name: optimizers[name].init(params[name]) for name in NETWORKS}
  return GioAdaState(step=jnp.zeros((), jnp.int32), params=params, opt_states=opt_states)
