"""The building blocks against PyTorch's ops and hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gio_ada_jax.models import layers
from gio_ada_jax.models.task_net import INPUT_NORMALISATIONS, normalise_input

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


@pytest.mark.parametrize("in_hw,out_hw", [((12, 22), (97, 175)), ((13, 8), (97, 61)),
                                          ((40, 30), (17, 11)), ((5, 1), (9, 4)),
                                          ((1, 1), (3, 3))])
def test_resize_matches_torch_align_corners_true(in_hw, out_hw):
  x = np.random.default_rng(0).standard_normal((2, *in_hw, 3)).astype(np.float32)
  ours = np.asarray(layers.resize_bilinear_align_corners(jnp.asarray(x), *out_hw))
  theirs = F.interpolate(_nchw(x), size=out_hw, mode="bilinear", align_corners=True)
  np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_resize_is_not_jax_image_resize():
  """align_corners=True keeps the corner values; jax.image.resize (half-pixel) does not."""
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  ours = layers.resize_bilinear_align_corners(x, 7, 7)
  assert float(ours[0, 0, 0, 0]) == 0.0 and float(ours[0, -1, -1, 0]) == 15.0
  theirs = jax.image.resize(x, (1, 7, 7, 1), "bilinear")
  assert not np.allclose(np.asarray(ours), np.asarray(theirs))


def test_instance_norm_matches_torch():
  x = np.random.default_rng(1).standard_normal((2, 9, 7, 5)).astype(np.float32) * 3 + 1
  ours = np.asarray(layers.instance_norm(jnp.asarray(x)))
  theirs = torch.nn.InstanceNorm2d(5, affine=False)(_nchw(x)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_instance_norm_keeps_bf16_dtype_with_float32_statistics():
  x = (jnp.arange(64.0).reshape(1, 8, 8, 1) + 1000.0).astype(jnp.bfloat16)
  y = layers.instance_norm(x)
  assert y.dtype == jnp.bfloat16
  # Per-pixel values are ~1000 apart by 1: bf16 statistics would collapse them.
  assert float(jnp.std(y.astype(jnp.float32))) == pytest.approx(1.0, rel=0.02)
  # Each value, against float64 statistics of the same bf16 input (bf16 output rounding).
  x64 = np.asarray(x.astype(jnp.float32), np.float64)
  want = (x64 - x64.mean()) / np.sqrt(x64.var() + 1e-5)
  np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), want, rtol=0, atol=0.02)


def test_reflect_pad_does_not_repeat_the_edge():
  x = jnp.arange(3.0).reshape(1, 1, 3, 1)
  padded = layers.reflect_pad(x, 2)[0, 2, :, 0]
  np.testing.assert_array_equal(np.asarray(padded), [2, 1, 0, 1, 2, 1, 0])


def test_scale_width_never_reaches_zero():
  assert layers.scale_width(64, 1.0) == 64
  assert layers.scale_width(64, 1 / 16) == 4
  assert layers.scale_width(3, 0.01) == 1


def test_caffe_normalisation_is_bgr_0_255_minus_mean():
  rgb = np.array([[[[-1.0, 0.0, 1.0]]]], np.float32)  # R=0, G=127.5, B=255 in pixels
  out = np.asarray(normalise_input(jnp.asarray(rgb), "caffe"))[0, 0, 0]
  mean_bgr = INPUT_NORMALISATIONS["caffe"][2]
  np.testing.assert_allclose(out, [255 - mean_bgr[0], 127.5 - mean_bgr[1], 0 - mean_bgr[2]],
                             rtol=1e-6)


def test_torchvision_normalisation_is_imagenet_mean_std():
  rgb = np.array([[[[-1.0, 0.0, 1.0]]]], np.float32)  # [0, 0.5, 1] in [0, 1]
  out = np.asarray(normalise_input(jnp.asarray(rgb), "torchvision"))[0, 0, 0]
  _, _, mean, std = INPUT_NORMALISATIONS["torchvision"]
  np.testing.assert_allclose(out, (np.array([0, 0.5, 1]) - mean) / std, rtol=1e-6)
