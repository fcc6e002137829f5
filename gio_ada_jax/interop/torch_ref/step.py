"""One GIO-Ada training step in PyTorch: the reference the JAX train step must match.

The paper's objective (equation 5) as the project optimises it (the paper says only "the
adversarial training strategy"): one simultaneous update of the four networks. G_img and G_task
minimise L_seg + λ_depth·L_depth + λ_input·GAN(D_img(x̂_s) → real) + λ_output·GAN(D_out(target
outputs) → source), the non-saturating generator terms, the output one on target outputs only
(as AdaptSegNet); D_img and D_out are trained to tell target (label 1) from source (label 0), as
in equations 1 and 4. Every gradient comes from the parameters as they were before the step,
and everything stays float32.
"""

import contextlib
import dataclasses
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gio_ada_jax.data.labels import IGNORE_LABEL
from gio_ada_jax.variants import FINAL, NETWORKS, Variant

GAN_LOSSES = ("bce", "lsgan")

# Adam betas per network (configs/default.py): CycleGAN's for the transform net and its
# discriminator, PyTorch's defaults for the task net, AdaptSegNet's for the output discriminator.
DEFAULT_BETAS = {
    "generator": (0.5, 0.999),
    "task_net": (0.9, 0.999),
    "d_img": (0.5, 0.999),
    "d_out": (0.9, 0.99),
}


@dataclasses.dataclass
class StepConfig:
  """The variant, loss switches and weights of one step (configs/default.py's `variant` and
  `train` fields)."""
  # Paper Tables 2 and 3 (gio_ada_jax.variants; "cg" steps as "na", on images that a CycleGAN
  # translated beforehand).
  variant: Variant = FINAL
  lambda_depth: float = 0.1
  lambda_input: float = 0.1
  lambda_output: float = 0.001
  gan_loss: str = "bce"  # "bce" (BCEWithLogits, paper eq. 1 and 4) | "lsgan" (MSE).
  num_classes: int = 10

  def __post_init__(self):
    if not isinstance(self.variant, Variant):
      raise TypeError(f"variant={self.variant!r} must be a gio_ada_jax.variants.Variant "
                      "(variants.parse('INPUT,OUTPUT')).")
    if self.gan_loss not in GAN_LOSSES:
      raise ValueError(f"gan_loss={self.gan_loss!r} must be one of {GAN_LOSSES}.")


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
  """Cross-entropy over the pixels not labelled 255; 0 when there are none."""
  total = F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL, reduction="sum")
  # Written as sum / max(count, 1) rather than reduction="mean" (which gives NaN on an
  # all-ignored batch) so that both frameworks agree on that case too.
  count = (labels != IGNORE_LABEL).sum().to(logits.dtype)
  return total / torch.clamp(count, min=1.0)


def depth_loss(predicted: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """L1 over the valid depth pixels: sum(|d̂ - d|·mask) / max(sum(mask), 1)."""
  return (torch.abs(predicted - depth) * mask).sum() / torch.clamp(mask.sum(), min=1.0)


def gan_loss(logits: torch.Tensor, target_is_real: bool, kind: str = "bce") -> torch.Tensor:
  """Mean over every element of BCE-with-logits or squared error against all 1 or all 0."""
  target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
  if kind == "bce":
    return F.binary_cross_entropy_with_logits(logits, target)
  if kind == "lsgan":
    return F.mse_loss(logits, target)
  raise ValueError(f"gan_loss={kind!r} must be one of {GAN_LOSSES}.")


def _modules(network) -> list[nn.Module]:
  """A network as a list of modules: [] for None, both values of the "sep" D_out dict."""
  if network is None:
    return []
  if isinstance(network, nn.Module) and not isinstance(network, nn.ModuleDict):
    return [network]
  return [network["seg"], network["depth"]]


def _parameters(network) -> list[nn.Parameter]:
  return [p for module in _modules(network) for p in module.parameters()]


@contextlib.contextmanager
def frozen(*networks) -> Iterator[None]:
  """Turns off requires_grad of the networks' parameters for the block, then restores it.

  Used around the generator side's discriminator forward and backward, as CycleGAN's and
  AdaptSegNet's set_requires_grad(D, False): the graph never reaches the D parameters, so
  the generator-side loss leaves no gradient in them.
  """
  params = [p for network in networks for p in _parameters(network)]
  flags = [p.requires_grad for p in params]
  try:
    for p in params:
      p.requires_grad_(False)
    yield
  finally:
    for p, flag in zip(params, flags):
      p.requires_grad_(flag)


def make_optimisers(generator, task_net, d_img, d_out, lr: float | Mapping[str, float] = 2e-4,
                    betas: Mapping[str, tuple[float, float]] | None = None,
                    eps: float = 1e-8) -> dict[str, torch.optim.Adam]:
  """One Adam per present network; the "sep" D_out dict shares one Adam over both modules.

  `lr` is one rate for all or a mapping per network name; `betas` overrides DEFAULT_BETAS
  per network name.
  """
  betas = {**DEFAULT_BETAS, **(betas or {})}
  networks = dict(zip(NETWORKS, (generator, task_net, d_img, d_out)))
  optimisers = {}
  for name, network in networks.items():
    params = _parameters(network)
    if not params:
      continue
    rate = lr[name] if isinstance(lr, Mapping) else lr
    optimisers[name] = torch.optim.Adam(params, lr=rate, betas=betas[name], eps=eps)
  return optimisers


def instance_norm_biases(modules) -> list[nn.Parameter]:
  """Biases of convolutions whose output goes straight into an InstanceNorm2d.

  CycleGAN's networks are nn.Sequential chains (ResnetBlock.conv_block too), so a conv
  followed by an InstanceNorm2d in the same Sequential is exactly such a layer.
  """
  biases = []
  for module in modules:
    for sequential in (m for m in module.modules() if isinstance(m, nn.Sequential)):
      layers = list(sequential)
      for layer, following in zip(layers, layers[1:]):
        if (isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and layer.bias is not None
            and isinstance(following, nn.InstanceNorm2d)):
          biases.append(layer.bias)
  return biases


class GioAdaTorchStep:
  """Holds the PyTorch networks and their Adam optimisers; `step(batch)` does one update.

  `generator` is a GioAdaGenerator (None for input levels "na" and "cg", where
  StepConfig.variant.has_generator is False), `task_net` a GioAdaTaskNet, `d_img` a 3-channel
  discriminator (None for "na" and "cg"), `d_out` None for output level "na", one discriminator
  for "ss" (C channels), "depth" (1) or "joint" (C + 1), and a dict {"seg": C channels,
  "depth": 1 channel} for "sep". `optimisers` maps the names in NETWORKS of the present networks
  to their optimisers (see make_optimisers).
  """

  def __init__(self, config: StepConfig, generator, task_net, d_img, d_out,
               optimisers: Mapping[str, torch.optim.Optimizer]):
    self.config = config
    self.generator = generator
    self.task_net = task_net
    self.d_img = d_img
    self.d_out = d_out
    self.optimisers = dict(optimisers)
    self._check_networks()
    for module in self._all_modules():
      module.train()

  def _check_networks(self) -> None:
    config = self.config
    level = config.variant.input_level
    has_input = config.variant.has_generator
    if (self.generator is not None) != has_input or (self.d_img is not None) != has_input:
      raise ValueError(f"input level {level!r} needs generator and d_img "
                       f"{'set' if has_input else 'None'}.")
    if has_input:
      built = (getattr(self.generator, "use_labels", None),
               getattr(self.generator, "use_depth", None))
      if built != (config.variant.uses_labels, config.variant.uses_depth):
        raise ValueError(
            f"input level {level!r} needs a generator with (use_labels, "
            f"use_depth) = {(config.variant.uses_labels, config.variant.uses_depth)}, "
            f"got {built}.")
    if (self.d_out is None) != (config.variant.output_level == "na"):
      raise ValueError(f"output level {config.variant.output_level!r} and d_out disagree.")
    if config.variant.output_level == "sep" and not (
        hasattr(self.d_out, "keys") and set(self.d_out.keys()) == {"seg", "depth"}):
      raise ValueError('output level "sep" needs d_out = {"seg": ..., "depth": ...}.')
    networks = dict(zip(NETWORKS, (self.generator, self.task_net, self.d_img, self.d_out)))
    expected = {name for name, network in networks.items() if network is not None}
    if set(self.optimisers) != expected:
      raise ValueError(f"optimisers has {sorted(self.optimisers)}, expected {sorted(expected)}.")

  def _all_modules(self) -> list[nn.Module]:
    return [m for network in (self.generator, self.task_net, self.d_img, self.d_out)
            for m in _modules(network)]

  def translate(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """x̂_s: the source image through G_img, or unchanged for input level "na"."""
    if self.generator is None:
      return batch["source_image"]
    variant = self.config.variant
    return self.generator(batch["source_image"],
                          labels=batch["source_label"] if variant.uses_labels else None,
                          depth=batch["source_depth"] if variant.uses_depth else None)

  def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The generator side's forward pass: x̂_s and the task net's outputs on both domains."""
    translated = self.translate(batch)
    seg_s, depth_s = self.task_net(translated)
    seg_t, depth_t = self.task_net(batch["target_image"])
    return {"translated": translated, "seg_s": seg_s, "depth_s": depth_s,
            "seg_t": seg_t, "depth_t": depth_t}

  def output_pairs(self, seg: torch.Tensor,
                   depth: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
    """(D_out module, its input) for every output discriminator; [] for output level "na"."""
    level = self.config.variant.output_level
    if level == "na":
      return []
    if level == "ss":
      return [(self.d_out, F.softmax(seg, dim=1))]
    if level == "depth":
      return [(self.d_out, depth)]
    if level == "joint":
      return [(self.d_out, torch.cat([F.softmax(seg, dim=1), depth], dim=1))]
    return [(self.d_out["seg"], F.softmax(seg, dim=1)), (self.d_out["depth"], depth)]

  def generator_losses(self, batch: Mapping[str, torch.Tensor],
                       outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """L_G and its parts. Call it with the discriminators frozen (see `frozen`).

    The adversarial parts are reported unweighted; "loss_g" is the weighted total.
    """
    config = self.config
    zero = outputs["seg_s"].new_zeros(())
    loss_seg = segmentation_loss(outputs["seg_s"], batch["source_label"])
    loss_depth = depth_loss(outputs["depth_s"], batch["source_depth"],
                            batch["source_depth_mask"])
    # G_img wants D_img to call x̂_s real (1).
    input_adv = zero
    if self.d_img is not None:
      input_adv = gan_loss(self.d_img(outputs["translated"]), True, config.gan_loss)
    # G_task wants D_out to call the target outputs source (0); "sep" sums both terms.
    output_adv = zero
    for discriminator, features in self.output_pairs(outputs["seg_t"], outputs["depth_t"]):
      output_adv = output_adv + gan_loss(discriminator(features), False, config.gan_loss)
    loss_g = (loss_seg + config.lambda_depth * loss_depth + config.lambda_input * input_adv
              + config.lambda_output * output_adv)
    return {"loss_seg": loss_seg, "loss_depth": loss_depth, "loss_g_input_adv": input_adv,
            "loss_g_output_adv": output_adv, "loss_g": loss_g}

  def discriminator_losses(self, batch: Mapping[str, torch.Tensor],
                           outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """L_D_img and L_D_out on detached generator outputs: target is 1, source is 0."""
    kind = self.config.gan_loss
    zero = outputs["seg_s"].new_zeros(())
    loss_d_img = zero
    if self.d_img is not None:
      loss_d_img = 0.5 * (gan_loss(self.d_img(batch["target_image"]), True, kind)
                          + gan_loss(self.d_img(outputs["translated"].detach()), False, kind))
    loss_d_out = zero
    source = self.output_pairs(outputs["seg_s"].detach(), outputs["depth_s"].detach())
    target = self.output_pairs(outputs["seg_t"].detach(), outputs["depth_t"].detach())
    for (discriminator, source_features), (_, target_features) in zip(source, target):
      loss_d_out = loss_d_out + 0.5 * (gan_loss(discriminator(source_features), False, kind)
                                       + gan_loss(discriminator(target_features), True, kind))
    return {"loss_d_img": loss_d_img, "loss_d_out": loss_d_out}

  def step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """One simultaneous update of all four networks; returns the losses as floats.

    After it, every parameter's `.grad` holds the gradient its optimiser used.
    """
    for module in self._all_modules():
      module.zero_grad(set_to_none=True)
    outputs = self.forward(batch)
    with frozen(self.d_img, self.d_out):
      g_losses = self.generator_losses(batch, outputs)
      g_losses["loss_g"].backward()
    d_losses = self.discriminator_losses(batch, outputs)
    loss_d = d_losses["loss_d_img"] + d_losses["loss_d_out"]
    if loss_d.requires_grad:  # False when there is no discriminator at all.
      loss_d.backward()
    # A bias that feeds an InstanceNorm has exactly zero true gradient (the norm subtracts the
    # channel mean); autograd gives rounding noise that Adam would turn into steps of up to
    # ±lr. Zero it, as the JAX step does, so both frameworks keep such biases fixed.
    for bias in instance_norm_biases(self._all_modules()):
      if bias.grad is not None:
        bias.grad.zero_()
    # No parameter changed before this point, so every update uses pre-step gradients.
    for optimiser in self.optimisers.values():
      optimiser.step()
    return {name: float(value.detach()) for name, value in {**g_losses, **d_losses}.items()}
