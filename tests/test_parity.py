"""Every network's forward pass agrees with the PyTorch reference (fp32, CPU, max abs <= 1e-4).

Weights travel both ways: the reference's random init converted to Flax, and Flax's random init
converted to a PyTorch state_dict loaded strictly into the reference. Sizes are odd on purpose
(97x61 and KITTI's 375x1242 downscaled by 4): they exercise reflection padding, floor pooling,
the transposed convs' crop and align_corners upsampling.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gio_ada_jax import variants  # noqa: E402
from gio_ada_jax.interop import convert, parity  # noqa: E402

TOLERANCE = 1e-4
ODD_SIZE = (97, 61)
KITTI_QUARTER = (94, 311)  # 375x1242 / 4


def _assert_close(errors):
  assert errors, "nothing was compared"
  for e in errors:
    assert e.max_abs <= TOLERANCE, f"{e.network}/{e.output}: max abs error {e.max_abs:.3e}"


def _check_flax_weights_in_torch(network, model_config, height, width, seed=1,
                                 variant=variants.FINAL):
  """Flax init -> PyTorch state_dict (strict load) -> both forward passes agree."""
  input_channels = parity.default_input_channels(network, model_config)
  module = parity.flax_network(network, model_config, variant)
  inputs = parity.network_inputs(network, model_config, input_channels, height, width, seed,
                                 variant=variant)
  params = parity.init_params(module, inputs, seed)
  reference = parity.torch_network(network, model_config, input_channels, variant)
  state_dict = convert.flax_to_torch(params, network)
  reference.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  return parity.compare(network, parity.run_flax(network, module, params, inputs),
                        parity.run_torch(network, reference, inputs, model_config))


@pytest.mark.parametrize("size", [ODD_SIZE, KITTI_QUARTER], ids=["97x61", "94x311"])
@pytest.mark.parametrize("network", ["generator", "task_net", "patch_discriminator",
                                     "fc_discriminator"])
def test_full_width_networks_match_reference_weights(network, size, default_model_config):
  _assert_close(parity.check_network(network, default_model_config, *size))


@pytest.mark.parametrize("network", ["generator", "task_net", "patch_discriminator",
                                     "fc_discriminator", "fc_discriminator_advent"])
def test_flax_weights_match_in_reference(network, tiny_model_config):
  _assert_close(_check_flax_weights_in_torch(network, tiny_model_config, *ODD_SIZE))


@pytest.mark.parametrize("input_level", ["gd", "+s", "+d", "+sd"])  # gd: the image only
@pytest.mark.parametrize("num_blocks", [6, 9])
def test_generator_input_variants(input_level, num_blocks, tiny_model_config):
  variant = variants.Variant(input_level, "joint")
  tiny_model_config.generator.num_blocks = num_blocks
  _assert_close(parity.check_network("generator", tiny_model_config, *KITTI_QUARTER,
                                     variant=variant))
  _assert_close(_check_flax_weights_in_torch("generator", tiny_model_config, *ODD_SIZE,
                                             variant=variant))


@pytest.mark.parametrize("input_norm", ["torchvision", "caffe", "none"])
@pytest.mark.parametrize("summed_branches", [2, 4])
def test_task_net_variants(input_norm, summed_branches, tiny_model_config):
  tiny_model_config.task_net.input_norm = input_norm
  tiny_model_config.task_net.aspp_summed_branches = summed_branches
  _assert_close(parity.check_network("task_net", tiny_model_config, *ODD_SIZE))


def test_adaptsegnet_deeplab_vgg_in_its_own_setting(default_model_config):
  """AdaptSegNet's released VGG model: 19 classes, Caffe input, two ASPP branches."""
  default_model_config.num_classes = 19
  default_model_config.task_net.input_norm = "caffe"
  default_model_config.task_net.aspp_summed_branches = 2
  _assert_close(parity.check_network("deeplab_vgg", default_model_config, *ODD_SIZE))


@pytest.mark.parametrize("network", ["patch_discriminator", "fc_discriminator",
                                     "fc_discriminator_advent"])
@pytest.mark.parametrize("role_channels", ["d_img", "d_out"])
def test_discriminators_on_both_inputs(network, role_channels, tiny_model_config):
  """D_img sees RGB; D_out sees the C+1 channel joint output (softmax ⊕ depth)."""
  channels = 3 if role_channels == "d_img" else tiny_model_config.num_classes + 1
  _assert_close(parity.check_network(network, tiny_model_config, *KITTI_QUARTER,
                                     input_channels=channels))


def test_parity_detects_a_wrong_weight(tiny_model_config):
  """The comparison is not vacuous: one perturbed kernel breaks it."""
  network = "task_net"
  module = parity.flax_network(network, tiny_model_config)
  inputs = parity.network_inputs(network, tiny_model_config, 3, *ODD_SIZE)
  params = parity.init_params(module, inputs)
  reference = parity.torch_network(network, tiny_model_config, 3)
  state_dict = convert.flax_to_torch(params, network)
  state_dict["features.0.weight"] = state_dict["features.0.weight"] * 1.01
  reference.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  errors = parity.compare(network, parity.run_flax(network, module, params, inputs),
                          parity.run_torch(network, reference, inputs, tiny_model_config))
  assert max(e.max_abs for e in errors) > TOLERANCE


def test_generator_output_keeps_odd_input_size(tiny_model_config):
  """375x1242 (KITTI) in, 375x1242 out (CycleGAN alone would give 376 rows), and every value
  that of the PyTorch reference with the same weights (its tanh, its crops)."""
  tiny_model_config.generator.num_blocks = 1
  module = parity.flax_network("generator", tiny_model_config)
  inputs = parity.network_inputs("generator", tiny_model_config, 3, 375, 1242)
  params = parity.init_params(module, inputs)
  output = parity.run_flax("generator", module, params, inputs)["output"]
  assert output.shape == (1, 375, 1242, 3)
  reference = parity.torch_network("generator", tiny_model_config, 3)
  state_dict = convert.flax_to_torch(params, "generator")
  reference.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
  expected = parity.run_torch("generator", reference, inputs, tiny_model_config)["output"]
  np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE)
  assert np.abs(expected).max() > 0.5  # outputs reach tanh's curved part: a lost tanh shows
