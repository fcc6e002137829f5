"""The PyTorch GIO-Ada training step: every ablation runs, losses and updates by hand.

Width-1/16 networks with two residual blocks on 16×24 images keep each step well under a
second on CPU. The PatchGAN discriminators use n_layers=2: three layers need at least 32 rows.
"""

import copy
import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from gio_ada_jax.interop.torch_ref import (  # noqa: E402
    GioAdaGenerator,
    GioAdaTaskNet,
    GioAdaTorchStep,
    NLayerDiscriminator,
    StepConfig,
    depth_loss,
    gan_loss,
    make_optimisers,
    segmentation_loss,
)
from gio_ada_jax.interop.torch_ref.step import frozen  # noqa: E402
from gio_ada_jax.variants import Variant  # noqa: E402

NUM_CLASSES = 10
WIDTH = 1 / 16
HEIGHT, WIDTH_PX = 16, 24

# Every input level of Table 2 (with output "joint") and output level of Table 3 (with input
# "+sd"): each network of the step takes part in some of them.
TABLE_2 = [(level, "joint") for level in ("na", "gd", "+d", "+s", "+sd")]
TABLE_3 = [("+sd", level) for level in ("na", "ss", "depth", "sep")]  # ("+sd", "joint") above.

# Gradient agreement relative to the network's largest gradient entry: the hand losses are
# written differently (log-sigmoid, a masked mean) so they differ by rounding, while a leak
# between the phases would be of the order of the gradients themselves.
GRAD_RTOL = 1e-4

LOSS_NAMES = ("loss_seg", "loss_depth", "loss_g_input_adv", "loss_g_output_adv", "loss_g",
              "loss_d_img", "loss_d_out")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
  """Runs PyTorch on one thread for this module, then restores the count.

  These tensors are too small to gain from threads, and when other processes share the CPUs
  PyTorch's intra-op threads made this module about 20 times slower.
  """
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def discriminator(channels: int) -> NLayerDiscriminator:
  return NLayerDiscriminator(channels, n_layers=2, width=WIDTH)


def build(input_level: str = "+sd", output_level: str = "joint", seed: int = 0,
          **config_overrides) -> GioAdaTorchStep:
  """A seeded step with tiny networks for the given ablation."""
  torch.manual_seed(seed)
  config = StepConfig(variant=Variant(input_level, output_level), num_classes=NUM_CLASSES,
                      **config_overrides)
  generator = d_img = d_out = None
  if config.variant.has_generator:
    generator = GioAdaGenerator(NUM_CLASSES, use_labels=config.variant.uses_labels,
                                use_depth=config.variant.uses_depth, n_blocks=2, width=WIDTH)
    d_img = discriminator(3)
  task_net = GioAdaTaskNet(NUM_CLASSES, width=WIDTH)
  if output_level == "sep":
    d_out = {"seg": discriminator(NUM_CLASSES), "depth": discriminator(1)}
  elif output_level != "na":
    d_out = discriminator({"ss": NUM_CLASSES, "depth": 1, "joint": NUM_CLASSES + 1}[output_level])
  optimisers = make_optimisers(generator, task_net, d_img, d_out)
  return GioAdaTorchStep(config, generator, task_net, d_img, d_out, optimisers)


def make_batch(seed: int = 1) -> dict[str, torch.Tensor]:
  """One source and one target image, some ignored labels and some invalid depth."""
  generator = torch.Generator().manual_seed(seed)
  shape = (1, 1, HEIGHT, WIDTH_PX)
  labels = torch.randint(0, NUM_CLASSES, (1, HEIGHT, WIDTH_PX), generator=generator)
  labels[:, :3] = 255
  return {
      "source_image": torch.rand((1, 3, HEIGHT, WIDTH_PX), generator=generator) * 2 - 1,
      "source_label": labels,
      "source_depth": torch.rand(shape, generator=generator),
      "source_depth_mask": (torch.rand(shape, generator=generator) > 0.3).float(),
      "target_image": torch.rand((1, 3, HEIGHT, WIDTH_PX), generator=generator) * 2 - 1,
  }


def networks(step: GioAdaTorchStep) -> dict[str, list[torch.nn.Module]]:
  """Name -> modules of the present networks ("sep" D_out has two)."""
  named = {"generator": step.generator, "task_net": step.task_net, "d_img": step.d_img,
           "d_out": step.d_out}
  result = {}
  for name, network in named.items():
    if network is None:
      continue
    result[name] = list(network.values()) if isinstance(network, dict) else [network]
  return result


def parameters(modules) -> list[torch.nn.Parameter]:
  return [p for module in modules for p in module.parameters()]


def snapshot(step: GioAdaTorchStep) -> dict[str, list[torch.Tensor]]:
  return {name: [p.detach().clone() for p in parameters(modules)]
          for name, modules in networks(step).items()}


# --- Every ablation of the paper's Tables 2 and 3 ----------------------------------------------


@pytest.mark.parametrize("input_level,output_level", TABLE_2 + TABLE_3)
def test_every_ablation_runs_and_updates_every_network(input_level, output_level):
  step = build(input_level, output_level)
  before = snapshot(step)
  losses = step.step(make_batch())

  assert set(losses) == set(LOSS_NAMES)
  assert all(isinstance(v, float) for v in losses.values())
  # Equation 5 with the paper's weights (0.1, 0.1, 0.001), typed out; the untrained task
  # network's cross-entropy sits at log C.
  assert losses["loss_g"] == pytest.approx(
      losses["loss_seg"] + 0.1 * losses["loss_depth"] + 0.1 * losses["loss_g_input_adv"]
      + 0.001 * losses["loss_g_output_adv"], rel=1e-6)
  assert losses["loss_seg"] == pytest.approx(math.log(NUM_CLASSES), rel=0.01)
  assert (losses["loss_g_input_adv"] == 0) == (input_level == "na")
  assert (losses["loss_d_img"] == 0) == (input_level == "na")
  assert (losses["loss_g_output_adv"] == 0) == (output_level == "na")
  assert (losses["loss_d_out"] == 0) == (output_level == "na")
  assert ("generator" in step.optimisers) == (input_level != "na")

  after = snapshot(step)
  for name, params in before.items():
    # Conv weights: every one must move (biases before an instance norm get no gradient).
    for old, new in zip(params, after[name]):
      if old.dim() > 1:
        assert not torch.equal(old, new), name


# --- Losses, gradients and updates by hand ----------------------------------------------------


def hand_gan(logits: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
  """-log σ(z) / -log(1 - σ(z)) for "bce", (z - 1)² / z² for "lsgan", mean over elements."""
  if kind == "bce":
    return -(F.logsigmoid(logits) if real else F.logsigmoid(-logits)).mean()
  return ((logits - (1.0 if real else 0.0)) ** 2).mean()


def hand_features(level: str, d_out, seg: torch.Tensor, depth: torch.Tensor):
  """(D_out module, input) pairs of the output level, written out again."""
  probabilities = torch.exp(F.log_softmax(seg, dim=1))
  if level == "ss":
    return [(d_out, probabilities)]
  if level == "depth":
    return [(d_out, depth)]
  if level == "joint":
    return [(d_out, torch.cat([probabilities, depth], dim=1))]
  return [(d_out["seg"], probabilities), (d_out["depth"], depth)]


@pytest.mark.parametrize("input_level,output_level,kind", [
    ("+sd", "joint", "bce"),
    ("+s", "sep", "lsgan"),
    ("na", "ss", "bce"),
])
def test_losses_gradients_and_updates_match_a_hand_computation(input_level, output_level, kind):
  """The step's losses, the gradients it leaves and its updates, against an independent copy.

  The copy's D gradients come from the discriminator losses only and its G_img / G_task
  gradients from the generator-side loss only: equality shows the freezing and detaching.
  """
  # Large adversarial weights make any leak between the phases show in the gradients.
  weights = dict(lambda_depth=0.3, lambda_input=0.7, lambda_output=0.5)
  step = build(input_level, output_level, gan_loss=kind, **weights)
  batch = make_batch()
  ref = copy.deepcopy(networks(step))
  losses = step.step(batch)

  generator = ref.get("generator", [None])[0]
  task_net = ref["task_net"][0]
  d_img = ref.get("d_img", [None])[0]
  d_out = ref["d_out"][0] if output_level != "sep" else dict(zip(("seg", "depth"),
                                                                 ref["d_out"]))
  config = step.config
  if generator is None:
    translated = batch["source_image"]
  else:
    translated = generator(batch["source_image"],
                           labels=batch["source_label"] if config.variant.uses_labels else None,
                           depth=batch["source_depth"] if config.variant.uses_depth else None)
  seg_s, depth_s = task_net(translated)
  seg_t, depth_t = task_net(batch["target_image"])

  labels, mask = batch["source_label"], batch["source_depth_mask"].bool()
  loss_seg = F.cross_entropy(seg_s, labels, ignore_index=255)
  loss_depth = (depth_s - batch["source_depth"]).abs()[mask].mean()
  input_adv = torch.zeros(()) if d_img is None else hand_gan(d_img(translated), True, kind)
  output_adv = sum(hand_gan(d(x), False, kind)
                   for d, x in hand_features(output_level, d_out, seg_t, depth_t))
  loss_g = (loss_seg + weights["lambda_depth"] * loss_depth + weights["lambda_input"] * input_adv
            + weights["lambda_output"] * output_adv)
  loss_d_img = torch.zeros(())
  if d_img is not None:
    loss_d_img = 0.5 * (hand_gan(d_img(batch["target_image"]), True, kind)
                        + hand_gan(d_img(translated.detach()), False, kind))
  source = hand_features(output_level, d_out, seg_s.detach(), depth_s.detach())
  target = hand_features(output_level, d_out, seg_t.detach(), depth_t.detach())
  loss_d_out = sum(0.5 * (hand_gan(d(xs), False, kind) + hand_gan(d(xt), True, kind))
                   for (d, xs), (_, xt) in zip(source, target))

  expected = {"loss_seg": loss_seg, "loss_depth": loss_depth, "loss_g_input_adv": input_adv,
              "loss_g_output_adv": output_adv, "loss_g": loss_g, "loss_d_img": loss_d_img,
              "loss_d_out": loss_d_out}
  for name, value in expected.items():
    assert losses[name] == pytest.approx(float(value.detach()), rel=1e-5, abs=1e-7), name

  # Gradients: each phase differentiates its own loss with respect to its own networks.
  phases = {"generator": loss_g, "task_net": loss_g, "d_img": loss_d_img, "d_out": loss_d_out}
  for name, modules in ref.items():
    params = parameters(modules)
    grads = torch.autograd.grad(phases[name], params, retain_graph=True, allow_unused=True)
    expected_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    got = [p.grad if p.grad is not None else torch.zeros_like(p)
           for p in parameters(networks(step)[name])]
    scale = max(float(g.abs().max()) for g in expected_grads)
    for mine, theirs in zip(got, expected_grads):
      torch.testing.assert_close(mine, theirs, rtol=0, atol=GRAD_RTOL * scale,
                                 msg=lambda message, name=name: f"{name}: {message}")

  # Updates: one Adam step with the default betas on the gradients the step left. (Not on
  # the hand gradients: Adam's first update is lr·g/(|g| + eps), which blows the rounding
  # noise of the biases ahead of an instance norm, whose true gradient is 0, up to ±lr.)
  for name, modules in ref.items():
    for mine, theirs in zip(parameters(networks(step)[name]), parameters(modules)):
      theirs.grad = None if mine.grad is None else mine.grad.clone()
  for optimiser in make_optimisers(generator, task_net, d_img, d_out).values():
    optimiser.step()
  for name, modules in ref.items():
    for mine, theirs in zip(parameters(networks(step)[name]), parameters(modules)):
      assert torch.equal(mine, theirs), name


def test_generator_side_backward_leaves_no_discriminator_gradient():
  step = build("+sd", "sep")
  batch = make_batch()
  outputs = step.forward(batch)
  with frozen(step.d_img, step.d_out):
    step.generator_losses(batch, outputs)["loss_g"].backward()
  discriminators = parameters(networks(step)["d_img"] + networks(step)["d_out"])
  assert all(p.grad is None for p in discriminators)
  assert all(p.requires_grad for p in discriminators)  # Restored after the block.
  assert any(p.grad is not None for p in step.generator.parameters())

  # The discriminator losses see detached inputs: no gradient reaches G_img or G_task.
  grads_before = [p.grad.clone() for p in step.task_net.parameters() if p.grad is not None]
  d_losses = step.discriminator_losses(batch, outputs)
  (d_losses["loss_d_img"] + d_losses["loss_d_out"]).backward()
  grads_after = [p.grad for p in step.task_net.parameters() if p.grad is not None]
  assert all(torch.equal(a, b) for a, b in zip(grads_before, grads_after))
  assert all(p.grad is not None for p in discriminators)


# --- Pieces and checks ---------------------------------------------------------------------------


def test_losses_without_valid_pixels_are_zero():
  logits = torch.randn(1, NUM_CLASSES, 4, 5, requires_grad=True)
  labels = torch.full((1, 4, 5), 255)
  loss = segmentation_loss(logits, labels)
  loss.backward()
  assert loss.item() == 0.0
  assert torch.all(logits.grad == 0)
  depth = torch.rand(1, 1, 4, 5)
  assert depth_loss(depth, depth + 1, torch.zeros_like(depth)).item() == 0.0
  assert depth_loss(depth, depth + 0.5, torch.ones_like(depth)).item() == pytest.approx(0.5)


def test_gan_loss_values():
  logits = torch.tensor([[0.0, 2.0]])
  assert gan_loss(logits, True, "bce").item() == pytest.approx(
      (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(-2.0)))).item() / 2)
  assert gan_loss(logits, False, "lsgan").item() == pytest.approx(2.0)
  assert gan_loss(logits, True, "lsgan").item() == pytest.approx(1.0)


def test_make_optimisers_betas_and_shared_sep_optimiser():
  step = build("+sd", "sep")
  betas = {name: opt.param_groups[0]["betas"] for name, opt in step.optimisers.items()}
  assert betas == {"generator": (0.5, 0.999), "task_net": (0.9, 0.999),
                   "d_img": (0.5, 0.999), "d_out": (0.9, 0.99)}
  shared = step.optimisers["d_out"].param_groups[0]["params"]
  assert len(shared) == len(parameters(networks(step)["d_out"]))
  assert all(opt.param_groups[0]["lr"] == 2e-4 for opt in step.optimisers.values())


def test_mismatched_networks_are_rejected():
  with pytest.raises(ValueError, match="input level 'cyclegan'"):
    StepConfig(variant=Variant("cyclegan", "joint"))
  with pytest.raises(TypeError, match="Variant"):
    StepConfig(variant="+sd,joint")
  step = build("+sd", "joint")
  with pytest.raises(ValueError, match="use_labels"):
    GioAdaTorchStep(StepConfig(variant=Variant("+d", "joint")), step.generator, step.task_net,
                    step.d_img, step.d_out, step.optimisers)
  with pytest.raises(ValueError, match="use_labels"):  # gd: the image only
    GioAdaTorchStep(StepConfig(variant=Variant("gd", "joint")), step.generator, step.task_net,
                    step.d_img, step.d_out, step.optimisers)
  with pytest.raises(ValueError, match="output level"):
    GioAdaTorchStep(StepConfig(variant=Variant("+sd", "na")), step.generator, step.task_net,
                    step.d_img, step.d_out, step.optimisers)


def test_two_steps_are_deterministic():
  runs = []
  for _ in range(2):
    step = build("+sd", "joint", seed=3)
    for seed in (1, 2):
      step.step(make_batch(seed))
    runs.append(snapshot(step))
  for name, params in runs[0].items():
    assert all(torch.equal(a, b) for a, b in zip(params, runs[1][name])), name
