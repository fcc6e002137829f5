"""PyTorch reference networks with upstream state_dict keys, for parity tests and conversion.

Only importable where PyTorch is installed; the JAX package never imports it.
"""

try:
  import torch  # noqa: F401  (checked first so the error below is the one users see)
except ImportError as error:
  raise ImportError(
      "gio_ada_jax.interop.torch_ref needs PyTorch: pip install torch==2.13.0") from error

from gio_ada_jax.interop.torch_ref.adaptsegnet import (
    Classifier_Module,
    DeeplabVGG,
    FCDiscriminator,
    deeplab_vgg_features,
)
from gio_ada_jax.interop.torch_ref.advent import FC_DISCRIMINATOR_KEY_MAP, get_fc_discriminator
from gio_ada_jax.interop.torch_ref.cyclegan import (
    NLayerDiscriminator,
    ResnetBlock,
    ResnetGenerator,
    init_cyclegan_weights,
)
from gio_ada_jax.interop.torch_ref.cyclegan_step import CycleGanTorchStep, ImagePool
from gio_ada_jax.interop.torch_ref.gio_ada import GioAdaGenerator, GioAdaTaskNet, one_hot_labels
from gio_ada_jax.interop.torch_ref.step import (
    GioAdaTorchStep,
    StepConfig,
    depth_loss,
    gan_loss,
    make_optimisers,
    segmentation_loss,
)
from gio_ada_jax.interop.torch_ref.vgg import VGG16, vgg16_features

__all__ = [
    "Classifier_Module",
    "CycleGanTorchStep",
    "DeeplabVGG",
    "FCDiscriminator",
    "FC_DISCRIMINATOR_KEY_MAP",
    "GioAdaGenerator",
    "GioAdaTaskNet",
    "GioAdaTorchStep",
    "ImagePool",
    "NLayerDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "StepConfig",
    "VGG16",
    "deeplab_vgg_features",
    "depth_loss",
    "gan_loss",
    "get_fc_discriminator",
    "init_cyclegan_weights",
    "make_optimisers",
    "one_hot_labels",
    "segmentation_loss",
    "vgg16_features",
]
