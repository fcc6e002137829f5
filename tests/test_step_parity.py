"""GIO-Ada training steps in JAX equal the PyTorch reference's, step after step (CPU).

Every variant row, on the tiny test networks, as `parity --step` checks it: each quantity in
the precision that decides it (parity.decided_checks; the arithmetic is in
docs/development.md). One float32 step: every loss to 1e-4 relative. Three float64 steps from
the same weights: every loss of every step and Adam's first and second moments after the last
(per tensor to its largest entry) to float32's unit roundoff, the parameters of all four
networks to 1.1e-6 of 3 Adam updates (3 lr), and every step count. The default widths in
float64. Then the wrong Adam betas, learning rate and loss weights that these tolerances exist
to catch, each made on the PyTorch side only, and each failing them.
"""

import jax
import jax.numpy as jnp
import pytest

pytest.importorskip("torch")

from configs import default  # noqa: E402
from configs import test as test_config  # noqa: E402
from gio_ada_jax import models, variants  # noqa: E402
from gio_ada_jax.interop import parity  # noqa: E402
from gio_ada_jax.train import state  # noqa: E402

HEIGHT, WIDTH = 32, 48
NUM_STEPS = 3
FINAL = ("+sd,joint", "bce", "patch")


# Every row of the paper's Table 2 (input levels; "cg" steps as "na" on pre-translated images)
# with no output adaptation and with the joint one, and of Table 3 (output levels) with no
# input adaptation ("na,joint" is among the first).
TABLE_2 = [f"{level},{output}" for level in ("na", "gd", "+d", "+s", "+sd")
           for output in ("na", "joint")]
TABLE_3 = [f"na,{level}" for level in ("ss", "depth", "sep")]
ROWS = ([(variant, "bce", "patch") for variant in TABLE_2 + TABLE_3]
        + [("+d,sep", "lsgan", "patch"),  # the least-squares GAN
           ("na,ss", "bce", "fc")])  # AdaptSegNet-like: raw source images, FCDiscriminator


def row_config(variant, gan_loss, d_out_kind, base=test_config):
  config = base.get_config(variant)
  config.train.gan_loss = gan_loss
  config.model.d_out.kind = d_out_kind
  return config


def failures(report: parity.StepReport) -> list[str]:
  """The report's failing lines and step counts, readable in an assertion message."""
  return [f"{c.precision} {c.name}: {c.error:.3e} > {c.tolerance:.1e}"
          for c in report.failures()] + report.count_errors


@pytest.fixture(scope="module")
def final_runs():
  """The final model's JAX runs (tiny), compiled once for the tests below."""
  return parity.step_runs(row_config(*FINAL), HEIGHT, WIDTH, num_steps=NUM_STEPS)


@pytest.mark.parametrize("variant,gan_loss,d_out_kind", ROWS,
                         ids=[f"{v}-{g}-{k}" for v, g, k in ROWS])
def test_steps_match_pytorch(variant, gan_loss, d_out_kind, request):
  runs = (request.getfixturevalue("final_runs") if (variant, gan_loss, d_out_kind) == FINAL
          else parity.step_runs(row_config(variant, gan_loss, d_out_kind), HEIGHT, WIDTH,
                                num_steps=NUM_STEPS))
  report = parity.step_report({dtype: parity.compare_steps(run) for dtype, run in runs.items()})
  float64 = report.errors["float64"]
  assert len(float64.loss_relative_per_step) == NUM_STEPS
  present = {name for name in variants.NETWORKS if runs["float64"].params[name]}
  assert {key.split("/")[0] for key in float64.moment_relative} == present
  assert {c.precision for c in report.checks} == {"float32", "float64"}
  assert report.passed, failures(report)


def test_steps_match_pytorch_with_distinct_loss_weights():
  """The paper's λ_depth and λ_input are both 0.1, so at its weights a step that read one for
  the other would match the reference; here every weight differs (and none is the paper's)."""
  config = row_config(*FINAL)
  config.train.lambda_depth, config.train.lambda_input = 0.3, 0.05
  config.train.lambda_output = 0.004
  report = parity.check_step(config, HEIGHT, WIDTH, num_steps=NUM_STEPS)
  assert report.passed, failures(report)


def test_default_width_steps_match_pytorch_in_float64():
  """The final model at the default widths (configs/default.py: G_img ngf 64 with 9 blocks,
  the VGG16 task net, PatchGANs of 64) in float64, 3 steps at 24x32 (the smallest input the
  PatchGANs take): what float32 cannot compare entry by entry at this size agrees to rounding.

  Measured: losses 2.6e-13 relative, parameters 3.0e-9 N lr, moments 5.3e-12. That is float64's
  rounding in the two frameworks' different summation orders, grown through 3 steps of ~40
  layers and Adam's m / sqrt(v) on small gradients. The wrong settings below move these by
  1e-4 and more.
  """
  config = default.get_config("+sd,joint")
  config.model.task_net.encoder_init = "random"  # the ImageNet file is not needed here
  # As check_step(dtypes=("float64",)), with the step compiled at LLVM's O2: at `make test`'s
  # O0 these widths take 5 times as long per step.
  run = parity.jax_steps(config, 24, 32, num_steps=NUM_STEPS, dtype="float64",
                         compiler_options={"xla_backend_optimization_level": 2})
  report = parity.step_report({"float64": parity.compare_steps(run)})
  assert len(report.errors["float64"].loss_relative_per_step) == NUM_STEPS
  assert report.passed, failures(report)
  assert jnp.zeros(()).dtype == jnp.float32  # x64 mode did not leak out of the check


# Wrong settings in the PyTorch reference only (the JAX side keeps the config's).


def swap_d_betas(step):
  """D_img's Adam betas (0.5, 0.999) and D_out's (0.9, 0.99) swapped."""
  groups = step.optimisers["d_img"].param_groups[0], step.optimisers["d_out"].param_groups[0]
  groups[0]["betas"], groups[1]["betas"] = groups[1]["betas"], groups[0]["betas"]


def task_net_lr_1_5x(step):
  step.optimisers["task_net"].param_groups[0]["lr"] *= 1.5


def doubled(field):
  def change(step):
    setattr(step.config, field, 2 * getattr(step.config, field))
  return change


def d_img_loss_2x(step):
  """D_img's loss (and so its gradient) doubled."""
  losses = step.discriminator_losses

  def twice(*args, **kwargs):
    out = losses(*args, **kwargs)
    return {**out, "loss_d_img": 2 * out["loss_d_img"]}

  step.discriminator_losses = twice


def reference_with(change):
  """torch_reference_step, then `change(step)`: the hook parity.check_step takes."""
  def build(config, networks):
    step = parity.torch_reference_step(config, networks)
    change(step)
    return step
  return build


MUTANTS = {"swapped_d_betas": swap_d_betas, "task_net_lr_1.5x": task_net_lr_1_5x,
           "lambda_input_2x": doubled("lambda_input"),
           "lambda_output_2x": doubled("lambda_output"),
           "lambda_depth_2x": doubled("lambda_depth"), "d_img_loss_2x": d_img_loss_2x}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_multi_step_parity_fails_for_a_wrong_optimiser_setting_or_loss_weight(mutant,
                                                                              final_runs):
  """Each error fails the float64 check by orders of magnitude: the moments move by 0.56 to
  67 relative (measured), and all but the doubled discriminator loss the parameters by 0.64 to
  1.9 updates (N lr). A doubled loss doubles the gradient, which Adam's update mostly cancels:
  its parameters move by 0.012 updates, still 10^4 times the tolerance; its moments (2x and
  4x) and its loss show it plainly."""
  errors = parity.compare_steps(final_runs["float64"], reference_with(MUTANTS[mutant]))
  report = parity.step_report({"float64": errors})
  assert not report.passed
  assert max(errors.moment_relative.values()) > 0.1, failures(report)
  if mutant == "d_img_loss_2x":
    assert errors.moment_relative["d_img/nu"] > 0.5 and errors.loss_relative["loss_d_img"] > 0.4
    assert errors.param_in_updates["d_img"] > 1e3 * parity.float64_param_tolerance(1e-8)
  else:
    assert max(errors.param_in_updates.values()) > 0.1, failures(report)


def test_one_step_with_swapped_betas_matches_parameters_and_losses(final_runs):
  """Why several steps: after one Adam step, m̂ = g and v̂ = g² whatever the betas, so the
  update (about lr sign(g)) and the losses agree with swapped betas, in float64 to rounding;
  only the moments themselves ((1 - β1) g) show them. After 3 steps the parameters do too
  (test above)."""
  one_step = parity.jax_steps(row_config(*FINAL), HEIGHT, WIDTH, 0, 1, "float64",
                              final_runs["float32"].initial_params)
  report = parity.step_report(
      {"float64": parity.compare_steps(one_step, reference_with(swap_d_betas))})
  assert {c.name.split()[0] for c in report.failures()} == {
      "d_img/mu", "d_img/nu", "d_out/mu", "d_out/nu"}, failures(report)


def test_instance_norm_bias_mask_marks_exactly_the_cancelled_biases():
  config = test_config.get_config()
  built = models.build_models(config.model, variants.FINAL)
  params = state.init_params(built, variants.FINAL, config.model.num_classes,
                             jax.random.key(0), HEIGHT, WIDTH)
  generator = models.instance_norm_bias_mask("generator", params["generator"])
  assert generator["stem"]["bias"] and generator["up_1"]["bias"]
  assert not generator["head"]["bias"] and not generator["stem"]["kernel"]
  d_img = models.instance_norm_bias_mask("d_img", params["d_img"])
  assert [d_img[f"conv_{k}"]["bias"] for k in range(5)] == [False, True, True, True, False]
  assert not any(jax.tree.leaves(models.instance_norm_bias_mask("task_net",
                                                                params["task_net"])))

