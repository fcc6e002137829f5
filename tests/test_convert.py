"""PyTorch state_dict <-> Flax params (gio_ada_jax/interop/convert.py) for every network layout,
and .pth files that are not what they claim: a hostile one is refused without passing on torch's
advice to unpickle it, and a layout mismatch names the command's own flags.

Small widths (configs/test.py) for values; full-size key shapes from meta-device PyTorch modules
and `jax.eval_shape` templates, so nothing large is initialised.
"""

import builtins
import os
import pickle
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from configs import default as default_config  # noqa: E402
from configs import test as test_config  # noqa: E402
from gio_ada_jax import models, variants  # noqa: E402
from gio_ada_jax.interop import convert, parity, torch_ref  # noqa: E402
from gio_ada_jax.models import ImageTransformNet  # noqa: E402
from tests.conftest import run_side_by_side, tiny_training_config  # noqa: E402

SIZE = 24  # Input height and width: params do not depend on it (PatchGAN needs >= 24).
NETWORKS = parity.NETWORKS
# torchvision vgg16 `features.N` of every conv (pool4 at 23 shifts conv5_x to 24/26/28).
VGG16_FEATURE_INDICES = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
    "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26,
    "conv5_3": 28,
}


# ------------------------------------------------------------------------------- helpers


def small_config(num_blocks: int | None = None):
  """configs/test.py's model config (width 1/16), optionally with another block count."""
  config = test_config.get_config().model
  if num_blocks is not None:
    config.generator.num_blocks = num_blocks
  return config


def full_config():
  return default_config.get_config().model


def module_and_inputs(network: str, config):
  channels = parity.default_input_channels(network, config)
  inputs = parity.network_inputs(network, config, channels, SIZE, SIZE)
  return parity.flax_network(network, config), inputs, channels


def param_shapes(module, inputs):
  """Param ShapeDtypeStructs of `module`, traced without computing anything."""
  return jax.eval_shape(lambda: parity.init_params(module, inputs))


def random_params(network: str, config, seed: int = 0):
  """Flax params of `network` filled with distinct random float32 values."""
  module, inputs, _ = module_and_inputs(network, config)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32).astype(s.dtype),
                      param_shapes(module, inputs))


def without_depth_head(params):
  return {k: v for k, v in params.items() if k != "depth_head"}


def assert_trees_equal(got, expected):
  """Same structure, same dtypes, bit-identical leaves."""
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, path
    assert np.array_equal(a, b), path


def assert_state_dicts_equal(got, expected):
  assert set(got) == set(expected)
  for key in expected:
    a, b = np.asarray(got[key]), np.asarray(expected[key])
    assert a.shape == b.shape and a.dtype == b.dtype, key
    assert np.array_equal(a, b), key


def to_torch(state_dict):
  return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}


def shape_dict(state_dict):
  return {k: tuple(v.shape) for k, v in state_dict.items()}


def fc_params_and_state_dict():
  params = random_params("fc_discriminator", small_config())
  return params, convert.flax_to_torch(params, "fc_discriminator")


@pytest.fixture(scope="module")
def full_task_net_shapes():
  module, inputs, _ = module_and_inputs("task_net", full_config())
  return param_shapes(module, inputs)


# Each case: (network, generator blocks or None).
ROUND_TRIP_CASES = [("generator", 9), ("generator", 6), ("task_net", None),
                    ("deeplab_vgg", None), ("patch_discriminator", None),
                    ("fc_discriminator", None), ("fc_discriminator_advent", None)]
CASE_IDS = [n if b is None else f"{n}-{b}blocks" for n, b in ROUND_TRIP_CASES]


# ------------------------------------------------------------------- round trips


@pytest.mark.parametrize("network,num_blocks", ROUND_TRIP_CASES, ids=CASE_IDS)
def test_flax_torch_flax_round_trip_is_bit_exact(network, num_blocks):
  """params -> state_dict -> params gives identical leaves, with and without a template."""
  config = small_config(num_blocks)
  full_params = random_params(network, config, seed=1)
  params = without_depth_head(full_params) if network == "deeplab_vgg" else full_params
  state_dict = convert.flax_to_torch(params, network)
  assert all(isinstance(v, np.ndarray) for v in state_dict.values())

  assert_trees_equal(convert.torch_to_flax(state_dict, network), params)

  # With a template of other values: every converted leaf comes from the state_dict; the
  # DeeplabVGG format has no depth head, so the template's stays.
  template = random_params(network, config, seed=2)
  expected = dict(params, depth_head=template["depth_head"]) if network == "deeplab_vgg" \
      else params
  assert_trees_equal(convert.torch_to_flax(state_dict, network, template=template), expected)


def test_generator_state_dict_has_sd_input_channels_and_upstream_indices():
  """+sd G_img: the stem sees 3 + C + 1 channels, and 9 blocks give upstream's indices."""
  config = small_config(9)
  state_dict = convert.flax_to_torch(random_params("generator", config), "generator")
  assert state_dict["model.1.weight"].shape[1] == 3 + config.num_classes + 1
  assert "model.18.conv_block.5.weight" in state_dict  # The 9th block.
  assert {"model.19.weight", "model.22.weight", "model.26.weight"} <= set(state_dict)
  assert len(state_dict) == 48


def test_deeplab_vgg_flax_to_torch_refuses_a_depth_head():
  params = random_params("deeplab_vgg", small_config())
  with pytest.raises(convert.ConversionError, match="depth_head"):
    convert.flax_to_torch(params, "deeplab_vgg")


def test_flax_to_torch_refuses_vgg16_layout_with_fc_and_heads():
  """vgg16 only loads into the encoder: fc6/fc7 and the heads have no place in it."""
  params = random_params("task_net", small_config())
  with pytest.raises(convert.ConversionError, match="fc6"):
    convert.flax_to_torch(params, "vgg16")


# ------------------------------------------------------------------ the torch_ref modules


@pytest.mark.parametrize("network,num_blocks", ROUND_TRIP_CASES, ids=CASE_IDS)
def test_flax_to_torch_loads_strictly_into_torch_ref(network, num_blocks):
  config = small_config(num_blocks)
  params = random_params(network, config, seed=3)
  if network == "deeplab_vgg":
    params = without_depth_head(params)
  _, _, channels = module_and_inputs(network, config)
  torch.manual_seed(0)
  reference = parity.torch_network(network, config, channels)
  state_dict = convert.flax_to_torch(params, network)
  result = reference.load_state_dict(to_torch(state_dict), strict=True)
  assert not result.missing_keys and not result.unexpected_keys
  loaded = {k: v.numpy() for k, v in reference.state_dict().items()}
  assert_state_dicts_equal(loaded, state_dict)


@pytest.mark.parametrize("network,num_blocks", ROUND_TRIP_CASES, ids=CASE_IDS)
def test_torch_ref_state_dict_converts_with_template_and_back(network, num_blocks):
  """The reference's own state_dict (torch tensors) -> Flax params -> the same state_dict."""
  config = small_config(num_blocks)
  _, _, channels = module_and_inputs(network, config)
  torch.manual_seed(1)
  reference = parity.torch_network(network, config, channels)
  template = jax.tree.map(np.zeros_like, random_params(network, config))
  params = convert.torch_to_flax(reference.state_dict(), network, template=template)
  assert jax.tree.structure(params) == jax.tree.structure(template)
  if network == "deeplab_vgg":
    params = without_depth_head(params)
  expected = {k: v.numpy() for k, v in reference.state_dict().items()}
  assert_state_dicts_equal(convert.flax_to_torch(params, network), expected)


@pytest.mark.parametrize("network", NETWORKS)
def test_full_size_keys_and_shapes_are_upstream(network, full_task_net_shapes):
  """At width 1 the converted keys and shapes are exactly the meta-device reference's."""
  config = full_config()
  if network in ("task_net", "deeplab_vgg"):
    shapes = full_task_net_shapes
  else:
    module, inputs, _ = module_and_inputs(network, config)
    shapes = param_shapes(module, inputs)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  if network == "deeplab_vgg":
    zeros = without_depth_head(zeros)
  with torch.device("meta"):
    reference = parity.torch_network(network, config,
                                     parity.default_input_channels(network, config))
  upstream = shape_dict(reference.state_dict())
  assert shape_dict(convert.flax_to_torch(zeros, network)) == upstream
  torch_zeros = {k: np.zeros(s, np.float32) for k, s in upstream.items()}
  params = convert.torch_to_flax(torch_zeros, network, template=zeros)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, zeros)


# -------------------------------------------------------------------------- strictness


def test_unknown_key_is_rejected_unless_allowed():
  params, state_dict = fc_params_and_state_dict()
  state_dict["conv5.weight"] = np.zeros((1, 1, 4, 4), np.float32)
  for template in (None, params):
    with pytest.raises(convert.ConversionError, match=r"unexpected key 'conv5\.weight'"):
      convert.torch_to_flax(state_dict, "fc_discriminator", template=template)
  got = convert.torch_to_flax(state_dict, "fc_discriminator", template=params,
                              allow_unexpected=["conv5.*"])
  assert_trees_equal(got, params)
  with pytest.raises(convert.ConversionError, match="conv5"):  # The pattern must match.
    convert.torch_to_flax(state_dict, "fc_discriminator", allow_unexpected=["conv6.*"])


def test_missing_key_is_rejected_unless_allowed_and_keeps_template_value():
  params, state_dict = fc_params_and_state_dict()
  del state_dict["conv2.bias"]
  for template in (None, params):
    with pytest.raises(convert.ConversionError, match=r"missing key 'conv2\.bias'"):
      convert.torch_to_flax(state_dict, "fc_discriminator", template=template)
  template = random_params("fc_discriminator", small_config(), seed=5)
  got = convert.torch_to_flax(state_dict, "fc_discriminator", template=template,
                              allow_missing=["conv2.*"])
  np.testing.assert_array_equal(got["conv2"]["bias"], template["conv2"]["bias"])
  assert not np.array_equal(got["conv2"]["bias"], params["conv2"]["bias"])
  np.testing.assert_array_equal(got["conv2"]["kernel"], params["conv2"]["kernel"])


def test_misshaped_key_is_rejected_naming_it():
  params, state_dict = fc_params_and_state_dict()
  state_dict["conv3.weight"] = np.zeros((16, 8, 3, 3), np.float32)  # 3x3, not 4x4.
  with pytest.raises(convert.ConversionError, match=r"conv3\.weight.*\(16, 8, 3, 3\)"):
    convert.torch_to_flax(state_dict, "fc_discriminator", template=params)
  state_dict["conv3.weight"] = np.zeros((16, 8, 4, 4), np.float32)
  state_dict["classifier.bias"] = np.zeros((2,), np.float32)
  with pytest.raises(convert.ConversionError, match=r"classifier\.bias"):
    convert.torch_to_flax(state_dict, "fc_discriminator", template=params)


def test_misshaped_key_listed_as_missing_keeps_the_template_value():
  """E.g. a checkpoint's classifier for another class set, deliberately left out."""
  params, state_dict = fc_params_and_state_dict()
  state_dict["classifier.weight"] = np.zeros((1, 4, 4, 4), np.float32)  # wrong in-channels
  template = random_params("fc_discriminator", small_config(), seed=7)
  got = convert.torch_to_flax(state_dict, "fc_discriminator", template=template,
                              allow_missing=["classifier.weight"])
  np.testing.assert_array_equal(got["classifier"]["kernel"], template["classifier"]["kernel"])
  np.testing.assert_array_equal(got["conv1"]["kernel"], params["conv1"]["kernel"])


def test_params_of_another_network_raise_conversion_error():
  params = random_params("generator", small_config())
  with pytest.raises(convert.ConversionError, match="not a 'task_net' network"):
    convert.flax_to_torch(params, "task_net")


def test_wrong_rank_weight_raises_conversion_error_naming_it():
  params, state_dict = fc_params_and_state_dict()
  state_dict["conv1.weight"] = np.zeros((4, 11, 4), np.float32)
  with pytest.raises(convert.ConversionError, match=r"conv1\.weight"):
    convert.torch_to_flax(state_dict, "fc_discriminator", template=params)


def test_errors_list_every_problem_at_once():
  params, state_dict = fc_params_and_state_dict()
  del state_dict["conv4.weight"]
  state_dict["extra"] = np.zeros(1, np.float32)
  with pytest.raises(convert.ConversionError) as info:
    convert.torch_to_flax(state_dict, "fc_discriminator", template=params)
  assert "conv4.weight" in str(info.value) and "'extra'" in str(info.value)


# ------------------------------------------------------------- checkpoint format variants


def test_data_parallel_prefix_converts_like_without():
  params = random_params("generator", small_config())
  state_dict = convert.flax_to_torch(params, "generator")
  wrapped = {f"module.{k}": v for k, v in state_dict.items()}
  assert_trees_equal(convert.torch_to_flax(wrapped, "generator"), params)
  template = jax.tree.map(np.zeros_like, params)
  assert_trees_equal(convert.torch_to_flax(wrapped, "generator", template=template), params)
  # Only a prefix that every key has is DataParallel's.
  partly = dict(state_dict, **{"module.model.1.weight": state_dict["model.1.weight"]})
  with pytest.raises(convert.ConversionError, match=r"module\.model\.1\.weight"):
    convert.torch_to_flax(partly, "generator", template=template)


def cyclegan_2018_state_dict():
  """A 9-block ResnetGenerator with InstanceNorm running stats, as numpy arrays."""
  torch.manual_seed(2)
  net = torch_ref.ResnetGenerator(3, n_blocks=9, track_running_stats=True, width=1 / 16)
  return {k: v.numpy() for k, v in net.state_dict().items()}


def plain_generator_template():
  module = ImageTransformNet(10, use_labels=False, use_depth=False, num_blocks=9, width=1 / 16)
  images = np.zeros((1, SIZE, SIZE, 3), np.float32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), images))["params"]
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_cyclegan_checkpoint_with_running_stats_converts():
  state_dict = cyclegan_2018_state_dict()
  assert len(state_dict) == 117
  weights = {k: v for k, v in state_dict.items()
             if not k.endswith(convert.RUNNING_STAT_SUFFIXES)}
  assert len(weights) == 48
  for template in (None, plain_generator_template()):
    params = convert.torch_to_flax(state_dict, "generator", template=template)
    assert_state_dicts_equal(convert.flax_to_torch(params, "generator"), weights)


@pytest.mark.parametrize("key", ["model.1.running_mean", "model.4.num_batches_tracked",
                                 "model.10.conv_block.5.running_var"])
def test_running_stats_on_a_conv_position_are_rejected(key):
  state_dict = cyclegan_2018_state_dict()
  state_dict[key] = np.zeros(4, np.float32)
  with pytest.raises(convert.ConversionError, match=f"unexpected key '{key}'"):
    convert.torch_to_flax(state_dict, "generator", template=plain_generator_template())


@pytest.fixture(scope="module")
def vgg16_state_dict():
  """torchvision vgg16's keys and shapes (meta device), random features, zero classifier."""
  with torch.device("meta"):
    shapes = shape_dict(torch_ref.VGG16().state_dict())
  rng = np.random.default_rng(4)
  return {k: np.zeros(s, np.float32) if k.startswith("classifier.")
          else rng.standard_normal(s, np.float32) for k, s in shapes.items()}


def test_torchvision_vgg16_loads_into_task_net_encoder(vgg16_state_dict, full_task_net_shapes):
  rng = np.random.default_rng(5)
  template = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32),
                          full_task_net_shapes)
  params = convert.torch_to_flax(vgg16_state_dict, "vgg16", template=template)
  assert set(params["encoder"]) == set(VGG16_FEATURE_INDICES) | {"fc6", "fc7"}
  for name, index in VGG16_FEATURE_INDICES.items():
    weight = vgg16_state_dict[f"features.{index}.weight"]
    np.testing.assert_array_equal(params["encoder"][name]["kernel"],
                                  np.transpose(weight, (2, 3, 1, 0)), err_msg=name)
    np.testing.assert_array_equal(params["encoder"][name]["bias"],
                                  vgg16_state_dict[f"features.{index}.bias"], err_msg=name)
  kept = {k: template["encoder"][k] for k in ("fc6", "fc7")}
  assert_trees_equal({k: params["encoder"][k] for k in kept}, kept)
  assert_trees_equal(params["seg_head"], template["seg_head"])
  assert_trees_equal(params["depth_head"], template["depth_head"])


def test_vgg16_with_an_unknown_feature_key_is_rejected(vgg16_state_dict, full_task_net_shapes):
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), full_task_net_shapes)
  # features.23 is torchvision's pool4: a conv there is DeeplabVGG's numbering, not vgg16's.
  state_dict = dict(vgg16_state_dict, **{"features.23.weight": np.zeros((512, 512, 3, 3),
                                                                          np.float32)})
  with pytest.raises(convert.ConversionError, match=r"features\.23\.weight"):
    convert.torch_to_flax(state_dict, "vgg16", template=template)


# ---------------------------------------------------------------------------- .pth files


def test_save_and_load_torch_checkpoint_round_trip(tmp_path):
  _, state_dict = fc_params_and_state_dict()
  state_dict["norm.running_mean"] = np.arange(3, dtype=np.float32)
  state_dict["steps"] = np.array([7], np.int64)  # Non-float tensors keep their dtype.
  path = str(tmp_path / "d.pth")
  convert.save_torch_checkpoint(state_dict, path)
  assert_state_dicts_equal(convert.load_torch_checkpoint(path), state_dict)
  assert set(torch.load(path, weights_only=True)) == set(state_dict)


def test_save_torch_checkpoint_keeps_scalar_shapes(tmp_path):
  path = str(tmp_path / "scalar.pth")
  convert.save_torch_checkpoint({"norm.num_batches_tracked": np.array(7, np.int64)}, path)
  assert convert.load_torch_checkpoint(path)["norm.num_batches_tracked"].shape == ()


def test_nested_checkpoint_needs_its_key(tmp_path):
  _, state_dict = fc_params_and_state_dict()
  path = str(tmp_path / "nested.pth")
  torch.save({"state_dict": to_torch(state_dict), "epoch": 3}, path)
  assert_state_dicts_equal(convert.load_torch_checkpoint(path, key="state_dict"), state_dict)
  with pytest.raises(convert.NestedStateDict) as info:
    convert.load_torch_checkpoint(path)
  assert path in str(info.value) and "under 'state_dict'" in str(info.value)
  assert info.value.candidates == ("state_dict",)
  with pytest.raises(convert.ConversionError, match="'model'"):
    convert.load_torch_checkpoint(path, key="model")


class _TouchOnUnpickle:
  """Unpickling this runs `touch <marker>` (harmless: the marker is in tmp_path)."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path):
  marker = tmp_path / "code_ran"
  path = str(tmp_path / "evil.pth")
  torch.save({"conv1.weight": torch.zeros(2), "payload": _TouchOnUnpickle(marker)}, path)
  with pytest.raises(convert.UnsafeCheckpoint, match="refused"):
    convert.load_torch_checkpoint(path)
  assert not marker.exists()
  # The payload is live: a full unpickle does run it.
  live = tmp_path / "live"
  pickle.loads(pickle.dumps(_TouchOnUnpickle(live)))
  assert live.exists()


def test_missing_checkpoint_file_raises_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError):
    convert.load_torch_checkpoint(str(tmp_path / "absent.pth"))


# ------------------------------------------------------------------------------- dtypes


def test_bf16_initialised_template_gives_bf16_params():
  """A template from a real init with param_dtype=bfloat16: every converted leaf is bf16."""
  config = small_config()
  module, inputs, _ = module_and_inputs("fc_discriminator", config)
  template = parity.init_params(module.clone(param_dtype=jnp.bfloat16), inputs)
  assert {leaf.dtype for leaf in jax.tree.leaves(template)} == {jnp.dtype(jnp.bfloat16)}
  params, state_dict = fc_params_and_state_dict()
  got = convert.torch_to_flax(state_dict, "fc_discriminator", template=template)
  assert_trees_equal(got, jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))


@pytest.mark.parametrize("network", ["generator", "task_net", "deeplab_vgg",
                                     "patch_discriminator"])
def test_bf16_template_shapes_give_bf16_params(network):
  """bf16 param_dtype templates (shapes traced, values random) for the other layouts."""
  config = small_config()
  module, inputs, _ = module_and_inputs(network, config)
  shapes = param_shapes(module.clone(param_dtype=jnp.bfloat16), inputs)
  rng = np.random.default_rng(6)
  template = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32).astype(s.dtype),
                          shapes)
  params = random_params(network, config)
  if network == "deeplab_vgg":
    params = without_depth_head(params)
  got = convert.torch_to_flax(convert.flax_to_torch(params, network), network, template=template)
  expected = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  if network == "deeplab_vgg":
    expected["depth_head"] = template["depth_head"]
  assert {np.asarray(leaf).dtype for leaf in jax.tree.leaves(got)} == {jnp.dtype(jnp.bfloat16)}
  assert_trees_equal(got, expected)


def test_bf16_params_save_as_a_torch_checkpoint(tmp_path):
  params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), fc_params_and_state_dict()[0])
  path = str(tmp_path / "bf16.pth")
  convert.save_torch_checkpoint(convert.flax_to_torch(params, "fc_discriminator"), path)
  loaded = convert.load_torch_checkpoint(path)
  np.testing.assert_array_equal(loaded["conv1.bias"],
                                np.asarray(params["conv1"]["bias"], np.float32))


# ---------------------------------------------------------------------------- numerics


def test_converted_generator_matches_torch_ref_output():
  """Round trips cannot see a kernel orientation error that both directions share (the
  transposed-conv flip): the converted G_img must compute what the reference computes."""
  config = small_config()
  module, inputs, channels = module_and_inputs("generator", config)
  torch.manual_seed(3)
  reference = torch_ref.init_cyclegan_weights(
      parity.torch_network("generator", config, channels), gain=0.5)
  params = convert.torch_to_flax(reference.state_dict(), "generator")
  ours = parity.run_flax("generator", module, params, inputs)["output"]
  theirs = parity.run_torch("generator", reference, inputs, config)["output"]
  assert ours.shape == theirs.shape == (1, SIZE, SIZE, 3)
  assert np.std(theirs) > 0.1  # Not a constant output that any kernel order would give.
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


TORCH_ADVICE = ("weights_only=False", "weights_only` set to `False`", "add_safe_globals",
                "safe_globals")


class _PrintsOnUnpickle:
  """Unpickling this calls print("PWNED"): harmless, and visible if it ever runs."""

  def __reduce__(self):
    return builtins.print, ("PWNED",)


def _hostile_pth(path) -> str:
  torch.save({"features.0.weight": torch.zeros(2), "payload": _PrintsOnUnpickle()}, str(path))
  return str(path)


def _task_net_pth(path, width: float) -> str:
  """A GIO-Ada task net state_dict of configs/test.py's networks at `width`."""
  config = tiny_training_config("unused", 1)
  config.model.width = width
  task_net = models.build_models(config.model, variants.FINAL).task_net
  image = np.zeros((1, config.data.height, config.data.width, 3), np.float32)
  params = task_net.init(jax.random.key(0), image)["params"]
  convert.save_torch_checkpoint(convert.flax_to_torch(params, "task_net"), str(path))
  return str(path)


# ------------------------------------------------------------------------ hostile .pth files


def test_a_pth_with_a_pickled_global_is_refused_without_torch_advice(tmp_path, capfd):
  path = _hostile_pth(tmp_path / "hostile.pth")
  with pytest.raises(convert.UnsafeCheckpoint) as info:
    convert.load_torch_checkpoint(path)
  message = str(info.value)
  assert message.startswith(f"{path}: refused")
  assert "references print" in message  # the global torch's reader met
  assert "torch.save(model.state_dict(), 'weights.pth')" in message
  assert not any(advice in message for advice in TORCH_ADVICE)
  assert "PWNED" not in capfd.readouterr().out


@pytest.mark.parametrize("content, says", [
    (b"", "is empty (0 bytes)"),
    (b"hello, world\n", "is not a PyTorch checkpoint: it starts with b'hello, w'"),
    ("truncated zip", "is a zip archive that torch cannot read as a checkpoint"),
    ("folder", "is a folder, not a PyTorch .pth file"),
])
def test_unreadable_pth_files_say_what_they_are(tmp_path, content, says):
  path = tmp_path / "weights.pth"
  if content == "truncated zip":
    torch.save({"w": torch.zeros(64)}, str(path))
    path.write_bytes(path.read_bytes()[:200])
  elif content == "folder":
    path.mkdir()
  else:
    path.write_bytes(content)
  with pytest.raises(convert.ConversionError) as info:
    convert.load_torch_checkpoint(str(path))
  assert str(info.value).startswith(f"{path}: {says}")
  assert not isinstance(info.value, convert.UnsafeCheckpoint)


def test_evaluate_py_refuses_a_hostile_pth_and_names_its_own_flags_on_a_mismatch(tmp_path):
  """evaluate.py --torch_checkpoint: a hostile file and one of another width each exit 2 with
  one message and no traceback; the hostile one without torch's advice, the other suggesting
  evaluate.py's flags and the config's fields, never the Python API's keywords. (With
  --images_dir, which needs no prepared data, the file is read by the same evaluate.torch_weights
  as for an evaluation.)"""
  hostile = _hostile_pth(tmp_path / "hostile.pth")
  other_width = _task_net_pth(tmp_path / "task_net.pth", width=0.125)
  images = tmp_path / "images"
  images.mkdir()
  Image.new("RGB", (48, 32)).save(images / "a.png")
  evaluate = ["evaluate.py", "--config", "configs/test.py", "--workdir", str(tmp_path / "work"),
              "--images_dir", str(images), "--torch_checkpoint"]
  results = run_side_by_side({"hostile": evaluate + [hostile], "mismatch": evaluate + [other_width]})
  for name, (status, out, err) in results.items():
    assert status == 2 and "Traceback" not in err, (name, err[-3000:])
    assert "PWNED" not in out + err
  err = results["hostile"][2]
  assert f"evaluate.py: {hostile}: refused" in err
  assert not any(advice in err for advice in TORCH_ADVICE)
  err = results["mismatch"][2]
  assert f"--torch_checkpoint {other_width} (with --torch_layout=task_net" in err
  assert "expected (3, 3, 3, 4)" in err  # the first conv: the file has 8 channels (width 0.125)
  assert ("Check --torch_layout (task_net, deeplab_vgg) and the config's model fields "
          "(model.num_classes, model.width") in err
  assert "allow_missing" not in err and "allow_unexpected" not in err


def test_translate_and_parity_refuse_a_hostile_pth_and_name_their_own_flags(tmp_path):
  """What translate --torch_generator and parity --checkpoint print (both exit 2 on any
  ConversionError)."""
  from gio_ada_jax.interop import parity  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  hostile = _hostile_pth(tmp_path / "hostile.pth")
  task_net = _task_net_pth(tmp_path / "task_net.pth", width=0.0625)
  config = tiny_training_config("unused", 1)
  with pytest.raises(convert.UnsafeCheckpoint, match="refused"):
    translate.generator_from_torch(config, hostile)
  with pytest.raises(convert.ConversionError) as info:
    translate.generator_from_torch(config, task_net)
  message = str(info.value)
  assert message.startswith(f"--torch_generator {task_net} (with cyclegan.ngf=64, "
                            "cyclegan.num_blocks=2, model.width=0.0625) does not fit")
  assert "\n  ... and 54 more\n" in message  # 20 missing keys, 46 unexpected: 12 listed
  assert "Check the config's cyclegan.ngf, cyclegan.num_blocks and model.width" in message
  assert "allow_" not in message

  config.model.num_classes = 5
  with pytest.raises(convert.LayoutMismatch) as info:
    parity.check_network("task_net", config.model, 32, 48, checkpoint=task_net)
  assert "allow_" not in str(info.value)  # the library's message suggests no keyword either
  message = str(parity.with_cli_advice(info.value, "task_net", task_net))
  assert message.startswith(f"--checkpoint {task_net} does not fit 'task_net'")
  assert "expected (3, 3, 64, 5)" in message and "Check --network=task_net" in message
