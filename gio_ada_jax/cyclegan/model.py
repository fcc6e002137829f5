"""CycleGAN (Zhu et al. 2017) between the source and the target images: the 'cg' baseline of
the paper's Table 2. A pure per-device step and its pmap, in the style of train_step.py.

Names say what each network maps: g_st turns source images into target-looking ones (upstream's
G_A with A = source), g_ts the reverse (G_B); d_t tells real target images from translated
source ones (upstream's D_A), d_s the reverse (D_B). With λ = cyclegan.lambda_cycle and
λ_idt = cyclegan.lambda_identity, the generators minimise (cycle_gan_model.py)

    GAN(d_t(g_st(s)) → real) + GAN(d_s(g_ts(t)) → real)
    + λ |g_ts(g_st(s)) - s|₁ + λ |g_st(g_ts(t)) - t|₁
    + λ λ_idt (|g_st(t) - t|₁ + |g_ts(s) - s|₁)

and each discriminator 0.5 (GAN(d(real) → real) + GAN(d(pooled fake) → fake)), where the fakes
pass through a history pool of past translations. As in the GIO-Ada step, every gradient is
taken at the parameters as they were before the step (upstream steps G first, but D's loss
only sees detached translations, so the two are the same).
"""

import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from gio_ada_jax.models import (ImageTransformNet, PatchDiscriminator, param_initializer,
                                subpixel_upsampling)
from gio_ada_jax.models.layers import at_least_float32
from gio_ada_jax.train import losses
from gio_ada_jax.train.step import AXIS_NAME, pmap_step, zero_instance_norm_biases
GENERATORS = ("g_st", "g_ts")
DISCRIMINATORS = ("d_s", "d_t")
NETWORKS = GENERATORS + DISCRIMINATORS


class CycleGanModels(NamedTuple):
  """The generator and discriminator modules (each used twice, with separate parameters)."""

  generator: ImageTransformNet
  discriminator: PatchDiscriminator


def build_models(config) -> CycleGanModels:
  """CycleGAN's ResnetGenerator (RGB in, RGB out) and PatchGAN from config.cyclegan."""
  cyclegan, model = config.cyclegan, config.model
  dtypes = dict(dtype=jnp.dtype(model.dtype), param_dtype=jnp.dtype(model.param_dtype))
  generator = ImageTransformNet(
      num_classes=model.num_classes, use_labels=False, use_depth=False, ngf=cyclegan.ngf,
      num_blocks=cyclegan.num_blocks, width=model.width,
      residual_output=cyclegan.residual_output,
      subpixel_upsampling=subpixel_upsampling(model.generator.upsampling), **dtypes)
  discriminator = PatchDiscriminator(ndf=cyclegan.ndf, n_layers=cyclegan.n_layers,
                                     width=model.width, **dtypes)
  return CycleGanModels(generator, discriminator)


@flax.struct.dataclass
class ImagePool:
  """Upstream's ImagePool as arrays: up to `size` past translations and how many are stored."""

  images: jax.Array  # [size, H, W, 3]
  count: jax.Array  # int32 scalar, <= size


@flax.struct.dataclass
class CycleGanState:
  """Everything a CycleGAN step reads and writes (pools: "s" and "t", of translated images)."""

  step: jax.Array
  params: dict[str, Any]
  opt_states: dict[str, Any]  # "generators" and "discriminators"
  pools: dict[str, ImagePool]
  rng: jax.Array


def learning_rate(cyclegan_config):
  """Upstream's 'linear' policy by steps: constant, then linearly to 0 at num_steps."""
  base, num_steps = cyclegan_config.learning_rate, cyclegan_config.num_steps
  decay_start = int(num_steps * cyclegan_config.decay_from)

  def schedule(step):
    fraction_decayed = jnp.maximum(step - decay_start, 0) / max(num_steps - decay_start, 1)
    return base * jnp.clip(1.0 - fraction_decayed, 0.0, 1.0)

  return schedule


def learning_rate_at(cyclegan_config, step: int) -> float:
  """The learning rate of step `step` (for logs)."""
  return float(learning_rate(cyclegan_config)(step))


def make_optimizers(config) -> dict[str, optax.GradientTransformation]:
  """One Adam for both generators and one for both discriminators, as upstream."""
  cyclegan = config.cyclegan
  adam = optax.adam(learning_rate(cyclegan), *cyclegan.betas, eps=config.train.adam_eps)
  return {"generators": adam, "discriminators": adam}


def _groups(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
  return {"generators": {k: params[k] for k in GENERATORS},
          "discriminators": {k: params[k] for k in DISCRIMINATORS}}


def empty_pool(size: int, height: int, width: int, dtype=jnp.float32) -> ImagePool:
  return ImagePool(images=jnp.zeros((size, height, width, 3), dtype),
                   count=jnp.zeros((), jnp.int32))


def create_state(models: CycleGanModels, config, rng: jax.Array, height: int,
                 width: int) -> CycleGanState:
  """Fresh parameters of the four networks, Adam states, empty pools, step 0."""
  init_rng, state_rng = jax.random.split(rng)
  image = jnp.zeros((1, height, width, 3), jnp.float32)
  keys = dict(zip(NETWORKS, jax.random.split(init_rng, len(NETWORKS))))
  # One compiled program per kind of network, run for both networks of that kind.
  init_generator = param_initializer(models.generator)
  init_discriminator = param_initializer(models.discriminator)
  params = {name: init_generator(keys[name], image) for name in GENERATORS}
  params.update({name: init_discriminator(keys[name], image) for name in DISCRIMINATORS})
  # One program for the optimiser states and pools (see train/state.create_state).
  return jax.jit(lambda p: state_from_params(p, config, state_rng, height, width))(params)


def state_from_params(params: dict[str, Any], config, rng: jax.Array, height: int,
                      width: int) -> CycleGanState:
  """A step-0 state around given parameters: Adam states, empty pools, the pools' `rng`."""
  optimizers = make_optimizers(config)
  pool_size = config.cyclegan.pool_size
  return CycleGanState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_states={name: optimizers[name].init(tree) for name, tree in _groups(params).items()},
      pools={domain: empty_pool(pool_size, height, width, jnp.dtype(config.model.param_dtype))
             for domain in ("s", "t")},
      rng=rng)


def query_pool(pool: ImagePool, images: jax.Array, uniforms: jax.Array,
               indices: jax.Array) -> tuple[ImagePool, jax.Array]:
  """Upstream's ImagePool.query, one image after the other; (new pool, images for D).

  While the pool is not full, each image is stored and returned. Once full, an image whose
  uniform draw is > 0.5 is stored in place of the one at its index, which is returned instead;
  otherwise the image itself is returned. A pool of size 0 returns the images.
  """
  size = pool.images.shape[0]
  if size == 0:
    return pool, images

  def one(pool, inputs):
    image, uniform, index = inputs
    not_full = pool.count < size
    swap = jnp.logical_and(jnp.logical_not(not_full), uniform > 0.5)
    slot = jnp.where(not_full, pool.count, index)
    previous = pool.images[slot]
    stored = jnp.where(jnp.logical_or(not_full, swap), image, previous)
    pool = ImagePool(pool.images.at[slot].set(stored), pool.count + not_full.astype(jnp.int32))
    return pool, jnp.where(swap, previous, image)

  return jax.lax.scan(one, pool, (images, uniforms, indices))


def pool_keys(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
  """The keys of step `step`'s draws for the pools "s" and "t"."""
  step_key = jax.random.fold_in(rng, step)
  return {"s": jax.random.fold_in(step_key, 0), "t": jax.random.fold_in(step_key, 1)}


def pool_draws(key: jax.Array, count: int, size: int) -> tuple[jax.Array, jax.Array]:
  """(uniforms, indices) for `count` images queried into a pool of `size` (query_pool)."""
  uniform_key, index_key = jax.random.split(key)
  return (jax.random.uniform(uniform_key, (count,)),
          jax.random.randint(index_key, (count,), 0, max(size, 1)))


def pooled(pool: ImagePool, fakes: jax.Array, key: jax.Array,
           axis_name: str | None) -> tuple[ImagePool, jax.Array]:
  """The pool after this step's translations and this device's images for D.

  Under pmap the pool is one pool over the global batch: every device gathers all devices'
  translations and queries the same pool with the same draws, so the pool stays replicated
  (and checkpoints whole), as upstream's pool over a DataParallel batch.
  """
  everyone = fakes if axis_name is None else jax.lax.all_gather(fakes, axis_name, tiled=True)
  uniforms, indices = pool_draws(key, everyone.shape[0], pool.images.shape[0])
  pool, returned = query_pool(pool, everyone.astype(pool.images.dtype), uniforms, indices)
  if axis_name is not None:
    per_device = fakes.shape[0]
    returned = jax.lax.dynamic_slice_in_dim(
        returned, jax.lax.axis_index(axis_name) * per_device, per_device)
  return pool, returned


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean absolute difference (nn.L1Loss)."""
  return jnp.mean(jnp.abs(at_least_float32(x) - at_least_float32(y)))


def generator_loss(g_params, d_params, source, target, *, models: CycleGanModels,
                   cyclegan_config):
  """Upstream's loss_G and (translations, metrics); the discriminators only read."""
  generate = lambda name, x: models.generator.apply({"params": g_params[name]}, x)  # noqa
  judge = lambda name, x: models.discriminator.apply({"params": d_params[name]}, x)  # noqa
  gan = functools.partial(losses.gan_loss, kind=cyclegan_config.gan_loss)
  fake_t = generate("g_st", source)
  fake_s = generate("g_ts", target)
  cycle_s = l1(generate("g_ts", fake_t), source)
  cycle_t = l1(generate("g_st", fake_s), target)
  gan_st = gan(judge("d_t", fake_t), True)
  gan_ts = gan(judge("d_s", fake_s), True)
  lam, lam_idt = cyclegan_config.lambda_cycle, cyclegan_config.lambda_identity
  zero = jnp.zeros((), jnp.float32)
  identity_t = l1(generate("g_st", target), target) if lam_idt > 0 else zero
  identity_s = l1(generate("g_ts", source), source) if lam_idt > 0 else zero
  total = (gan_st + gan_ts + lam * (cycle_s + cycle_t)
           + lam * lam_idt * (identity_s + identity_t))
  metrics = {"loss_gan_st": gan_st, "loss_gan_ts": gan_ts, "loss_cycle_s": cycle_s,
             "loss_cycle_t": cycle_t, "loss_identity_s": identity_s,
             "loss_identity_t": identity_t, "loss_g": total}
  return total, ({"fake_s": fake_s, "fake_t": fake_t}, metrics)


def discriminator_loss(d_params, fake_s, fake_t, source, target, *, models: CycleGanModels,
                       cyclegan_config):
  """0.5 (real + fake) for each discriminator, on (pooled) translations without gradient."""
  judge = lambda name, x: models.discriminator.apply({"params": d_params[name]}, x)  # noqa
  gan = functools.partial(losses.gan_loss, kind=cyclegan_config.gan_loss)
  loss_d_t = 0.5 * (gan(judge("d_t", target), True) + gan(judge("d_t", fake_t), False))
  loss_d_s = 0.5 * (gan(judge("d_s", source), True) + gan(judge("d_s", fake_s), False))
  return loss_d_s + loss_d_t, {"loss_d_s": loss_d_s, "loss_d_t": loss_d_t}


def train_step(state: CycleGanState, batch: dict[str, jax.Array], *, models: CycleGanModels,
               optimizers, cyclegan_config, axis_name: str | None = AXIS_NAME
               ) -> tuple[CycleGanState, dict[str, jax.Array]]:
  """One update of both generators and both discriminators (per device).

  `batch` holds "source_image" and "target_image" in [-1, 1]. Under pmap gradients and
  metrics are averaged over `axis_name`; axis_name=None runs on one device (parity).
  """
  source, target = batch["source_image"], batch["target_image"]
  g_params = {k: state.params[k] for k in GENERATORS}
  d_params = {k: state.params[k] for k in DISCRIMINATORS}
  common = dict(models=models, cyclegan_config=cyclegan_config)
  (_, (fakes, metrics)), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      g_params, d_params, source, target, **common)
  fakes = jax.lax.stop_gradient(fakes)
  keys = pool_keys(state.rng, state.step)
  pool_s, fake_s = pooled(state.pools["s"], fakes["fake_s"], keys["s"], axis_name)
  pool_t, fake_t = pooled(state.pools["t"], fakes["fake_t"], keys["t"], axis_name)
  (_, d_metrics), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      d_params, fake_s, fake_t, source, target, **common)
  # The generators have G_img's layout, the discriminators D_img's.
  grads = {name: zero_instance_norm_biases("generator" if name in GENERATORS else "d_img", g)
           for name, g in {**g_grads, **d_grads}.items()}
  metrics = {**metrics, **d_metrics}
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  new_params, new_opt_states = {}, {}
  for group, names in (("generators", GENERATORS), ("discriminators", DISCRIMINATORS)):
    params = {k: state.params[k] for k in names}
    updates, new_opt_states[group] = optimizers[group].update(
        {k: grads[k] for k in names}, state.opt_states[group], params)
    new_params.update(optax.apply_updates(params, updates))
    metrics[f"grad_norm_{group}"] = optax.global_norm({k: grads[k] for k in names})
  if axis_name is not None:
    metrics = jax.lax.pmean(metrics, axis_name)
  new_state = state.replace(step=state.step + 1, params=new_params, opt_states=new_opt_states,
                            pools={"s": pool_s, "t": pool_t})
  return new_state, metrics


def make_p_train_step(models: CycleGanModels, optimizers, cyclegan_config, devices=None):
  """The CycleGAN train_step, pmapped (train_step.pmap_step)."""
  return pmap_step(functools.partial(train_step, models=models, optimizers=optimizers,
                                     cyclegan_config=cyclegan_config), devices)


def batch_from_pipeline(pipeline_batch: dict[str, Any]) -> dict[str, Any]:
  """The pipeline's {'source': {...}, 'target': {...}} as the step's images."""
  return {"source_image": pipeline_batch["source"]["image"],
          "target_image": pipeline_batch["target"]["image"]}


@functools.partial(jax.jit, static_argnums=0)
def apply_generator(generator: ImageTransformNet, params, images: jax.Array) -> jax.Array:
  """Images [N, H, W, 3] in [-1, 1] through one generator (g_st: source -> target)."""
  return generator.apply({"params": params}, images)
