"""The four GIO-Ada networks as Flax modules, and their construction from the config and the
variant."""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gio_ada_jax.errors import ConfigError
from gio_ada_jax.models import task_net as task_net_lib
from gio_ada_jax.models.discriminators import (FC_SMALLEST_INPUT, FCDiscriminator,
                                               PatchDiscriminator, patch_smallest_input)
from gio_ada_jax.models.generator import ImageTransformNet
from gio_ada_jax.models.task_net import TaskNet
from gio_ada_jax.variants import Variant

__all__ = ["FCDiscriminator", "GioAdaModels", "ImageTransformNet", "PatchDiscriminator",
           "TaskNet", "build_models", "check_generator_inputs", "instance_norm_bias_mask",
           "param_initializer"]


class GioAdaModels(NamedTuple):
  """G_img, G_task, D_img and D_out as configured."""

  generator: ImageTransformNet
  task_net: TaskNet
  d_img: nn.Module
  d_out: nn.Module


def subpixel_upsampling(upsampling: str) -> bool:
  """model.generator.upsampling: "subpixel", "dilated", or "auto" (subpixel on XLA:CPU only)."""
  if upsampling == "auto":
    return jax.default_backend() == "cpu"
  return upsampling == "subpixel"


def param_initializer(module: nn.Module):
  """`module`'s fresh parameters as one compiled program, (key, *example inputs) -> params.
  A program per network (not one for all of a state's networks) lets the networks several
  variants share (the task net, D_img) share it, and so a compilation cache when one is set;
  under jit or eval_shape it is traced into the caller's program."""
  return jax.jit(lambda key, *inputs: module.init(key, *inputs)["params"])


def build_models(model_config, variant: Variant) -> GioAdaModels:
  """Build the four networks from `config.model` (see configs/default.py), G_img with the
  inputs of `variant` (variants.from_config(config))."""
  dtypes = dict(dtype=jnp.dtype(model_config.dtype),
                param_dtype=jnp.dtype(model_config.param_dtype))
  width = model_config.width
  gen = model_config.generator
  generator = ImageTransformNet(
      num_classes=model_config.num_classes, use_labels=variant.uses_labels,
      use_depth=variant.uses_depth, ngf=gen.ngf, num_blocks=gen.num_blocks, width=width,
      residual_output=gen.residual_output,
      subpixel_upsampling=subpixel_upsampling(gen.upsampling), **dtypes)
  task = model_config.task_net
  task_net = TaskNet(
      num_classes=model_config.num_classes, width=width, input_norm=task.input_norm,
      aspp_dilations=tuple(task.aspp_dilations),
      aspp_summed_branches=task.aspp_summed_branches, **dtypes)
  d_img = PatchDiscriminator(ndf=model_config.d_img.ndf, n_layers=model_config.d_img.n_layers,
                             width=width, **dtypes)
  d_out_config = model_config.d_out
  if d_out_config.kind == "fc":
    d_out = FCDiscriminator(ndf=d_out_config.ndf, width=width, **dtypes)
  else:  # "patch"
    d_out = PatchDiscriminator(ndf=d_out_config.ndf, n_layers=d_out_config.n_layers,
                               width=width, **dtypes)
  return GioAdaModels(generator, task_net, d_img, d_out)


def check_input_size(model_config, variant: Variant, height: int, width: int,
                     cyclegan_n_layers: int) -> None:
  """ConfigError unless every network that `variant` trains takes height x width images
  (data.height, data.width): the task net's output stride, the PatchGANs' and the FC
  discriminator's halvings each need a smallest side."""
  smallest = {f"the task net (output stride {task_net_lib.OUTPUT_STRIDE})":
              task_net_lib.OUTPUT_STRIDE}
  if variant.has_generator:
    n = model_config.d_img.n_layers
    smallest[f"D_img (model.d_img.n_layers={n})"] = patch_smallest_input(n)
  if variant.d_out_inputs:
    d_out = model_config.d_out
    smallest[f"D_out (model.d_out.kind={d_out.kind!r}" + (
        f", n_layers={d_out.n_layers})" if d_out.kind == "patch" else ")")] = (
            patch_smallest_input(d_out.n_layers) if d_out.kind == "patch"
            else FC_SMALLEST_INPUT)
  if variant.trains_cyclegan:
    smallest[f"the CycleGAN's discriminators (cyclegan.n_layers={cyclegan_n_layers})"] = (
        patch_smallest_input(cyclegan_n_layers))
  network, needed = max(smallest.items(), key=lambda item: item[1])
  if min(height, width) < needed:
    raise ConfigError(
        f"data.height x data.width = {height}x{width}: {network} needs at least {needed} "
        f"pixels per side (variant {variant}). Raise --config.data.height and "
        "--config.data.width (the size the images are resized or cropped to).")


def check_generator_inputs(generator: ImageTransformNet, variant: Variant) -> None:
  """G_img was built for `variant`'s inputs (build_models with the same variant), or an error."""
  built = (generator.use_labels, generator.use_depth)
  if variant.has_generator and built != (variant.uses_labels, variant.uses_depth):
    raise ValueError(f"variant {variant} needs G_img with (use_labels, use_depth) = "
                     f"{(variant.uses_labels, variant.uses_depth)}, but it was built with "
                     f"{built}; build the models with the same variant.")


def _feeds_instance_norm(network: str, module: str, siblings) -> bool:
  """Whether a conv of `network` (named `module` among `siblings`) is followed by an IN."""
  if network == "generator":
    return module != "head"  # every conv but the output conv
  if "conv_0" in siblings:  # a PatchGAN: conv_1 .. conv_{n_layers}, not the first and last
    last = max(int(name.split("_")[1]) for name in siblings)
    return 0 < int(module.split("_")[1]) < last
  return False  # the task net and the FCDiscriminator have no normalisation


def instance_norm_bias_mask(network: str, params) -> dict:
  """True for every bias that feeds an InstanceNorm in `network`'s params, else False.

  InstanceNorm subtracts each channel's mean, so such a bias has no effect and its true
  gradient is exactly zero; autograd returns rounding noise instead, which Adam (an update of
  about lr * g / |g|) would turn into random steps of up to ±lr. The train step zeroes these
  gradients, as the PyTorch reference step does, so both keep the biases where they are.
  """
  if network == "d_out":  # one tree per output discriminator
    return {name: instance_norm_bias_mask("d_img", tree) for name, tree in params.items()}
  if network == "task_net":
    return jax.tree.map(lambda _: False, params)
  return {module: {leaf: leaf == "bias" and _feeds_instance_norm(network, module, params)
                   for leaf in leaves}
          for module, leaves in params.items()}
