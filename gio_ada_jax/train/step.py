"""One GIO-Ada training step (paper equation 5): a pure function, compiled for a device layout
(parallel.py: pmap, or jit over a ("data", "spatial") mesh).

Generator side (G_img and G_task) minimises
    L_seg + λ_depth L_depth + λ_input GAN(D_img(x̂_s) → real) + λ_output GAN(D_out(out_t) → source)
with the task losses reaching G_img through x̂_s ('gd', Table 2). The discriminators train on
stopped-gradient tensors of the same forward pass: D_img on x_t (real) vs x̂_s (fake), D_out on
the target's outputs (1) vs the source's (0). All four Adam updates use gradients taken at the
parameters as they were before the step, as the PyTorch reference does (torch_ref/step.py).
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gio_ada_jax import parallel
from gio_ada_jax.models import GioAdaModels, check_generator_inputs, instance_norm_bias_mask
from gio_ada_jax.train import losses
from gio_ada_jax.train.state import GioAdaState
from gio_ada_jax.variants import NETWORKS, Variant

AXIS_NAME = parallel.AXIS_NAME


@dataclasses.dataclass(frozen=True)
class Objective:
  """Equation (5) as a step computes it: which terms exist (the variant) and their weights and
  GAN loss (train.lambda_*, train.gan_loss). Plain Python values resolved from the config once,
  before tracing; hashable, so the step takes it as a static argument."""

  variant: Variant
  lambda_depth: float
  lambda_input: float
  lambda_output: float
  gan_loss: str


def objective_from_config(train_config, variant: Variant) -> Objective:
  """The Objective of config.train's weights and GAN loss for `variant`."""
  return Objective(variant, float(train_config.lambda_depth), float(train_config.lambda_input),
                   float(train_config.lambda_output), str(train_config.gan_loss))


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


def forward(models: GioAdaModels, params, batch, variant: Variant) -> dict[str, jax.Array]:
  """The step's one forward pass, shared with the TensorBoard pictures and the demo: x̂_s (the
  translated source) and G_task's segmentation logits and depth of x̂_s and of x_t."""
  translated = translated_source(models, params, batch, variant)
  task_net = functools.partial(models.task_net.apply, {"params": params["task_net"]})
  seg_s, depth_s = task_net(translated)
  seg_t, depth_t = task_net(batch["target_image"])
  return {"translated": translated, "seg_s": seg_s, "depth_s": depth_s, "seg_t": seg_t,
          "depth_t": depth_t}


def generator_loss(g_params, d_params, batch, *, models: GioAdaModels, objective: Objective,
                   axis_name: str | None = None):
  """L_G of equation (5) and (aux) the forward pass's outputs and the loss terms; the task
  losses average over the pixels of every device of `axis_name`."""
  variant = objective.variant
  params = {**g_params, **d_params}
  outputs = forward(models, params, batch, variant)
  gan = functools.partial(losses.gan_loss, kind=objective.gan_loss)
  zero = jnp.zeros((), jnp.float32)
  # G_img wants D_img to call x̂_s a real (target) image.
  input_adv = (gan(models.d_img.apply({"params": params["d_img"]}, outputs["translated"]), True)
               if variant.has_generator else zero)
  # G_task wants D_out to call the target's outputs the source's (0). The paper does not say
  # how 'sep' weights its two discriminators: their terms are summed under the one λ_output
  # (as torch_ref/step.py does), so each pulls as hard as 'joint''s single one.
  output_adv = sum((gan(models.d_out.apply({"params": params["d_out"][name]}, features), False)
                    for name, features in output_features(variant, outputs["seg_t"],
                                                           outputs["depth_t"]).items()), zero)
  terms = {
      "loss_seg": losses.segmentation_cross_entropy(outputs["seg_s"], batch["source_label"],
                                                    axis_name),
      "loss_depth": losses.masked_l1(outputs["depth_s"], batch["source_depth"],
                                     batch["source_depth_mask"], axis_name),
      "loss_g_input_adv": input_adv,
      "loss_g_output_adv": output_adv,
  }
  total = (terms["loss_seg"] + objective.lambda_depth * terms["loss_depth"]
           + objective.lambda_input * terms["loss_g_input_adv"]
           + objective.lambda_output * terms["loss_g_output_adv"])
  return total, (outputs, {**terms, "loss_g": total})


def discriminator_loss(d_params, outputs, batch, *, models: GioAdaModels, objective: Objective):
  """L_D_img + L_D_out on stopped-gradient outputs of the forward pass; each discriminator's is
  0.5 (real + fake), target real (1), source fake (0)."""
  variant = objective.variant
  outputs = jax.lax.stop_gradient(outputs)
  gan = functools.partial(losses.gan_loss, kind=objective.gan_loss)
  loss_d_img = jnp.zeros((), jnp.float32)
  if variant.has_generator:
    d_img = functools.partial(models.d_img.apply, {"params": d_params["d_img"]})
    loss_d_img = 0.5 * (gan(d_img(batch["target_image"]), True)
                        + gan(d_img(outputs["translated"]), False))
  loss_d_out = jnp.zeros((), jnp.float32)
  source = output_features(variant, outputs["seg_s"], outputs["depth_s"])
  target = output_features(variant, outputs["seg_t"], outputs["depth_t"])
  for name in source:  # 'sep': the sum of two discriminators' losses, each on its own params
    d_out = functools.partial(models.d_out.apply, {"params": d_params["d_out"][name]})
    loss_d_out += 0.5 * (gan(d_out(source[name]), False) + gan(d_out(target[name]), True))
  return loss_d_img + loss_d_out, {"loss_d_img": loss_d_img, "loss_d_out": loss_d_out}


def zero_instance_norm_biases(network: str, grads):
  """Exact zeros for the gradients of biases that an InstanceNorm cancels (see models)."""
  mask = instance_norm_bias_mask(network, grads)
  return jax.tree.map(lambda g, m: jnp.zeros_like(g) if m else g, grads, mask)


def train_step(state: GioAdaState, batch: dict[str, jax.Array], *, models: GioAdaModels,
               optimizers: dict[str, optax.GradientTransformation], objective: Objective,
               axis_name: str | None = AXIS_NAME
               ) -> tuple[GioAdaState, dict[str, jax.Array]]:
  """One update of all four networks from one source + one target batch (per device): the
  gradients of `objective`'s L_G and L_D, all taken at the parameters before the step.

  Under pmap, gradients and metrics are averaged over `axis_name`, and the task losses are
  means over the pixels of the whole global batch, so the step equals one device stepping on
  the devices' batches concatenated. With axis_name=None the step sees the whole batch: on one
  device, or under jit over a mesh, where XLA partitions it (parallel.MeshLayout).
  """
  g_params = {k: state.params[k] for k in ("generator", "task_net")}
  d_params = {k: state.params[k] for k in ("d_img", "d_out")}
  (_, (outputs, metrics)), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      g_params, d_params, batch, models=models, objective=objective, axis_name=axis_name)
  (_, d_metrics), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      d_params, outputs, batch, models=models, objective=objective)
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
  new_state = state.replace(step=state.step + 1, params=new_params, opt_states=new_opt_states)
  return new_state, metrics


def pmap_step(step, devices=None):
  """`step(state, batch, axis_name=...)` over the local devices (or `devices`): state
  replicated and donated, batch [devices, per_device, ...], collectives over AXIS_NAME."""
  return parallel.PmapLayout(None if devices is None else tuple(devices)).compile_step(step)


def make_p_train_step(models: GioAdaModels, optimizers, train_config, variant: Variant,
                      layout: parallel.Layout | None = None):
  """The GIO-Ada train_step of `variant` and config.train's objective, compiled for `layout`
  (default: pmap over every device)."""
  layout = parallel.PmapLayout() if layout is None else layout
  return layout.compile_step(functools.partial(
      train_step, models=models, optimizers=optimizers,
      objective=objective_from_config(train_config, variant)))


def batch_from_pipeline(pipeline_batch: dict[str, Any]) -> dict[str, Any]:
  """The pipeline's {'source': {...}, 'target': {...}} as the step's flat batch."""
  source, target = pipeline_batch["source"], pipeline_batch["target"]
  return {"source_image": source["image"], "source_label": source["label"],
          "source_depth": source["depth"], "source_depth_mask": source["depth_mask"],
          "target_image": target["image"]}
