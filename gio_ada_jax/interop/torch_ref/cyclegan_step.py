"""One CycleGAN training step in PyTorch, as upstream's CycleGANModel.optimize_parameters
(junyanz/pytorch-CycleGAN-and-pix2pix, models/cycle_gan_model.py): the reference the JAX
step (gio_ada_jax/cyclegan/model.py) must match.

A is the source domain, B the target: G_A = g_st, G_B = g_ts, D_A (judges B) = d_t, D_B = d_s.
Two deliberate differences from upstream, shared with the JAX step and the GIO-Ada reference:
the pool's random draws are passed in (upstream calls Python's `random`), and the gradients of
biases that feed an InstanceNorm are zeroed before Adam (their true gradient is exactly 0).
"""

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from gio_ada_jax.interop.torch_ref.step import frozen, gan_loss, instance_norm_biases


class ImagePool:
  """Upstream's ImagePool.query, with its two random draws supplied by `draw`.

  `draw()` returns (uniform in [0, 1), index in [0, pool_size)); it is only called once the
  pool is full, as upstream draws only then.
  """

  def __init__(self, pool_size: int, draw: Callable[[], tuple[float, int]]):
    self.pool_size = pool_size
    self.images: list[torch.Tensor] = []
    self._draw = draw

  def query(self, images: torch.Tensor) -> torch.Tensor:
    if self.pool_size == 0:
      return images
    returned = []
    for image in images:
      image = image.detach()[None]
      if len(self.images) < self.pool_size:
        self.images.append(image)
        returned.append(image)
        continue
      uniform, index = self._draw()
      if uniform > 0.5:
        previous = self.images[index].clone()
        self.images[index] = image
        returned.append(previous)
      else:
        returned.append(image)
    return torch.cat(returned, 0)


class CycleGanTorchStep:
  """G_A, G_B (ResnetGenerator), D_A, D_B (NLayerDiscriminator), one Adam per pair."""

  def __init__(self, g_st, g_ts, d_s, d_t, *, lr: float = 2e-4,
               betas: tuple[float, float] = (0.5, 0.999), eps: float = 1e-8,
               lambda_cycle: float = 10.0, lambda_identity: float = 0.5,
               gan_mode: str = "lsgan", pool_size: int = 50,
               draw: Callable[[], tuple[float, int]] | None = None):
    self.networks = {"g_st": g_st, "g_ts": g_ts, "d_s": d_s, "d_t": d_t}
    self.lambda_cycle, self.lambda_identity, self.gan_mode = lambda_cycle, lambda_identity, gan_mode
    self.optimisers = {
        "generators": torch.optim.Adam(list(g_st.parameters()) + list(g_ts.parameters()),
                                       lr=lr, betas=betas, eps=eps),
        "discriminators": torch.optim.Adam(list(d_s.parameters()) + list(d_t.parameters()),
                                           lr=lr, betas=betas, eps=eps)}
    draw = draw or (lambda: (float(torch.rand(())), int(torch.randint(pool_size, ()))))
    self.pools = {"s": ImagePool(pool_size, draw), "t": ImagePool(pool_size, draw)}
    for module in self.networks.values():
      module.train()

  def generator_losses(self, source: torch.Tensor, target: torch.Tensor
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(losses, translations); the unweighted parts and the weighted total "loss_g"."""
    n = self.networks
    fake_t, fake_s = n["g_st"](source), n["g_ts"](target)
    losses = {
        "loss_gan_st": gan_loss(n["d_t"](fake_t), True, self.gan_mode),
        "loss_gan_ts": gan_loss(n["d_s"](fake_s), True, self.gan_mode),
        "loss_cycle_s": F.l1_loss(n["g_ts"](fake_t), source),
        "loss_cycle_t": F.l1_loss(n["g_st"](fake_s), target),
    }
    zero = source.new_zeros(())
    identity = self.lambda_identity > 0
    losses["loss_identity_s"] = F.l1_loss(n["g_ts"](source), source) if identity else zero
    losses["loss_identity_t"] = F.l1_loss(n["g_st"](target), target) if identity else zero
    lam = self.lambda_cycle
    losses["loss_g"] = (losses["loss_gan_st"] + losses["loss_gan_ts"]
                        + lam * (losses["loss_cycle_s"] + losses["loss_cycle_t"])
                        + lam * self.lambda_identity
                        * (losses["loss_identity_s"] + losses["loss_identity_t"]))
    return losses, {"fake_s": fake_s, "fake_t": fake_t}

  def discriminator_losses(self, source, target, fake_s, fake_t) -> dict[str, torch.Tensor]:
    """backward_D_basic for D_A and D_B: 0.5 (real + pooled fake)."""
    n, kind = self.networks, self.gan_mode
    return {"loss_d_s": 0.5 * (gan_loss(n["d_s"](source), True, kind)
                               + gan_loss(n["d_s"](fake_s.detach()), False, kind)),
            "loss_d_t": 0.5 * (gan_loss(n["d_t"](target), True, kind)
                               + gan_loss(n["d_t"](fake_t.detach()), False, kind))}

  def step(self, source: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """One update of both generators (discriminators frozen), then both discriminators on
    pooled translations; returns the losses as floats."""
    for module in self.networks.values():
      module.zero_grad(set_to_none=True)
    with frozen(self.networks["d_s"], self.networks["d_t"]):
      g_losses, fakes = self.generator_losses(source, target)
      g_losses["loss_g"].backward()
    # Upstream steps G here; D's loss below reads only detached translations, so stepping
    # after it (as the JAX step does) gives the same update.
    fake_s = self.pools["s"].query(fakes["fake_s"])
    fake_t = self.pools["t"].query(fakes["fake_t"])
    d_losses = self.discriminator_losses(source, target, fake_s, fake_t)
    (d_losses["loss_d_s"] + d_losses["loss_d_t"]).backward()
    for bias in instance_norm_biases(self.networks.values()):
      if bias.grad is not None:
        bias.grad.zero_()
    for optimiser in self.optimisers.values():
      optimiser.step()
    return {k: float(v.detach()) for k, v in {**g_losses, **d_losses}.items()}

  def state_dicts(self) -> Mapping[str, dict]:
    return {name: module.state_dict() for name, module in self.networks.items()}
