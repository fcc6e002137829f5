"""The four GIO-Ada networks as Flax modules, and their construction from the config."""

from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from gio_ada_jax.models.discriminators import FCDiscriminator, PatchDiscriminator
from gio_ada_jax.models.generator import ImageTransformNet
from gio_ada_jax.models.task_net import TaskNet

__all__ = ["FCDiscriminator", "GioAdaModels", "ImageTransformNet", "PatchDiscriminator",
           "TaskNet", "build_models"]

D_OUT_KINDS = ("patch", "fc")


class GioAdaModels(NamedTuple):
  """G_img, G_task, D_img and D_out as configured."""

  generator: ImageTransformNet
  task_net: TaskNet
  d_img: nn.Module
  d_out: nn.Module


def build_models(model_config) -> GioAdaModels:
  """Build the four networks from `config.model` (see configs/default.py)."""
  dtypes = dict(dtype=jnp.dtype(model_config.dtype),
                param_dtype=jnp.dtype(model_config.param_dtype))
  width = model_config.width
  gen = model_config.generator
  generator = ImageTransformNet(
      num_classes=model_config.num_classes, use_labels=gen.use_labels, use_depth=gen.use_depth,
      ngf=gen.ngf, num_blocks=gen.num_blocks, width=width, **dtypes)
  task = model_config.task_net
  task_net = TaskNet(
      num_classes=model_config.num_classes, width=width, input_norm=task.input_norm,
      aspp_dilations=tuple(task.aspp_dilations),
      aspp_summed_branches=task.aspp_summed_branches, **dtypes)
  d_img = PatchDiscriminator(ndf=model_config.d_img.ndf, n_layers=model_config.d_img.n_layers,
                             width=width, **dtypes)
  d_out_config = model_config.d_out
  if d_out_config.kind == "patch":
    d_out = PatchDiscriminator(ndf=d_out_config.ndf, n_layers=d_out_config.n_layers,
                               width=width, **dtypes)
  elif d_out_config.kind == "fc":
    d_out = FCDiscriminator(ndf=d_out_config.ndf, width=width, **dtypes)
  else:
    raise ValueError(f"model.d_out.kind={d_out_config.kind!r} is not known; choose one of "
                     f"{D_OUT_KINDS}.")
  return GioAdaModels(generator, task_net, d_img, d_out)
