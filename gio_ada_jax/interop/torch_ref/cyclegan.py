"""CycleGAN's ResnetGenerator and PatchGAN discriminator (junyanz/pytorch-CycleGAN-and-pix2pix).

Written from the published layer tables with instance norm (affine=False), the CycleGAN
default, so every convolution has a bias. Module indices, and therefore state_dict keys, are
upstream's: a CycleGAN checkpoint loads with `load_state_dict` unchanged.
"""

import functools

import torch
from torch import nn

from gio_ada_jax.models.layers import scale_width

N_DOWNSAMPLING = 2  # Upstream's ResnetGenerator always halves the resolution twice.


def _instance_norm(channels: int, track_running_stats: bool) -> nn.InstanceNorm2d:
  """CycleGAN's 'instance' norm; running stats only for the 2018-06..2018-10 checkpoints."""
  return nn.InstanceNorm2d(channels, affine=False, track_running_stats=track_running_stats)


class ResnetBlock(nn.Module):
  """Residual block: x + [pad, conv3, IN, ReLU, (dropout), pad, conv3, IN](x), no final ReLU."""

  def __init__(self, dim: int, use_dropout: bool = False, track_running_stats: bool = False):
    super().__init__()
    layers = [
        nn.ReflectionPad2d(1),
        nn.Conv2d(dim, dim, kernel_size=3, bias=True),
        _instance_norm(dim, track_running_stats),
        nn.ReLU(True),
    ]
    if use_dropout:
      # Shifts the second conv from conv_block.5 to conv_block.6, as upstream.
      layers.append(nn.Dropout(0.5))
    layers += [
        nn.ReflectionPad2d(1),
        nn.Conv2d(dim, dim, kernel_size=3, bias=True),
        _instance_norm(dim, track_running_stats),
    ]
    self.conv_block = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
  """CycleGAN's resnet_{n}blocks generator, NCHW in, tanh NCHW out at the input's H×W.

  `width` scales every hidden channel count (1.0 is upstream). Unlike upstream, the output
  always has the input's spatial size: see `forward`.
  """

  def __init__(self, input_nc: int, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
               use_dropout: bool = False, track_running_stats: bool = False,
               width: float = 1.0):
    super().__init__()
    if n_blocks < 0:
      raise ValueError(f"n_blocks={n_blocks} must be >= 0.")
    channels = [scale_width(ngf * 2**i, width) for i in range(N_DOWNSAMPLING + 1)]
    norm = functools.partial(_instance_norm, track_running_stats=track_running_stats)
    layers = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(input_nc, channels[0], kernel_size=7, bias=True),
        norm(channels[0]),
        nn.ReLU(True),
    ]
    for i in range(N_DOWNSAMPLING):
      layers += [
          nn.Conv2d(channels[i], channels[i + 1], kernel_size=3, stride=2, padding=1, bias=True),
          norm(channels[i + 1]),
          nn.ReLU(True),
      ]
    layers += [ResnetBlock(channels[-1], use_dropout, track_running_stats)
               for _ in range(n_blocks)]
    for i in reversed(range(N_DOWNSAMPLING)):
      layers += [
          nn.ConvTranspose2d(channels[i + 1], channels[i], kernel_size=3, stride=2, padding=1,
                             output_padding=1, bias=True),
          norm(channels[i]),
          nn.ReLU(True),
      ]
    layers += [
        nn.ReflectionPad2d(3),
        nn.Conv2d(channels[0], output_nc, kernel_size=7, bias=True),
        nn.Tanh(),
    ]
    self.model = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Upstream's forward, except each transposed conv is cropped to its matching size.

    A stride-2 conv maps H to ceil(H/2) but the transposed conv gives exactly 2H, so upstream
    returns 376 rows for 375. We remember the size entering every stride-2 conv and crop the
    transposed conv at the same resolution back to it (top-left, before its norm). For sizes
    divisible by 4 the crop is a no-op and this equals upstream exactly.
    """
    sizes = []
    for layer in self.model:
      if isinstance(layer, nn.Conv2d) and layer.stride != (1, 1):
        sizes.append(x.shape[-2:])
      x = layer(x)
      if isinstance(layer, nn.ConvTranspose2d):
        height, width = sizes.pop()
        x = x[:, :, :height, :width]
    return x


class NLayerDiscriminator(nn.Module):
  """PatchGAN discriminator with instance norm (CycleGAN's 'basic' netD), no sigmoid."""

  def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, width: float = 1.0):
    super().__init__()
    if n_layers < 1:
      raise ValueError(f"n_layers={n_layers} must be >= 1.")
    kw, padw = 4, 1

    def channels(n: int) -> int:
      return scale_width(ndf * min(2**n, 8), width)

    layers = [
        nn.Conv2d(input_nc, channels(0), kernel_size=kw, stride=2, padding=padw),
        nn.LeakyReLU(0.2, True),
    ]
    for n in range(1, n_layers + 1):
      # The last of these keeps the resolution (stride 1), as upstream.
      stride = 2 if n < n_layers else 1
      layers += [
          nn.Conv2d(channels(n - 1), channels(n), kernel_size=kw, stride=stride, padding=padw,
                    bias=True),
          _instance_norm(channels(n), track_running_stats=False),
          nn.LeakyReLU(0.2, True),
      ]
    layers.append(nn.Conv2d(channels(n_layers), 1, kernel_size=kw, stride=1, padding=padw))
    self.model = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.model(x)


def init_cyclegan_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
  """CycleGAN's init_weights('normal'): conv/linear weights ~ N(0, gain), biases 0.

  Like upstream (which matches 'Conv' or 'Linear' in the class name) this covers
  ConvTranspose2d and Linear too; BatchNorm2d gets weight ~ N(1, gain), bias 0.
  """

  def init(module: nn.Module) -> None:
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
      nn.init.normal_(module.weight, 0.0, gain)
      if module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
      nn.init.normal_(module.weight, 1.0, gain)
      nn.init.zeros_(module.bias)

  return net.apply(init)
