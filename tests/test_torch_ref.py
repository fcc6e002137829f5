"""The PyTorch reference networks against the numbers in the upstream reference notes.

Full-size networks are built on the meta device (shapes only, no memory, no init cost);
forward passes use narrow widths and small inputs to stay fast on CPU.
"""

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from gio_ada_jax.interop.torch_ref import (  # noqa: E402
    FC_DISCRIMINATOR_KEY_MAP,
    VGG16,
    Classifier_Module,
    DeeplabVGG,
    FCDiscriminator,
    GioAdaGenerator,
    GioAdaTaskNet,
    NLayerDiscriminator,
    ResnetGenerator,
    get_fc_discriminator,
    init_cyclegan_weights,
    one_hot_labels,
    vgg16_features,
)
from gio_ada_jax.models.task_net import input_normalisation_affine  # noqa: E402


@pytest.fixture(autouse=True)
def _no_grad_seeded():
  torch.manual_seed(0)
  with torch.no_grad():
    yield


def on_meta(build):
  """Build a module on the meta device: parameter shapes without allocation."""
  with torch.device("meta"):
    return build()


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def num_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


def weight_bias_keys(prefix: str, indices) -> set[str]:
  return {f"{prefix}{i}.{kind}" for i in indices for kind in ("weight", "bias")}


# --- CycleGAN -----------------------------------------------------------------------------


def resnet_generator_keys(n_blocks: int, second_conv: int = 5) -> set[str]:
  blocks = set()
  for i in range(10, 10 + n_blocks):
    blocks |= weight_bias_keys(f"model.{i}.conv_block.", (1, second_conv))
  ends = (1, 4, 7, 10 + n_blocks, 13 + n_blocks, 17 + n_blocks)
  return blocks | weight_bias_keys("model.", ends)


def test_resnet_generator_9_blocks_matches_upstream():
  net = on_meta(lambda: ResnetGenerator(3))
  got = shapes(net)
  assert set(got) == resnet_generator_keys(9)
  assert len(got) == 48
  assert num_params(net) == 11_378_179
  assert got["model.1.weight"] == (64, 3, 7, 7)
  assert got["model.4.weight"] == (128, 64, 3, 3)
  assert got["model.7.weight"] == (256, 128, 3, 3)
  assert got["model.10.conv_block.1.weight"] == (256, 256, 3, 3)
  # ConvTranspose2d weights are (in, out, kh, kw).
  assert got["model.19.weight"] == (256, 128, 3, 3)
  assert got["model.19.bias"] == (128,)
  assert got["model.22.weight"] == (128, 64, 3, 3)
  assert got["model.26.weight"] == (3, 64, 7, 7)
  assert isinstance(net.model[27], nn.Tanh)


def test_resnet_generator_6_blocks_and_dropout_keys():
  net = on_meta(lambda: ResnetGenerator(3, n_blocks=6))
  keys = set(net.state_dict())
  assert keys == resnet_generator_keys(6)
  assert len(keys) == 36
  assert {"model.16.weight", "model.19.weight", "model.23.weight"} <= keys
  assert isinstance(net.model[24], nn.Tanh)
  dropout = on_meta(lambda: ResnetGenerator(3, n_blocks=2, use_dropout=True))
  assert set(dropout.state_dict()) == resnet_generator_keys(2, second_conv=6)


def test_resnet_generator_2018_running_stats():
  net = on_meta(lambda: ResnetGenerator(3, track_running_stats=True))
  keys = set(net.state_dict())
  assert len(keys) == 117
  # 48 parameters + 3 buffers for each of the 23 IN layers (1 + 2 + 9 × 2 + 2).
  assert sum(k.endswith("num_batches_tracked") for k in keys) == 23
  assert "model.2.running_mean" in keys and "model.10.conv_block.6.running_var" in keys
  assert num_params(net) == 11_378_179


def test_width_scales_hidden_channels():
  got = shapes(on_meta(lambda: ResnetGenerator(5, output_nc=3, width=0.5)))
  assert got["model.1.weight"] == (32, 5, 7, 7)
  assert got["model.19.weight"] == (128, 64, 3, 3)
  assert got["model.26.weight"] == (3, 32, 7, 7)


@pytest.mark.parametrize("size", [(375, 124), (37, 53), (9, 7)])
def test_resnet_generator_keeps_odd_sizes(size):
  net = ResnetGenerator(3, n_blocks=2, width=0.125).eval()
  x = torch.rand(1, 3, *size) * 2 - 1
  head = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
  captured = []
  head.register_forward_hook(lambda module, inputs, output: captured.append(output))
  y = net(x)
  assert y.shape == (1, 3, *size)
  # The output is tanh of the last conv (not a clip, not the identity), at the input's size.
  (pre,) = captured
  torch.testing.assert_close(y, torch.tanh(pre), rtol=0, atol=1e-6)
  assert pre.abs().max() > 0.5  # where tanh is far from the identity and from a clip


def test_resnet_generator_matches_plain_sequential_on_multiples_of_4():
  net = init_cyclegan_weights(ResnetGenerator(3, n_blocks=2, width=0.25)).eval()
  x = torch.rand(2, 3, 36, 44) * 2 - 1
  torch.testing.assert_close(net(x), net.model(x), rtol=0, atol=0)
  # Upstream's pass on an odd size gives the rounded-up size; ours crops it.
  assert net.model(torch.zeros(1, 3, 37, 45)).shape[-2:] == (40, 48)


def test_nlayer_discriminator_matches_upstream():
  net = on_meta(lambda: NLayerDiscriminator(3))
  got = shapes(net)
  assert set(got) == weight_bias_keys("model.", (0, 2, 5, 8, 11))
  assert num_params(net) == 2_764_737
  assert got["model.0.weight"] == (64, 3, 4, 4)
  assert got["model.8.weight"] == (512, 256, 4, 4)
  assert got["model.11.weight"] == (1, 512, 4, 4)


def test_nlayer_discriminator_output_shape():
  net = NLayerDiscriminator(3, width=0.125)
  assert net(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_init_cyclegan_weights():
  net = init_cyclegan_weights(ResnetGenerator(3, n_blocks=1, width=0.5), gain=0.02)
  convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
  assert any(isinstance(m, nn.ConvTranspose2d) for m in convs)
  weights = torch.cat([m.weight.flatten() for m in convs])
  assert abs(weights.std().item() - 0.02) < 1e-3
  assert abs(weights.mean().item()) < 1e-3
  assert all(torch.count_nonzero(m.bias) == 0 for m in convs)


# --- VGG16 --------------------------------------------------------------------------------


def test_vgg16_keys():
  net = on_meta(VGG16)
  got = shapes(net)
  conv_indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
  assert set(got) == (weight_bias_keys("features.", conv_indices)
                      | weight_bias_keys("classifier.", (0, 3, 6)))
  assert got["features.28.weight"] == (512, 512, 3, 3)
  assert got["classifier.0.weight"] == (4096, 25088)
  assert got["classifier.6.weight"] == (1000, 4096)
  assert isinstance(net.features[30], nn.MaxPool2d)
  assert num_params(net) == 138_357_544


def test_vgg16_init():
  conv = vgg16_features()[28]
  expected_std = (2.0 / (9 * 512)) ** 0.5  # kaiming normal, fan_out, relu
  assert abs(conv.weight.std().item() / expected_std - 1) < 0.02
  assert torch.count_nonzero(conv.bias) == 0


def test_vgg16_forward_at_reduced_width():
  assert VGG16(width=0.0625, num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


# --- AdaptSegNet / ADVENT -----------------------------------------------------------------


def test_deeplab_vgg_matches_upstream():
  net = on_meta(lambda: DeeplabVGG(19))
  got = shapes(net)
  conv_indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31)
  assert set(got) == (weight_bias_keys("features.", conv_indices)
                      | weight_bias_keys("classifier.conv2d_list.", range(4)))
  assert len(got) == 38
  assert num_params(net) == 29_573_004
  assert got["features.29.weight"] == (1024, 512, 3, 3)
  assert got["features.31.weight"] == (1024, 1024, 3, 3)
  assert got["classifier.conv2d_list.3.weight"] == (19, 1024, 3, 3)
  for i in (23, 25, 27):
    assert net.features[i].dilation == (2, 2) and net.features[i].padding == (2, 2)
  for i in (29, 31):
    assert net.features[i].dilation == (4, 4) and net.features[i].padding == (4, 4)
  assert net.features[17].dilation == (1, 1)
  assert [isinstance(m, nn.MaxPool2d) for m in net.features].count(True) == 3


def test_deeplab_vgg_output_stride_8():
  net = DeeplabVGG(19, width=0.125)
  assert net(torch.randn(1, 3, 128, 256)).shape == (1, 19, 16, 32)
  assert net(torch.randn(1, 3, 100, 180)).shape == (1, 19, 12, 22)


def test_aspp_upstream_quirk_sums_two_branches():
  x = torch.randn(1, 8, 20, 20)
  quirk = Classifier_Module(8, [6, 12, 18, 24], [6, 12, 18, 24], 5)  # default: upstream bug
  branches = [conv(x) for conv in quirk.conv2d_list]
  torch.testing.assert_close(quirk(x), branches[0] + branches[1])
  assert not torch.allclose(quirk(x), sum(branches), atol=1e-4)
  fixed = Classifier_Module(8, [6, 12, 18, 24], [6, 12, 18, 24], 5, summed_branches=4)
  fixed.load_state_dict(quirk.state_dict())
  torch.testing.assert_close(fixed(x), sum(branches))
  assert DeeplabVGG(3, width=0.0625).classifier.summed_branches == 2
  with pytest.raises(ValueError, match="summed_branches"):
    Classifier_Module(8, [6, 12], [6, 12], 5, summed_branches=3)


def test_aspp_init():
  aspp = Classifier_Module(256, [6, 12, 18, 24], [6, 12, 18, 24], 19)
  weights = torch.cat([conv.weight.flatten() for conv in aspp.conv2d_list])
  assert abs(weights.std().item() - 0.01) < 5e-4
  # Biases keep PyTorch's default U(±1/sqrt(fan_in)).
  assert all(conv.bias.abs().max() <= (256 * 9) ** -0.5 for conv in aspp.conv2d_list)


def test_fc_discriminator_matches_upstream():
  net = on_meta(lambda: FCDiscriminator(19))
  got = shapes(net)
  assert set(got) == weight_bias_keys("", ("conv1", "conv2", "conv3", "conv4", "classifier"))
  assert num_params(net) == 2_781_121
  assert got["conv1.weight"] == (64, 19, 4, 4)
  assert got["conv4.weight"] == (512, 256, 4, 4)
  assert got["classifier.weight"] == (1, 512, 4, 4)
  small = FCDiscriminator(19, width=0.125)
  assert small(torch.randn(1, 19, 64, 128)).shape == (1, 1, 2, 4)


def test_advent_discriminator_is_fc_discriminator():
  fc = shapes(on_meta(lambda: FCDiscriminator(19)))
  advent = shapes(on_meta(lambda: get_fc_discriminator(19)))
  mapped = {}
  for key, shape in fc.items():
    name, kind = key.split(".")
    mapped[f"{FC_DISCRIMINATOR_KEY_MAP[name]}.{kind}"] = shape
  assert advent == mapped
  net = get_fc_discriminator(19, width=0.125)
  assert all(isinstance(net[i], nn.LeakyReLU) for i in (1, 3, 5, 7))
  # Loading a renamed FCDiscriminator state_dict gives the same function.
  source = FCDiscriminator(19, width=0.125)
  net.load_state_dict({f"{FC_DISCRIMINATOR_KEY_MAP[k.split('.')[0]]}.{k.split('.')[1]}": v
                       for k, v in source.state_dict().items()})
  x = torch.randn(1, 19, 64, 64)
  torch.testing.assert_close(net(x), source(x))


# --- GIO-Ada ------------------------------------------------------------------------------


def test_task_net_keys():
  net = on_meta(lambda: GioAdaTaskNet(19))
  got = shapes(net)
  deeplab = shapes(on_meta(lambda: DeeplabVGG(19)))
  features = {k: v for k, v in deeplab.items() if k.startswith("features.")}
  assert {k: v for k, v in got.items() if k.startswith("features.")} == features
  assert got["classifier.conv2d_list.0.weight"] == (19, 1024, 3, 3)
  assert got["depth_classifier.conv2d_list.3.weight"] == (1, 1024, 3, 3)
  assert len(got) == len(features) + 16  # no normalisation buffers
  assert net.classifier.summed_branches == 4


@pytest.mark.parametrize("input_norm", ["torchvision", "caffe", "none"])
def test_task_net_forward(input_norm):
  net = GioAdaTaskNet(5, width=0.0625, input_norm=input_norm).eval()
  seen = []
  net.features.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
  images = torch.rand(2, 3, 36, 52) * 2 - 1
  seg, depth = net(images)
  assert seg.shape == (2, 5, 36, 52) and depth.shape == (2, 1, 36, 52)

  flip, scale, offset = input_normalisation_affine(input_norm)
  expected = images.flip(1) if flip else images
  expected = expected * torch.from_numpy(scale)[:, None, None] + torch.from_numpy(offset)[
      :, None, None]
  torch.testing.assert_close(seen[0], expected)


def test_task_net_upsamples_with_align_corners():
  net = GioAdaTaskNet(3, width=0.0625, aspp_summed_branches=2).eval()
  images = torch.rand(1, 3, 40, 48) * 2 - 1
  features = net.features(net.normalise_input(images))
  coarse = net.classifier(features)
  seg, _ = net(images)
  # align_corners=True keeps the corner values of the coarse map exactly.
  torch.testing.assert_close(seg[..., 0, 0], coarse[..., 0, 0])
  torch.testing.assert_close(seg[..., -1, -1], coarse[..., -1, -1])


def test_one_hot_labels_ignores_255_and_out_of_range():
  labels = torch.tensor([[[0, 2, 255], [1, -1, 3]]])
  one_hot = one_hot_labels(labels, 3, torch.float32)
  assert one_hot.shape == (1, 3, 2, 3)
  assert one_hot.sum(1).tolist() == [[[1, 1, 0], [1, 0, 0]]]
  assert one_hot[0, :, 0, 1].tolist() == [0, 0, 1]
  assert one_hot[0, :, 1, 0].tolist() == [0, 1, 0]


def test_generator_keys_equal_resnet_generator():
  num_classes = 19
  net = on_meta(lambda: GioAdaGenerator(num_classes))
  plain = on_meta(lambda: ResnetGenerator(3 + num_classes + 1))
  assert shapes(net) == shapes(plain)
  assert shapes(on_meta(lambda: GioAdaGenerator(7, use_labels=False)))["model.1.weight"] == (
      64, 4, 7, 7)
  assert shapes(on_meta(lambda: GioAdaGenerator(7, use_depth=False)))["model.1.weight"] == (
      64, 10, 7, 7)


def test_generator_forward_concatenates_image_labels_depth():
  net = GioAdaGenerator(4, n_blocks=1, width=0.125).eval()
  images = torch.rand(2, 3, 23, 30) * 2 - 1
  labels = torch.randint(0, 4, (2, 23, 30))
  labels[:, :5] = 255
  depth = torch.rand(2, 1, 23, 30)
  out = net(images, labels, depth)
  assert out.shape == (2, 3, 23, 30)
  x = torch.cat([images, one_hot_labels(labels, 4, images.dtype), depth], dim=1)
  torch.testing.assert_close(out, ResnetGenerator.forward(net, x))
  assert torch.count_nonzero(x[:, 3:7, :5]) == 0
  with pytest.raises(ValueError, match="labels"):
    net(images, None, depth)
  with pytest.raises(ValueError, match="depth"):
    net(images, labels, None)
