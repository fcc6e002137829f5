"""One GIO-Ada training step (paper equation 5): a pure per-device function and its pmap.

Generator side (G_img and G_task) minimises
    L_seg + λ_depth L_depth + λ_input GAN(D_img(x̂_s) → real) + λ_output GAN(D_out(out_t) → source)
with the task losses reaching G_img through x̂_s ('gd', Table 2). The discriminators train on
stopped-gradient tensors of the same forward pass: D_img on x_t (real) vs x̂_s (fake), D_out on
the target's outputs (1) vs the source's (0). All four Adam updates use gradients taken at the
parameters as they were before the step, as the PyTorch reference does (torch_ref/step.py).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gio_ada_jax.models import GioAdaModels, check_generator_inputs, instance_norm_bias_mask
from gio_ada_jax.train import losses
from gio_ada_jax.train.state import GioAdaState
from gio_ada_jax.variants import NETWORKS, Variant

AXIS_NAME = "data"


def output_features(variant: Variant, seg_logits: jax.Array, depth: jax.Array
                    ) -> dict[str, jax.Array]:
  """What each output discriminator sees (variants.OUTPUT_TABLE): the softmax, the depth, or
  their concatenation (C + 1 channels)."""
  parts = {"seg": jax.nn.softmax(seg_logits, axis=-1), "depth": depth}
  return {name: parts[names[0]] if len(names) == 1
          else jnp.concatenate([parts[n] for n in names], axis=-1)
          for name, names in variant.d_out_inputs.items()}


def translated_source(models, params, batch, variant: Variant):
  """x̂_s: the source images through G_img with the variant's inputs (raw images when the
  variant has no G_img: "na", and "cg" whose translation happened before training)."""
  if not variant.has_generator:
    return batch["source_image"]
  check_generator_inputs(models.generator, variant)
  return models.generator.apply(
      {"params": params["generator"]}, batch["source_image"],
      batch["source_label"] if variant.uses_labels else None,
      batch["source_depth"] if variant.uses_depth else None)


def generator_loss(g_params, d_params, batch, *, models: GioAdaModels, train_config,
                   variant: Variant, axis_name: str | None = None):
  """L_G and what the discriminator phase needs (the forward pass's outputs); the task losses
  average over the pixels of every device of `axis_name`."""
  params = {**g_params, **d_params}
  translated = translated_source(models, params, batch, variant)
  seg_s, depth_s = models.task_net.apply({"params": params["task_net"]}, translated)
  seg_t, depth_t = models.task_net.apply({"params": params["task_net"]}, batch["target_image"])
  loss_seg = losses.segmentation_cross_entropy(seg_s, batch["source_label"], axis_name)
  loss_depth = losses.masked_l1(depth_s, batch["source_depth"], batch["source_depth_mask"],
                                axis_name)
  loss_input_adv = jnp.zeros((), jnp.float32)
  if variant.has_generator:
    loss_input_adv = losses.gan_loss(
        models.d_img.apply({"params": params["d_img"]}, translated), True, train_config.gan_loss)
  loss_output_adv = jnp.zeros((), jnp.float32)
  for name, features in output_features(variant, seg_t, depth_t).items():
    logits = models.d_out.apply({"params": params["d_out"][name]}, features)
    loss_output_adv += losses.gan_loss(logits, False, train_config.gan_loss)
  total = (loss_seg + train_config.lambda_depth * loss_depth
           + train_config.lambda_input * loss_input_adv
           + train_config.lambda_output * loss_output_adv)
  outputs = {"translated": translated, "seg_s": seg_s, "depth_s": depth_s, "seg_t": seg_t,
             "depth_t": depth_t}
  metrics = {"loss_seg": loss_seg, "loss_depth": loss_depth,
             "loss_g_input_adv": loss_input_adv, "loss_g_output_adv": loss_output_adv,
             "loss_g": total}
  return total, (outputs, metrics)


def discriminator_loss(d_params, outputs, batch, *, models: GioAdaModels, train_config,
                       variant: Variant):
  """L_D_img + L_D_out on stopped-gradient outputs; each is 0.5 (real + fake)."""
  outputs = jax.lax.stop_gradient(outputs)
  gan = functools.partial(losses.gan_loss, kind=train_config.gan_loss)
  loss_d_img = jnp.zeros((), jnp.float32)
  if variant.has_generator:
    d_img = functools.partial(models.d_img.apply, {"params": d_params["d_img"]})
    loss_d_img = 0.5 * (gan(d_img(batch["target_image"]), True)
                        + gan(d_img(outputs["translated"]), False))
  loss_d_out = jnp.zeros((), jnp.float32)
  source = output_features(variant, outputs["seg_s"], outputs["depth_s"])
  target = output_features(variant, outputs["seg_t"], outputs["depth_t"])
  for name in source:
    d_out = functools.partial(models.d_out.apply, {"params": d_params["d_out"][name]})
    loss_d_out += 0.5 * (gan(d_out(source[name]), False) + gan(d_out(target[name]), True))
  return loss_d_img + loss_d_out, {"loss_d_img": loss_d_img, "loss_d_out": loss_d_out}


def zero_instance_norm_biases(network: str, grads):
  """Exact zeros for the gradients of biases that an InstanceNorm cancels (see models)."""
  mask = instance_norm_bias_mask(network, grads)
  return jax.tree.map(lambda g, m: jnp.zeros_like(g) if m else g, grads, mask)


def train_step(state: GioAdaState, batch: dict[str, jax.Array], *, models: GioAdaModels,
               optimizers: dict[str, optax.GradientTransformation], train_config,
               variant: Variant, axis_name: str | None = AXIS_NAME
               ) -> tuple[GioAdaState, dict[str, jax.Array]]:
  """One update of all four networks from one source + one target batch (per device), as
  `variant` (static: variants.Variant is hashable) trains them.

  Under pmap, gradients and metrics are averaged over `axis_name`, and the task losses are
  means over the pixels of the whole global batch, so the step equals one device stepping on
  the devices' batches concatenated; with axis_name=None the step runs on one device.
  """
  g_params = {k: state.params[k] for k in ("generator", "task_net")}
  d_params = {k: state.params[k] for k in ("d_img", "d_out")}
  (_, (outputs, metrics)), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      g_params, d_params, batch, models=models, train_config=train_config, variant=variant,
      axis_name=axis_name)
  (_, d_metrics), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      d_params, outputs, batch, models=models, train_config=train_config, variant=variant)
  grads = {name: zero_instance_norm_biases(name, g) for name, g in {**g_grads, **d_grads}.items()}
  metrics = {**metrics, **d_metrics}
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  new_params, new_opt_states = {}, {}
  for name in NETWORKS:
    updates, new_opt_states[name] = optimizers[name].update(
        grads[name], state.opt_states[name], state.params[name])
    new_params[name] = optax.apply_updates(state.params[name], updates)
    metrics[f"grad_norm_{name}"] = optax.global_norm(grads[name])
  if axis_name is not None:
    metrics = jax.lax.pmean(metrics, axis_name)
  new_state = state.replace(step=state.step + 1, params=new_params, opt_states=new_opt_states,
                            rng=jax.random.fold_in(state.rng, state.step))
  return new_state, metrics


def pmap_step(step, devices=None):
  """`step(state, batch, axis_name=...)` over the local devices (or `devices`): state
  replicated and donated, batch [devices, per_device, ...], collectives over AXIS_NAME."""
  return jax.pmap(functools.partial(step, axis_name=AXIS_NAME), axis_name=AXIS_NAME,
                  devices=devices, donate_argnums=(0,))


def make_p_train_step(models: GioAdaModels, optimizers, train_config, variant: Variant,
                      devices=None):
  """The GIO-Ada train_step of `variant`, pmapped (pmap_step)."""
  return pmap_step(functools.partial(train_step, models=models, optimizers=optimizers,
                                     train_config=train_config, variant=variant), devices)


def batch_from_pipeline(pipeline_batch: dict[str, Any]) -> dict[str, Any]:
  """The pipeline's {'source': {...}, 'target': {...}} as the step's flat batch."""
  source, target = pipeline_batch["source"], pipeline_batch["target"]
  return {"source_image": source["image"], "source_label": source["label"],
          "source_depth": source["depth"], "source_depth_mask": source["depth_mask"],
          "target_image": target["image"]}
