"""The GIO-Ada losses as pure functions (float32, float64 for float64 inputs; NHWC logits, int
labels with 255 = ignore)."""

import jax
import jax.numpy as jnp

from gio_ada_jax.data.labels import IGNORE_LABEL
from gio_ada_jax.models.layers import at_least_float32


def _mean_over_all_devices(total: jax.Array, count: jax.Array,
                           axis_name: str | None) -> jax.Array:
  """total / max(count, 1), with total and count summed over every device of `axis_name`.

  Each device returns its own total scaled by the number of devices over the global count, so
  that the pmean of the devices' gradients is the gradient of the mean over the whole global
  batch: the same step as one device on the concatenated batch, whatever each device's number
  of valid pixels (a mean of per-device means would weight pixels by their device).
  """
  if axis_name is None:
    return total / jnp.maximum(count, 1)
  devices = jax.lax.psum(1, axis_name)
  return total * devices / jnp.maximum(jax.lax.psum(count, axis_name), 1)


def segmentation_cross_entropy(logits: jax.Array, labels: jax.Array,
                               axis_name: str | None = None) -> jax.Array:
  """Mean cross-entropy over pixels whose label is not 255 (0 when there are none), over the
  devices of `axis_name` too (see _mean_over_all_devices).

  logits [..., C] (any float dtype, computed in at least float32), labels [...] int.
  """
  logits = at_least_float32(logits)
  valid = labels != IGNORE_LABEL
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  return _mean_over_all_devices(jnp.sum(nll * valid), jnp.sum(valid), axis_name)


def masked_l1(prediction: jax.Array, target: jax.Array, mask: jax.Array,
              axis_name: str | None = None) -> jax.Array:
  """Mean |prediction - target| over pixels where mask is 1 (0 when there are none), over the
  devices of `axis_name` too (see _mean_over_all_devices)."""
  mask = at_least_float32(mask)
  error = jnp.abs(at_least_float32(prediction) - at_least_float32(target)) * mask
  return _mean_over_all_devices(jnp.sum(error), jnp.sum(mask), axis_name)


def gan_loss(logits: jax.Array, target_is_real: bool, kind: str = "bce") -> jax.Array:
  """Discriminator loss against an all-real or all-fake target, mean over every output
  (float32, or float64 for float64 logits).

  "bce": BCE with logits (the paper's log-likelihood terms, equations 1 and 4), written as
  softplus(z) - y z for stability. "lsgan": least squares, (z - y)^2.
  """
  logits = at_least_float32(logits)
  target = 1.0 if target_is_real else 0.0
  if kind == "lsgan":
    return jnp.mean(jnp.square(logits - target))
  return jnp.mean(jax.nn.softplus(logits) - target * logits)  # "bce"
