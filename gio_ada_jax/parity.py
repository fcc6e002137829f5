"""Numerical parity of the Flax networks with the PyTorch reference.

    python -m gio_ada_jax.parity --network task_net --checkpoint model.pth [--image img.png]
    python -m gio_ada_jax.parity --network all          # every network, random weights

Loads a PyTorch checkpoint (or random reference weights), converts it with `convert.py`, runs
both frameworks on the same input in float32 and prints the max abs and relative error of every
output. Exits 1 when an error exceeds --tolerance, 2 when the checkpoint does not fit.
"""

import dataclasses
import functools
import sys
from typing import Any, Mapping

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gio_ada_jax import convert, models
from gio_ada_jax.models.task_net import input_normalisation_affine

NETWORKS = ("generator", "task_net", "deeplab_vgg", "patch_discriminator", "fc_discriminator",
            "fc_discriminator_advent")
IGNORE_LABEL = 255


@dataclasses.dataclass
class OutputError:
  """How far one Flax output is from the PyTorch reference's."""

  network: str
  output: str
  shape: tuple[int, ...]
  max_abs: float
  relative: float  # max abs error / max abs value of the reference output


def default_input_channels(network: str, model_config) -> int:
  """Input channels of a discriminator: D_img sees RGB, D_out sees C + 1 (others: RGB)."""
  if network in ("fc_discriminator", "fc_discriminator_advent"):
    return model_config.num_classes + 1
  return 3


def flax_network(network: str, model_config):
  """The Flax module that a `network` checkpoint converts into, in float32."""
  model_config = model_config.copy_and_resolve_references()
  model_config.dtype = model_config.param_dtype = "float32"  # Parity is defined in float32.
  built = models.build_models(model_config)
  if network == "generator":
    return built.generator
  if network in ("task_net", "deeplab_vgg"):
    return built.task_net
  if network == "patch_discriminator":
    return built.d_img
  if network in ("fc_discriminator", "fc_discriminator_advent"):
    return models.FCDiscriminator(model_config.d_out.ndf, model_config.width)
  raise ValueError(f"unknown network {network!r}; choose one of {NETWORKS}")


def torch_network(network: str, model_config, input_channels: int):
  """The PyTorch reference module with the upstream state_dict layout of `network`."""
  from gio_ada_jax import torch_ref  # pylint: disable=g-import-not-at-top
  width, num_classes = model_config.width, model_config.num_classes
  if network == "generator":
    gen = model_config.generator
    return torch_ref.GioAdaGenerator(num_classes, gen.use_labels, gen.use_depth, gen.ngf,
                                     gen.num_blocks, width)
  if network == "task_net":
    task = model_config.task_net
    return torch_ref.GioAdaTaskNet(num_classes, width, task.input_norm,
                                   tuple(task.aspp_dilations), task.aspp_summed_branches)
  if network == "deeplab_vgg":
    return torch_ref.DeeplabVGG(num_classes, width,
                                model_config.task_net.aspp_summed_branches)
  if network == "patch_discriminator":
    d_img = model_config.d_img
    return torch_ref.NLayerDiscriminator(input_channels, d_img.ndf, d_img.n_layers, width)
  if network == "fc_discriminator":
    return torch_ref.FCDiscriminator(input_channels, model_config.d_out.ndf, width)
  if network == "fc_discriminator_advent":
    return torch_ref.get_fc_discriminator(input_channels, model_config.d_out.ndf, width)
  raise ValueError(f"unknown network {network!r}; choose one of {NETWORKS}")


def load_image(path: str, height: int, width: int) -> np.ndarray:
  """An RGB image file as a [1, H, W, 3] float32 array in [-1, 1]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image = image.convert("RGB").resize((width, height), Image.BILINEAR)
    pixels = np.asarray(image, np.float32)
  return (pixels / 127.5 - 1.0)[None]


def network_inputs(network: str, model_config, input_channels: int, height: int, width: int,
                   seed: int = 0, image: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """NHWC inputs for `network`: an image in [-1, 1], plus labels and depth for G_img."""
  rng = np.random.default_rng(seed)
  if network == "generator":
    gen = model_config.generator
    inputs = {"images": image if image is not None else
              rng.uniform(-1, 1, (1, height, width, 3)).astype(np.float32)}
    if gen.use_labels:
      labels = rng.integers(0, model_config.num_classes, (1, height, width))
      labels[rng.random((1, height, width)) < 0.1] = IGNORE_LABEL  # some ignore pixels
      inputs["labels"] = labels.astype(np.int32)
    if gen.use_depth:
      inputs["depth"] = rng.uniform(0, 1, (1, height, width, 1)).astype(np.float32)
    return inputs
  if network in ("task_net", "deeplab_vgg"):
    return {"images": image if image is not None else
            rng.uniform(-1, 1, (1, height, width, 3)).astype(np.float32)}
  # Discriminators: D_img on images, D_out on probabilities and depth; random values in [0, 1).
  return {"images": rng.uniform(0, 1, (1, height, width, input_channels)).astype(np.float32)}


def _call(fn, inputs: Mapping[str, Any]):
  """fn(images, **others): networks take the images first and labels/depth by name."""
  others = {k: v for k, v in inputs.items() if k != "images"}
  return fn(inputs["images"], **others)


def init_params(module, inputs: Mapping[str, np.ndarray], seed: int = 0):
  """Freshly initialised Flax params of `module` for these inputs."""
  init = lambda rng, a: _call(functools.partial(module.init, rng), a)  # noqa: E731
  return jax.jit(init)(jax.random.key(seed), dict(inputs))["params"]


def param_template(module, inputs: Mapping[str, np.ndarray]):
  """Zero params with the shapes and dtypes `module` has for these inputs (no RNG, no compile)."""
  shapes = jax.eval_shape(lambda a: _call(functools.partial(module.init, jax.random.key(0)), a),
                          dict(inputs))["params"]
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def run_flax(network: str, module, params, inputs: Mapping[str, np.ndarray]):
  """Named NHWC outputs of the Flax module."""
  with jax.default_matmul_precision("highest"):
    apply = lambda p, a: _call(functools.partial(module.apply, {"params": p}), a)  # noqa
    outputs = jax.jit(apply)(params, dict(inputs))
  if network in ("task_net", "deeplab_vgg"):
    seg_logits, depth = outputs
    named = {"seg_logits": seg_logits, "depth": depth}
    if network == "deeplab_vgg":
      del named["depth"]  # AdaptSegNet's network has no depth head.
    return {k: np.asarray(v) for k, v in named.items()}
  return {"output": np.asarray(outputs)}


def run_torch(network: str, module, inputs: Mapping[str, np.ndarray], model_config):
  """Named NHWC outputs of the PyTorch reference on the same inputs."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))  # noqa
  nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()  # noqa: E731
  module.eval()
  with torch.no_grad():
    images = nchw(inputs["images"])
    if network == "generator":
      labels = inputs.get("labels")
      labels = None if labels is None else torch.from_numpy(labels.astype(np.int64))
      depth = inputs.get("depth")
      depth = None if depth is None else nchw(depth)
      return {"output": nhwc(module(images, labels, depth))}
    if network == "task_net":
      seg_logits, depth = module(images)
      return {"seg_logits": nhwc(seg_logits), "depth": nhwc(depth)}
    if network == "deeplab_vgg":
      # The raw AdaptSegNet module: normalised input in, stride-8 logits out.
      flip, scale, offset = input_normalisation_affine(model_config.task_net.input_norm)
      if flip:
        images = images.flip(1)
      images = images * torch.from_numpy(scale)[None, :, None, None] + torch.from_numpy(
          offset)[None, :, None, None]
      logits = module(images)
      logits = F.interpolate(logits, size=images.shape[2:], mode="bilinear",
                             align_corners=True)
      return {"seg_logits": nhwc(logits)}
    return {"output": nhwc(module(images))}


def compare(network: str, flax_outputs, torch_outputs) -> list[OutputError]:
  """Max abs and relative error of every output."""
  errors = []
  for name, reference in torch_outputs.items():
    ours = flax_outputs[name]
    if ours.shape != reference.shape:
      raise AssertionError(f"{network}/{name}: Flax shape {ours.shape} != PyTorch "
                           f"{reference.shape}")
    max_abs = float(np.max(np.abs(ours.astype(np.float64) - reference)))
    scale = float(np.max(np.abs(reference))) or 1.0
    errors.append(OutputError(network, name, tuple(ours.shape), max_abs, max_abs / scale))
  return errors


def check_network(network: str, model_config, height: int, width: int,
                  checkpoint: str | None = None, checkpoint_key: str | None = None,
                  image: np.ndarray | None = None, seed: int = 0,
                  input_channels: int | None = None) -> list[OutputError]:
  """Run `network` in both frameworks from the same PyTorch weights and compare outputs.

  The weights are the checkpoint's, or the reference module's own random initialisation.
  """
  import torch  # pylint: disable=g-import-not-at-top
  state_dict = None
  if checkpoint is not None:
    state_dict = convert.strip_data_parallel_prefix(
        convert.load_torch_checkpoint(checkpoint, checkpoint_key))
    input_channels = input_channels or _first_layer_input_channels(network, state_dict)
  input_channels = input_channels or default_input_channels(network, model_config)

  torch.manual_seed(seed)
  reference = torch_network(network, model_config, input_channels)
  if state_dict is None:
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  module = flax_network(network, model_config)
  inputs = network_inputs(network, model_config, input_channels, height, width, seed, image)
  # Strict conversion against the Flax param shapes; the template's zeros stay only where the
  # format has nothing (DeeplabVGG has no depth head, which parity then does not compare).
  template = param_template(module, inputs)
  params = convert.torch_to_flax(state_dict, network, template=template)
  # convert.py has checked the checkpoint is complete; what the reference module lacks are
  # format extras (old InstanceNorm running stats), which upstream's loader drops too.
  own_keys = reference.state_dict().keys()
  reference.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()
                             if k in own_keys})
  return compare(network, run_flax(network, module, params, inputs),
                 run_torch(network, reference, inputs, model_config))


def _first_layer_input_channels(network: str, state_dict) -> int | None:
  """Input channels of a discriminator checkpoint's first conv (G_img's follow the config)."""
  first_keys = {"patch_discriminator": "model.0.weight",
                "fc_discriminator": "conv1.weight", "fc_discriminator_advent": "0.weight"}
  key = first_keys.get(network)
  if key is None or key not in state_dict:
    return None
  return int(np.shape(state_dict[key])[1])


def format_table(errors: list[OutputError], tolerance: float) -> str:
  """A fixed-width table of errors with ok / FAIL against the tolerance."""
  lines = [f"{'network':<24} {'output':<11} {'shape':<20} {'max abs err':>12} "
           f"{'rel err':>10}  status"]
  for e in errors:
    status = "ok" if e.max_abs <= tolerance else "FAIL"
    lines.append(f"{e.network:<24} {e.output:<11} {str(e.shape):<20} {e.max_abs:>12.3e} "
                 f"{e.relative:>10.3e}  {status}")
  return "\n".join(lines)

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Command-line flags, defined only when this module runs as a program."""
  config_flags.DEFINE_config_file(
      "config", "configs/default.py", "Model config; override fields with --config.model.X=v.")
  flags.DEFINE_enum("network", "all", NETWORKS + ("all",), "Network to check.")
  flags.DEFINE_string("checkpoint", None, "PyTorch .pth state_dict (default: the reference's "
                      "random initialisation).")
  flags.DEFINE_string("checkpoint_key", None, "Entry of the .pth that holds the state_dict.")
  flags.DEFINE_string("image", None, "Image file to run on (default: random input).")
  flags.DEFINE_integer("height", 97, "Input height.")
  flags.DEFINE_integer("width", 61, "Input width.")
  flags.DEFINE_float("tolerance", 1e-4, "Largest allowed max abs error.")
  flags.DEFINE_integer("seed", 0, "Seed for random weights and inputs.")


def main(argv):
  del argv
  jax.config.update("jax_default_matmul_precision", "highest")
  model_config = FLAGS.config.model
  networks = NETWORKS if FLAGS.network == "all" else (FLAGS.network,)
  if FLAGS.checkpoint and len(networks) > 1:
    raise app.UsageError("--checkpoint needs one --network, not 'all'.")
  image = load_image(FLAGS.image, FLAGS.height, FLAGS.width) if FLAGS.image else None
  errors = []
  for network in networks:
    try:
      errors += check_network(network, model_config, FLAGS.height, FLAGS.width,
                              FLAGS.checkpoint, FLAGS.checkpoint_key, image, FLAGS.seed)
    except (convert.ConversionError, FileNotFoundError) as e:
      print(f"parity: {e}", file=sys.stderr)
      return 2
  print(format_table(errors, FLAGS.tolerance))
  worst = max(e.max_abs for e in errors)
  print(f"worst max abs error {worst:.3e}; tolerance {FLAGS.tolerance:.1e}: "
        f"{'PASS' if worst <= FLAGS.tolerance else 'FAIL'}")
  return 0 if worst <= FLAGS.tolerance else 1


if __name__ == "__main__":
  _define_flags()
  sys.exit(app.run(main))
