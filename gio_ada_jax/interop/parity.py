"""Numerical parity of the Flax networks and training steps with the PyTorch reference.

    python -m gio_ada_jax.interop.parity --network task_net --checkpoint model.pth [--image img.png]
    python -m gio_ada_jax.interop.parity --network all          # every network, random weights
    python -m gio_ada_jax.interop.parity --step --config configs/test.py --height 32 --width 48 \
        [--num_steps 3] [--precision both|float32|float64]
    python -m gio_ada_jax.interop.parity --cyclegan_step --config configs/test.py --height 32 \
        --width 48 [--num_steps 4]

Networks: loads a PyTorch checkpoint (or random reference weights), converts it with
`convert.py`, runs both frameworks on the same input in float32 and prints the max abs and
relative error of every output. Exits 1 when an error exceeds --tolerance, 2 when the
checkpoint does not fit.

Steps (--step, --cyclegan_step): training steps in both frameworks from the same weights, a new
random batch each step, and each quantity compared in the precision that can decide it: one
float32 step (its losses; the CycleGAN's pools), then --num_steps float64 steps from the same
weights (JAX's x64 mode and float64 PyTorch networks): every loss of every step, then each
network's parameters (in units of N lr) and Adam moments (per tensor to its largest entry), and
every step count. Each printed line names the precision that decided it and its tolerance
(decided_checks); exits 1 when one fails. Adam's first update is about lr * sign(g) whatever its
betas, so only several steps check the betas, the learning rate and the relative weights of the
losses.
"""

import collections
import contextlib
import dataclasses
import functools
import sys
from typing import Any, Mapping

import jax
import numpy as np
import optax
from absl import flags
from ml_collections import config_flags

from gio_ada_jax import cli, config_checks, configs, models, variants
from gio_ada_jax.cyclegan import model as cyclegan
from gio_ada_jax.data.labels import IGNORE_LABEL
from gio_ada_jax.errors import UserError
from gio_ada_jax.images import UnreadableImage, read_rgb, resize_image
from gio_ada_jax.interop import convert
from gio_ada_jax.models.task_net import input_normalisation_affine
from gio_ada_jax.train import state as state_lib
from gio_ada_jax.train import step as train_step

NETWORKS = ("generator", "task_net", "deeplab_vgg", "patch_discriminator", "fc_discriminator",
            "fc_discriminator_advent")


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


def flax_network(network: str, model_config, variant: variants.Variant = variants.FINAL):
  """The Flax module that a `network` checkpoint converts into, in float32 (G_img with the
  inputs of `variant`)."""
  model_config = model_config.copy_and_resolve_references()
  model_config.dtype = model_config.param_dtype = "float32"  # Parity is defined in float32.
  built = models.build_models(model_config, variant)
  if network == "generator":
    return built.generator
  if network in ("task_net", "deeplab_vgg"):
    return built.task_net
  if network == "patch_discriminator":
    return built.d_img
  if network in ("fc_discriminator", "fc_discriminator_advent"):
    return models.FCDiscriminator(model_config.d_out.ndf, model_config.width)
  raise ValueError(f"unknown network {network!r}; choose one of {NETWORKS}")


def torch_network(network: str, model_config, input_channels: int,
                  variant: variants.Variant = variants.FINAL):
  """The PyTorch reference module with the upstream state_dict layout of `network` (G_img
  with the inputs of `variant`)."""
  from gio_ada_jax.interop import torch_ref  # pylint: disable=g-import-not-at-top  (torch)
  width, num_classes = model_config.width, model_config.num_classes
  if network == "generator":
    gen = model_config.generator
    return torch_ref.GioAdaGenerator(num_classes, variant.uses_labels, variant.uses_depth,
                                     gen.ngf, gen.num_blocks, width)
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
  pixels = resize_image(read_rgb(path), height, width).astype(np.float32)
  return (pixels / 127.5 - 1.0)[None]


def network_inputs(network: str, model_config, input_channels: int, height: int, width: int,
                   seed: int = 0, image: np.ndarray | None = None,
                   variant: variants.Variant = variants.FINAL) -> dict[str, np.ndarray]:
  """NHWC inputs for `network`: an image in [-1, 1], plus the labels and depth that G_img
  takes in `variant`."""
  rng = np.random.default_rng(seed)
  if network == "generator":
    inputs = {"images": image if image is not None else
              rng.uniform(-1, 1, (1, height, width, 3)).astype(np.float32)}
    if variant.uses_labels:
      labels = rng.integers(0, model_config.num_classes, (1, height, width))
      labels[rng.random((1, height, width)) < 0.1] = IGNORE_LABEL  # some ignore pixels
      inputs["labels"] = labels.astype(np.int32)
    if variant.uses_depth:
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
                  input_channels: int | None = None,
                  variant: variants.Variant = variants.FINAL) -> list[OutputError]:
  """Run `network` in both frameworks from the same PyTorch weights and compare outputs.

  The weights are the checkpoint's, or the reference module's own random initialisation; G_img
  takes the inputs of `variant`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  state_dict = None
  if checkpoint is not None:
    state_dict = convert.strip_data_parallel_prefix(
        convert.load_torch_checkpoint(checkpoint, checkpoint_key))
    input_channels = input_channels or _first_layer_input_channels(network, state_dict)
  input_channels = input_channels or default_input_channels(network, model_config)

  torch.manual_seed(seed)
  reference = torch_network(network, model_config, input_channels, variant)
  if state_dict is None:
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  module = flax_network(network, model_config, variant)
  inputs = network_inputs(network, model_config, input_channels, height, width, seed, image,
                          variant)
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

# --------------------------------------------------------------------- whole-step parity

DTYPES = ("float32", "float64")

# What each precision decides, and to what tolerance (docs/development.md, "Step parity: what
# float32 and float64 decide", derives both).
# float32 decides the first step's forward values from identical weights (every loss, the
# CycleGAN's pooled translations): their rounding is about sqrt(L k) u32, 2.4e-5 relative for
# L = 35 layers of fan-in k = 4608 (the default widths), u32 = 2^-24. It cannot decide an
# update: Adam's first step moves a parameter by lr g / (|g| + eps), anywhere in [-lr, lr] for
# a gradient float32 does not resolve, and every later value inherits that.
FLOAT32_FORWARD_TOLERANCE = 1e-4
# float64 decides everything, every step. Losses, Adam moments and pools agree to about 1e-12
# relative; the tolerance is float32's unit roundoff: a difference below it is one no float32
# run can see.
FLOAT64_TOLERANCE = 2.0 ** -24


def float64_param_tolerance(adam_eps: float) -> float:
  """The float64 tolerance of the parameters, in units of N lr (about the most N Adam steps
  move one). An update lr m / (sqrt(v) + eps) turns a gradient's rounding error, u64 S for
  terms of summed magnitude S, into up to lr u64 S / eps: 1.1e-8 S lr at eps = 1e-8. This
  allows S up to 100 (measured: at most 0.2, dev/parity_sweep.py). The same bound in float32
  is 600 S lr, more than the 2 lr an update can differ by at all: float32 cannot decide the
  parameters."""
  return max(FLOAT64_TOLERANCE, 100 * 2.0 ** -53 / adam_eps)


@dataclasses.dataclass
class StepErrors:
  """How far N training steps in JAX are from the PyTorch reference's N steps (NaN where either
  side is not finite)."""

  loss_relative: dict[str, float]  # worst over the steps of |jax - torch| / max(|torch|, 1e-12)
  # After step N, max |jax - torch| of each network's parameters in units of N lr (about the
  # most N Adam steps move one), and the adam_eps that bounds their rounding.
  param_in_updates: dict[str, float] = dataclasses.field(default_factory=dict)
  adam_eps: float = 1e-8
  # After step N, per network, the worst over its tensors of max |jax - torch| / max |torch| of
  # Adam's first moment ("NETWORK/mu", PyTorch's exp_avg) and second ("NETWORK/nu", exp_avg_sq).
  moment_relative: dict[str, float] = dataclasses.field(default_factory=dict)
  # The CycleGAN's pools of translations after step N, the same way ("pool_s", "pool_t").
  pool_relative: dict[str, float] = dataclasses.field(default_factory=dict)
  # Every step count that is not N (the state's, each Adam's, each PyTorch parameter's) and
  # every parameter PyTorch's Adam holds no state for: [] when all agree.
  count_errors: list[str] = dataclasses.field(default_factory=list)
  loss_relative_per_step: list[dict[str, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Check:
  """One line of a step parity report: what was compared, which precision decided it."""

  precision: str
  name: str
  error: float
  tolerance: float

  @property
  def ok(self) -> bool:
    return self.error <= self.tolerance  # False for NaN


@dataclasses.dataclass
class StepReport:
  """Step parity in each precision: the lines each decides and the step counts that disagree."""

  checks: list[Check]
  count_errors: list[str]
  errors: dict[str, StepErrors]  # by precision, everything measured (decided or not)

  @property
  def passed(self) -> bool:
    return all(check.ok for check in self.checks) and not self.count_errors

  def failures(self) -> list[Check]:
    return [check for check in self.checks if not check.ok]


def decided_checks(errors: StepErrors, dtype: str) -> list[Check]:
  """The lines a `dtype` run decides: float32 its first step's losses and pools, float64 every
  loss of every step and the parameters, Adam moments and pools after the last."""
  if dtype == "float32":
    tolerance = FLOAT32_FORWARD_TOLERANCE
    return ([Check(dtype, f"{name}, step 1", err, tolerance)
             for name, err in errors.loss_relative_per_step[0].items()]
            + [Check(dtype, f"{name} after step 1", err, tolerance)
               for name, err in errors.pool_relative.items()])
  steps = len(errors.loss_relative_per_step)
  after = f"after step {steps}"
  return ([Check(dtype, f"{name}, worst of {steps} steps", err, FLOAT64_TOLERANCE)
           for name, err in errors.loss_relative.items()]
          + [Check(dtype, f"{name} params {after} (N lr)", err,
                   float64_param_tolerance(errors.adam_eps))
             for name, err in errors.param_in_updates.items()]
          + [Check(dtype, f"{name} {after}", err, FLOAT64_TOLERANCE)
             for name, err in {**errors.moment_relative, **errors.pool_relative}.items()])


def step_report(errors: Mapping[str, StepErrors]) -> StepReport:
  """The report of step errors measured in one or both precisions."""
  return StepReport(
      checks=[check for dtype, e in errors.items() for check in decided_checks(e, dtype)],
      count_errors=[f"{dtype}: {error}" for dtype, e in errors.items()
                    for error in e.count_errors],
      errors=dict(errors))


@dataclasses.dataclass
class JaxSteps:
  """N JAX training steps from one initial state: what the PyTorch side replays and compares."""

  config: Any  # resolved, with model.dtype and param_dtype set to `dtype`
  dtype: str
  initial_params: dict[str, Any]  # numpy
  batches: list[dict[str, np.ndarray]]  # one per step, in `dtype`
  metrics: list[dict[str, float]]  # one per step
  params: dict[str, Any]  # numpy, after the last step
  opt_states: dict[str, Any]  # numpy, after the last step
  step: int
  # CycleGAN: each step's pool draws {"s": (uniforms, indices), "t": ...} and the final pools
  # {"s": (images, count), ...}.
  draws: list[dict[str, tuple[np.ndarray, np.ndarray]]] = dataclasses.field(default_factory=list)
  pools: dict[str, tuple[np.ndarray, int]] = dataclasses.field(default_factory=dict)


def precision(dtype: str):
  """The context both frameworks' runs need: JAX's x64 mode for "float64", nothing for
  "float32". The mode ends with the block."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r} must be one of {DTYPES}.")
  if dtype == "float32":
    return contextlib.nullcontext()
  # jax.enable_x64 is the config's context manager (jax.experimental.enable_x64 in older
  # releases).
  x64 = getattr(jax, "enable_x64", None)
  if x64 is None:
    from jax.experimental import enable_x64 as x64  # pylint: disable=g-import-not-at-top
  return x64(True)


def _in_dtype(batch: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
  """The batch's float arrays in `dtype` (labels stay integers)."""
  return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in batch.items()}


def _with_dtype(config, dtype: str):
  config = config.copy_and_resolve_references()
  config.model.dtype = config.model.param_dtype = dtype
  return config


def _d_out_network(model_config, channels: int):
  """D_out in the config's kind and layout name, as a Flax module's PyTorch twin."""
  from gio_ada_jax.interop import torch_ref  # pylint: disable=g-import-not-at-top  (torch)
  d_out = model_config.d_out
  if d_out.kind == "patch":
    return "patch_discriminator", torch_ref.NLayerDiscriminator(channels, d_out.ndf,
                                                               d_out.n_layers, model_config.width)
  return "fc_discriminator", torch_ref.FCDiscriminator(channels, d_out.ndf, model_config.width)


def torch_networks(config, params, dtype: str = "float32"):
  """PyTorch twins of every network in `params` (config.variant's), in `dtype`, loaded with the
  same weights."""
  import torch  # pylint: disable=g-import-not-at-top
  model_config = config.model
  variant = variants.from_config(config)

  def load(module, layout, flax_params):
    module = module.to(getattr(torch, dtype))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in
                            convert.flax_to_torch(flax_params, layout).items()})
    return module

  networks = {"generator": None, "d_img": None, "d_out": None}
  networks["task_net"] = load(torch_network("task_net", model_config, 3), "task_net",
                              params["task_net"])
  if params["generator"]:
    networks["generator"] = load(torch_network("generator", model_config, 3, variant),
                                 "generator", params["generator"])
    networks["d_img"] = load(torch_network("patch_discriminator", model_config, 3),
                             "patch_discriminator", params["d_img"])
  d_outs = {}
  for name, c in variant.d_out_channels(model_config.num_classes).items():
    layout, module = _d_out_network(model_config, c)
    d_outs[name] = load(module, layout, params["d_out"][name])
  if d_outs:  # the reference takes one module, or a dict of them for "sep"
    networks["d_out"] = d_outs["main"] if list(d_outs) == ["main"] else d_outs
  return networks


def _gio_ada_parts(config, networks) -> list[tuple[tuple[str, ...], str, Any]]:
  """(path in the Flax params, layout, PyTorch module) of every present network's module."""
  parts = []
  if networks["generator"] is not None:
    parts += [(("generator",), "generator", networks["generator"]),
              (("d_img",), "patch_discriminator", networks["d_img"])]
  parts.append((("task_net",), "task_net", networks["task_net"]))
  d_out = networks["d_out"]
  if d_out is not None:
    layout = "patch_discriminator" if config.model.d_out.kind == "patch" else "fc_discriminator"
    modules = d_out if isinstance(d_out, dict) else {"main": d_out}
    parts += [(("d_out", name), layout, module) for name, module in modules.items()]
  return parts


def _numpy_state(module) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _adam_tensors(module, adam_state, key: str) -> dict[str, np.ndarray]:
  """PyTorch Adam's `key` ("exp_avg", "exp_avg_sq") of each named parameter of `module`
  (zeros where Adam holds no state; _count_errors names those)."""
  return {name: (adam_state[p][key] if p in adam_state else p.new_zeros(p.shape)).detach().numpy()
          for name, p in module.named_parameters()}


def _adam_state(opt_state):
  """The ScaleByAdamState (count, mu, nu) inside an optax Adam state."""
  found = [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
           if isinstance(s, optax.ScaleByAdamState)]
  if len(found) != 1:
    raise ValueError(f"expected one optax ScaleByAdamState in an Adam state, found {len(found)}")
  return found[0]


def _get(tree, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _worst(errors) -> float:
  """The largest error, NaN if any is NaN (Python's max would keep whichever came first)."""
  errors = list(errors)
  return float(np.max(errors)) if errors else 0.0


def _max_relative(ours, theirs) -> float:
  """Worst over the tensors of max |ours - theirs| / max |theirs| (the abs error where theirs
  is all 0, as the moments of the biases an InstanceNorm cancels)."""
  def relative(a, b):
    scale = float(np.max(np.abs(b), initial=0.0))
    return float(np.max(np.abs(np.asarray(a, np.float64) - b), initial=0.0)) / (scale or 1.0)
  return _worst(relative(a, b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)))


def _loss_errors(jax_metrics, torch_losses) -> list[dict[str, float]]:
  return [{name: abs(float(ours[name]) - value) / max(abs(value), 1e-12)
           for name, value in theirs.items()} for ours, theirs in zip(jax_metrics, torch_losses)]


def _count_errors(num_steps: int, jax_step: int, jax_counts: Mapping[str, int], parts,
                  adam_state) -> list[str]:
  """Every step count that is not num_steps, and every parameter without PyTorch Adam state."""
  errors = []
  if jax_step != num_steps:
    errors.append(f"the JAX state's step is {jax_step}, not {num_steps}")
  errors += [f"the JAX Adam of {name} counts {count} steps, not {num_steps}"
             for name, count in jax_counts.items() if count != num_steps]
  for path, _, module in parts:
    for name, p in module.named_parameters():
      where = "/".join(path + (name,))
      if p not in adam_state:
        errors.append(f"PyTorch's Adam holds no state for {where} (never stepped)")
      elif float(adam_state[p]["step"]) != num_steps:
        errors.append(f"PyTorch's Adam of {where} counts {float(adam_state[p]['step']):g} "
                      f"steps, not {num_steps}")
  return errors


def _max_abs(ours, theirs) -> float:
  return _worst(float(np.max(np.abs(np.asarray(a, np.float64) - b), initial=0.0))
                for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)))


def _step_errors(run: JaxSteps, torch_losses, parts, optimisers, moments,
                 jax_counts: Mapping[str, int], networks: tuple[str, ...],
                 learning_rate: float, adam_eps: float) -> StepErrors:
  """Losses at every step; params, Adam moments and counts after the last step.

  `moments` maps "mu" and "nu" to JAX trees shaped like run.params; `parts` lists
  (path in the params, layout, PyTorch module); `learning_rate` is the largest of the run.
  """
  adam_state = {p: s for optimiser in optimisers.values() for p, s in optimiser.state.items()}
  per_step = _loss_errors(run.metrics, torch_losses)
  loss_relative = {name: _worst(step[name] for step in per_step) for name in per_step[0]}
  param_in_updates = {name: 0.0 for name in networks}
  moment_relative = {}
  for path, layout, module in parts:
    name = path[0]
    ours = _get(run.params, path)
    theirs = convert.torch_to_flax(_numpy_state(module), layout, ours)
    param_in_updates[name] = _worst([param_in_updates[name], _max_abs(ours, theirs)
                                     / (len(run.batches) * learning_rate)])
    for moment, key in (("mu", "exp_avg"), ("nu", "exp_avg_sq")):
      ours = _get(moments[moment], path)
      theirs = convert.torch_to_flax(_adam_tensors(module, adam_state, key), layout, ours)
      moment_relative[f"{name}/{moment}"] = _worst(
          [moment_relative.get(f"{name}/{moment}", 0.0), _max_relative(ours, theirs)])
  counts = _count_errors(len(run.batches), run.step, jax_counts, parts, adam_state)
  return StepErrors(loss_relative, param_in_updates, adam_eps, moment_relative, {}, counts,
                    per_step)


def torch_reference_step(config, networks):
  """torch_ref.GioAdaTorchStep over `networks` (torch_networks' dict) with config.variant and
  config.train's λs, learning rate and per-network Adam settings."""
  from gio_ada_jax.interop import torch_ref  # pylint: disable=g-import-not-at-top  (torch)
  train = config.train
  optimisers = torch_ref.make_optimisers(
      networks["generator"], networks["task_net"], networks["d_img"], networks["d_out"],
      lr=train.learning_rate, eps=train.adam_eps,
      betas={name: tuple(getattr(train, f"{name}_betas")) for name in variants.NETWORKS})
  return torch_ref.GioAdaTorchStep(
      torch_ref.StepConfig(variant=variants.from_config(config),
                           lambda_depth=train.lambda_depth, lambda_input=train.lambda_input,
                           lambda_output=train.lambda_output, gan_loss=train.gan_loss,
                           num_classes=config.model.num_classes),
      networks["generator"], networks["task_net"], networks["d_img"], networks["d_out"],
      optimisers)


def torch_batch(batch: dict[str, np.ndarray], device=None) -> dict[str, Any]:
  """A step batch (NHWC numpy, step_batch's keys) as the PyTorch step's NCHW tensors."""
  import torch  # pylint: disable=g-import-not-at-top
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))  # noqa
  tensors = {k: nchw(v) for k, v in batch.items() if k != "source_label"}
  if "source_label" in batch:
    tensors["source_label"] = torch.from_numpy(batch["source_label"].astype(np.int64))
  return {k: v.to(device) for k, v in tensors.items()} if device is not None else tensors


def step_batch(num_classes: int, height: int, width: int, seed: int = 0,
               batch_size: int = 1) -> dict[str, np.ndarray]:
  """A random NHWC training batch (source with some ignore labels and invalid depth)."""
  rng = np.random.default_rng(seed)
  shape = (batch_size, height, width)
  labels = rng.integers(0, num_classes, shape)
  labels[rng.random(shape) < 0.1] = IGNORE_LABEL
  return {"source_image": rng.uniform(-1, 1, shape + (3,)).astype(np.float32),
          "source_label": labels.astype(np.int32),
          "source_depth": rng.uniform(0, 1, shape + (1,)).astype(np.float32),
          "source_depth_mask": (rng.random(shape + (1,)) > 0.2).astype(np.float32),
          "target_image": rng.uniform(-1, 1, shape + (3,)).astype(np.float32)}


def _cast(params, dtype: str):
  return jax.tree.map(lambda a: np.asarray(a, dtype), params)


def jax_steps(config, height: int, width: int, seed: int = 0, num_steps: int = 1,
              dtype: str = "float32", initial_params=None,
              compiler_options: dict[str, Any] | None = None) -> JaxSteps:
  """`num_steps` GIO-Ada steps in JAX from a fresh state (seed, or `initial_params` cast to
  `dtype`), step k on step_batch(seed + k), in `dtype` (float64: JAX's x64 mode, for this call
  only). `compiler_options` go to XLA for the step (jax.jit's)."""
  with precision(dtype):
    config = _with_dtype(config, dtype)
    variant = variants.from_config(config)
    built = models.build_models(config.model, variant)
    if initial_params is None:
      state = state_lib.create_state(built, variant, config, jax.random.key(seed), height, width)
    else:
      state = state_lib.state_from_params(_cast(initial_params, dtype),
                                          state_lib.make_optimizers(config.train))
    initial_params = jax.tree.map(np.asarray, state.params)
    step = jax.jit(functools.partial(
        train_step.train_step, models=built, optimizers=state_lib.make_optimizers(config.train),
        objective=train_step.objective_from_config(config.train, variant), axis_name=None),
                   compiler_options=compiler_options)
    batches, metrics = [], []
    with jax.default_matmul_precision("highest"):
      for k in range(num_steps):
        batches.append(_in_dtype(step_batch(config.model.num_classes, height, width, seed + k),
                                 dtype))
        state, step_metrics = step(state, batches[-1])
        metrics.append({name: float(v) for name, v in step_metrics.items()})
    return JaxSteps(config, dtype, initial_params, batches, metrics,
                    jax.tree.map(np.asarray, state.params),
                    jax.tree.map(np.asarray, state.opt_states), int(state.step))


def torch_steps(run: JaxSteps, reference=None):
  """The PyTorch reference over run's batches from run's initial weights: (networks, the
  reference step, its losses at every step). `reference(config, networks)` builds the step
  (default torch_reference_step; another one shows what a difference in it does)."""
  networks = torch_networks(run.config, run.initial_params, run.dtype)
  step = (reference or torch_reference_step)(run.config, networks)
  losses = [step.step(torch_batch(batch)) for batch in run.batches]
  return networks, step, losses


def compare_steps(run: JaxSteps, reference=None) -> StepErrors:
  """run's JAX steps against the PyTorch reference's (torch_steps) over the same batches."""
  networks, step, losses = torch_steps(run, reference)
  adam = {name: _adam_state(run.opt_states[name]) for name in variants.NETWORKS}
  moments = {"mu": {name: s.mu for name, s in adam.items()},
             "nu": {name: s.nu for name, s in adam.items()}}
  counts = {name: int(s.count) for name, s in adam.items()}
  return _step_errors(run, losses, _gio_ada_parts(run.config, networks), step.optimisers,
                      moments, counts, variants.NETWORKS, run.config.train.learning_rate,
                      run.config.train.adam_eps)


def _steps_in(dtype: str, num_steps: int) -> int:
  """float32 decides only the first step (FLOAT32_FORWARD_TOLERANCE); float64 runs them all."""
  return 1 if dtype == "float32" else num_steps


def check_step(config, height: int, width: int, seed: int = 0, num_steps: int = 3,
               dtypes: tuple[str, ...] = DTYPES, reference=None) -> StepReport:
  """GIO-Ada steps in JAX and in the PyTorch reference from identical weights and batches (step
  k on step_batch(seed + k)), in each of `dtypes` in both frameworks: float32 one step,
  float64 `num_steps` from the same weights, each compared where it decides (decided_checks).

  Adam's first update is about lr * sign(g) whatever its betas, so one step checks little of
  the optimiser; from the second step on, the betas, the learning rate and the relative weights
  of the losses all move the parameters, and the Adam moments show them at every step.
  `reference` builds the PyTorch step (torch_steps).
  """
  runs = step_runs(config, height, width, seed, num_steps, dtypes)
  return step_report({dtype: compare_steps(run, reference) for dtype, run in runs.items()})


def step_runs(config, height: int, width: int, seed: int = 0, num_steps: int = 3,
              dtypes: tuple[str, ...] = DTYPES, steps=None) -> dict[str, JaxSteps]:
  """The JAX runs check_step compares (`steps`=cyclegan_jax_steps: check_cyclegan_step's), by
  precision: float32 one step, float64 `num_steps` from the float32 run's weights."""
  runs, initial_params = {}, None
  for dtype in dtypes:
    runs[dtype] = (steps or jax_steps)(config, height, width, seed, _steps_in(dtype, num_steps),
                                       dtype, initial_params)
    initial_params = runs[dtype].initial_params
  return runs


def cyclegan_batch(height: int, width: int, seed: int = 0,
                   batch_size: int = 1) -> dict[str, np.ndarray]:
  """Random NHWC source and target images in [-1, 1] for a CycleGAN step."""
  rng = np.random.default_rng(seed)
  shape = (batch_size, height, width, 3)
  return {"source_image": rng.uniform(-1, 1, shape).astype(np.float32),
          "target_image": rng.uniform(-1, 1, shape).astype(np.float32)}


def torch_cyclegan_step(config, params, dtype: str = "float32", draw=None):
  """torch_ref.CycleGanTorchStep with upstream's networks, in `dtype`, loaded with `params`
  (JAX names); `draw` gives its pools' random draws (torch_ref.ImagePool)."""
  import torch  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.interop import torch_ref  # pylint: disable=g-import-not-at-top  (torch)
  cg, width = config.cyclegan, config.model.width
  networks = {}
  for name in cyclegan.NETWORKS:
    if name in cyclegan.GENERATORS:
      module = torch_ref.ResnetGenerator(3, 3, cg.ngf, cg.num_blocks, width=width)
      layout = "generator"
    else:
      module = torch_ref.NLayerDiscriminator(3, cg.ndf, cg.n_layers, width)
      layout = "patch_discriminator"
    module = module.to(getattr(torch, dtype))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in
                            convert.flax_to_torch(params[name], layout).items()})
    networks[name] = module
  return torch_ref.CycleGanTorchStep(
      networks["g_st"], networks["g_ts"], networks["d_s"], networks["d_t"],
      lr=cg.learning_rate, betas=tuple(cg.betas), eps=config.train.adam_eps,
      lambda_cycle=cg.lambda_cycle, lambda_identity=cg.lambda_identity, gan_mode=cg.gan_loss,
      pool_size=cg.pool_size, draw=draw)


def cyclegan_jax_steps(config, height: int, width: int, seed: int = 0, num_steps: int = 1,
                       dtype: str = "float32", initial_params=None) -> JaxSteps:
  """`num_steps` CycleGAN steps in JAX (step k on cyclegan_batch(seed + k)) with the pool
  draws of each step, in `dtype`, from a fresh state (seed, or `initial_params` cast to
  `dtype` with the seed's pool draws)."""
  with precision(dtype):
    config = _with_dtype(config, dtype)
    built = cyclegan.build_models(config)
    state = cyclegan.create_state(built, config, jax.random.key(seed), height, width) if (
        initial_params is None) else cyclegan.state_from_params(
            _cast(initial_params, dtype), config, jax.random.split(jax.random.key(seed))[1],
            height, width)
    initial_params = jax.tree.map(np.asarray, state.params)
    step = jax.jit(functools.partial(cyclegan.train_step, models=built,
                                     optimizers=cyclegan.make_optimizers(config),
                                     cyclegan_config=config.cyclegan, axis_name=None))
    batches, metrics, draws = [], [], []
    with jax.default_matmul_precision("highest"):
      for k in range(num_steps):
        batches.append(_in_dtype(cyclegan_batch(height, width, seed + k), dtype))
        keys = cyclegan.pool_keys(state.rng, state.step)
        count = batches[-1]["source_image"].shape[0]
        draws.append({domain: tuple(np.asarray(a) for a in cyclegan.pool_draws(
            keys[domain], count, config.cyclegan.pool_size)) for domain in ("s", "t")})
        state, step_metrics = step(state, batches[-1])
        metrics.append({name: float(v) for name, v in step_metrics.items()})
    pools = {domain: (np.asarray(pool.images), int(pool.count))
             for domain, pool in state.pools.items()}
    return JaxSteps(config, dtype, initial_params, batches, metrics,
                    jax.tree.map(np.asarray, state.params),
                    jax.tree.map(np.asarray, state.opt_states), int(state.step), draws, pools)


def compare_cyclegan_steps(run: JaxSteps) -> StepErrors:
  """run's CycleGAN steps against the PyTorch reference's, which takes each step's learning
  rate from the schedule and draws what JAX drew: each step's draws for the images that find
  their pool full (the only ones upstream draws for)."""
  queue = collections.deque()
  reference = torch_cyclegan_step(run.config, run.initial_params, run.dtype, queue.popleft)
  size = run.config.cyclegan.pool_size
  losses = []
  for k, (batch, draws) in enumerate(zip(run.batches, run.draws)):
    # The schedule's value as the JAX step computes it, from optax's int32 step count: float32,
    # in x64 mode too (float32(2e-4) is 2.5e-8 off 2e-4, which the float64 check would see).
    learning_rate = float(cyclegan.learning_rate(run.config.cyclegan)(np.int32(k)))
    for optimiser in reference.optimisers.values():  # the schedule, as upstream's scheduler
      for group in optimiser.param_groups:
        group["lr"] = learning_rate
    for domain in ("s", "t"):
      stored = len(reference.pools[domain].images)
      queue.extend((float(u), int(i)) for j, (u, i) in enumerate(zip(*draws[domain]))
                   if size and stored + j >= size)
    tensors = torch_batch(batch)
    losses.append(reference.step(tensors["source_image"], tensors["target_image"]))
    if queue:
      raise AssertionError(f"the PyTorch pools used {len(queue)} draws fewer than expected")
  parts = [((name,), "generator" if name in cyclegan.GENERATORS else "patch_discriminator",
            module) for name, module in reference.networks.items()]
  adam = {group: _adam_state(s) for group, s in run.opt_states.items()}
  moments = {"mu": {k: v for s in adam.values() for k, v in s.mu.items()},
             "nu": {k: v for s in adam.values() for k, v in s.nu.items()}}
  counts = {group: int(s.count) for group, s in adam.items()}
  errors = _step_errors(run, losses, parts, reference.optimisers, moments, counts,
                        cyclegan.NETWORKS, run.config.cyclegan.learning_rate,
                        run.config.train.adam_eps)
  for domain, pool in reference.pools.items():  # the pools hold the same translations
    images, count = run.pools[domain]
    if count != len(pool.images):
      errors.count_errors.append(f"the JAX pool {domain!r} holds {count} images, PyTorch's "
                                 f"{len(pool.images)}")
    if pool.images:
      theirs = np.concatenate([p.numpy() for p in pool.images]).transpose(0, 2, 3, 1)
      errors.pool_relative[f"pool_{domain}"] = _max_relative(images[:len(pool.images)], theirs)
  return errors


def check_cyclegan_step(config, height: int, width: int, seed: int = 0, num_steps: int = 3,
                        dtypes: tuple[str, ...] = DTYPES) -> StepReport:
  """CycleGAN steps in JAX and in the PyTorch reference from identical weights and batches, in
  each of `dtypes` as check_step (float32 one step, float64 `num_steps`); the pools start
  empty and persist across the steps, and PyTorch's pools take JAX's draws."""
  runs = step_runs(config, height, width, seed, num_steps, dtypes, cyclegan_jax_steps)
  return step_report({dtype: compare_cyclegan_steps(run) for dtype, run in runs.items()})


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Command-line flags, defined only when this module runs as a program."""
  config_flags.DEFINE_config_file(
      "config", configs.path("default"),
      "Model config; override fields with --config.model.X=v.")
  flags.DEFINE_enum("network", "all", NETWORKS + ("all",), "Network to check.")
  flags.DEFINE_string("checkpoint", None, "PyTorch .pth state_dict (default: the reference's "
                      "random initialisation).")
  flags.DEFINE_string("checkpoint_key", None, "Entry of the .pth that holds the state_dict.")
  flags.DEFINE_string("image", None, "Image file to run on (default: random input).")
  flags.DEFINE_integer("height", 97, "Input height.")
  flags.DEFINE_integer("width", 61, "Input width.")
  flags.DEFINE_float("tolerance", 1e-4, "Largest allowed max abs error.")
  flags.DEFINE_integer("seed", 0, "Seed for random weights and inputs.")
  flags.DEFINE_bool("step", False, "Compare whole training steps (the losses of every step, "
                    "then the parameters, Adam moments and step counts of all four networks) "
                    "instead of forward passes; uses config.variant and --height/--width.")
  flags.DEFINE_bool("cyclegan_step", False, "Compare whole CycleGAN steps ('cg': losses, "
                    "the four networks, their Adam moments, the pools) with config.cyclegan's "
                    "settings.")
  flags.DEFINE_integer("num_steps", 3, "Steps in float64 with --step / --cyclegan_step "
                       "(Adam's first update is about lr * sign(g) whatever its betas: use "
                       ">= 3); float32 runs one.")
  flags.DEFINE_enum("precision", "both", list(DTYPES) + ["both"], "Which runs of --step and "
                    "--cyclegan_step: float32 (one step: its losses and pools), float64 (every "
                    "step, everything; JAX's x64 mode) or both.")


def format_step_report(report: StepReport) -> str:
  """One line per comparison (the precision that decided it, the error, its tolerance, ok or
  FAIL), then the step counts that disagree."""
  lines = [f"{'precision':<10} {'compared':<36} {'error':>10} {'tolerance':>10}  status"]
  lines += [f"{c.precision:<10} {c.name:<36} {c.error:>10.3e} {c.tolerance:>10.1e}  "
            f"{'ok' if c.ok else 'FAIL'}" for c in report.checks]
  lines += [f"FAIL: {error}" for error in report.count_errors]
  return "\n".join(lines)


def _main_step() -> int:
  dtypes = DTYPES if FLAGS.precision == "both" else (FLAGS.precision,)
  steps = " and ".join(f"{_steps_in(d, FLAGS.num_steps)} in {d}" for d in dtypes)
  size = f"{FLAGS.height}x{FLAGS.width}"
  if FLAGS.cyclegan_step:
    report = check_cyclegan_step(FLAGS.config, FLAGS.height, FLAGS.width, FLAGS.seed,
                                 FLAGS.num_steps, dtypes)
    print(f"CycleGAN steps: {steps}, {size}")
  else:
    report = check_step(FLAGS.config, FLAGS.height, FLAGS.width, FLAGS.seed, FLAGS.num_steps,
                        dtypes)
    variant = variants.from_config(FLAGS.config)
    print(f"GIO-Ada steps: {steps}; input level {variant.input_level!r}, output level "
          f"{variant.output_level!r}, {size}")
  print(format_step_report(report))
  print("PASS" if report.passed else "FAIL")
  return 0 if report.passed else 1


def with_cli_advice(error: Exception, network: str, checkpoint: str) -> Exception:
  """`error` with what this command's flags can do about it."""
  if isinstance(error, convert.LayoutMismatch):
    return error.explained(
        f"--checkpoint {checkpoint}",
        f"Check --network={network} and the config: its variant gives G_img's input "
        "channels (--config configs/default.py:INPUT,OUTPUT) and its model fields the widths "
        "and classes (--config.model.FIELD=VALUE: model.num_classes, model.width, "
        "model.generator.num_blocks, ...); or the file is not such a network.")
  if isinstance(error, convert.NestedStateDict) and error.candidates:
    return convert.NestedStateDict(
        f"{error} Or pass --checkpoint_key {error.candidates[0]}.", error.candidates)
  return error


def main(argv):
  del argv
  if FLAGS.num_steps < 1:
    print(f"parity: --num_steps={FLAGS.num_steps} must be at least 1 (3 or more compare "
          "Adam's betas).", file=sys.stderr)
    return 2
  jax.config.update("jax_default_matmul_precision", "highest")
  if FLAGS.step or FLAGS.cyclegan_step:
    return _main_step()
  config_checks.check_config(FLAGS.config)
  model_config = FLAGS.config.model
  variant = variants.from_config(FLAGS.config)  # G_img's inputs
  networks = NETWORKS if FLAGS.network == "all" else (FLAGS.network,)
  if FLAGS.checkpoint and len(networks) > 1:
    raise UserError("--checkpoint needs one --network, not 'all'.")
  try:
    image = load_image(FLAGS.image, FLAGS.height, FLAGS.width) if FLAGS.image else None
  except UnreadableImage as e:
    print(f"parity: --image {e}", file=sys.stderr)
    return 2
  errors = []
  for network in networks:
    try:
      errors += check_network(network, model_config, FLAGS.height, FLAGS.width,
                              FLAGS.checkpoint, FLAGS.checkpoint_key, image, FLAGS.seed,
                              variant=variant)
    except (convert.ConversionError, FileNotFoundError) as e:
      print(f"parity: {with_cli_advice(e, network, FLAGS.checkpoint)}", file=sys.stderr)
      return 2
  print(format_table(errors, FLAGS.tolerance))
  worst = max(e.max_abs for e in errors)
  print(f"worst max abs error {worst:.3e}; tolerance {FLAGS.tolerance:.1e}: "
        f"{'PASS' if worst <= FLAGS.tolerance else 'FAIL'}")
  return 0 if worst <= FLAGS.tolerance else 1


if __name__ == "__main__":
  _define_flags()
  cli.run(main, "parity")
