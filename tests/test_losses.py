"""Losses against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from gio_ada_jax.train import losses


def test_cross_entropy_ignores_255_and_averages_valid_pixels():
  logits = jnp.array([[[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]]])  # 1x3 pixels, 2 classes
  labels = jnp.array([[0, 255, 1]])
  want = (-np.log(np.exp(2) / (np.exp(2) + 1)) - np.log(np.exp(3) / (np.exp(1) + np.exp(3)))) / 2
  assert float(losses.segmentation_cross_entropy(logits, labels)) == pytest.approx(want, rel=1e-6)


def test_cross_entropy_of_an_all_ignored_image_is_zero():
  logits = jnp.ones((1, 2, 2, 3))
  assert float(losses.segmentation_cross_entropy(logits, jnp.full((1, 2, 2), 255))) == 0.0


def test_masked_l1():
  prediction = jnp.array([1.0, 2.0, 5.0])
  target = jnp.array([0.5, 2.5, 0.0])
  mask = jnp.array([1.0, 1.0, 0.0])
  assert float(losses.masked_l1(prediction, target, mask)) == pytest.approx(0.5)
  assert float(losses.masked_l1(prediction, target, jnp.zeros(3))) == 0.0


def test_gan_losses():
  z = jnp.array([0.0, 2.0])
  real = (np.log(2) + np.log(1 + np.exp(-2))) / 2  # -log(sigmoid(z)) averaged
  fake = (np.log(2) + np.log(1 + np.exp(2))) / 2  # -log(1 - sigmoid(z)) averaged
  assert float(losses.gan_loss(z, True)) == pytest.approx(real, rel=1e-6)
  assert float(losses.gan_loss(z, False)) == pytest.approx(fake, rel=1e-6)
  assert float(losses.gan_loss(z, True, "lsgan")) == pytest.approx((1 + 1) / 2)
  assert float(losses.gan_loss(z, False, "lsgan")) == pytest.approx((0 + 4) / 2)
