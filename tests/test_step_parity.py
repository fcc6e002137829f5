"""One whole GIO-Ada step in JAX equals the PyTorch reference step (fp32, CPU).

Losses to 1e-4 relative, the updated parameters of all four networks to 1e-5 max abs.
"""

import jax
import pytest

pytest.importorskip("torch")

from configs import test as test_config  # noqa: E402
from gio_ada_jax import models, parity, state, variants  # noqa: E402

HEIGHT, WIDTH = 32, 48


# Every row of the paper's Table 2 (input levels; "cg" steps as "na" on pre-translated images)
# with no output adaptation and with the joint one, and of Table 3 (output levels) with no
# input adaptation ("na,joint" is among the first).
TABLE_2 = [f"{level},{output}" for level in ("na", "gd", "+d", "+s", "+sd")
           for output in ("na", "joint")]
TABLE_3 = [f"na,{level}" for level in ("ss", "depth", "sep")]
ROWS = ([(variant, "bce", "patch") for variant in TABLE_2 + TABLE_3]
        + [("+d,sep", "lsgan", "patch"),  # the least-squares GAN
           ("na,ss", "bce", "fc")])  # AdaptSegNet-like: raw source images, FCDiscriminator


@pytest.mark.parametrize("variant,gan_loss,d_out_kind", ROWS,
                         ids=[f"{v}-{g}-{k}" for v, g, k in ROWS])
def test_step_matches_pytorch(variant, gan_loss, d_out_kind):
  config = test_config.get_config(variant)
  config.train.gan_loss = gan_loss
  config.model.d_out.kind = d_out_kind
  errors = parity.check_step(config, HEIGHT, WIDTH)
  for name, err in errors.loss_relative.items():
    assert err <= 1e-4, (name, err)
  for name, err in errors.param_max_abs.items():
    assert err <= 1e-5, (name, err)


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


def test_step_parity_detects_a_wrong_weight(monkeypatch):
  """The comparison is not vacuous: a changed λ on one side shows up."""
  config = test_config.get_config()
  real_check = parity.check_step
  errors = real_check(config, HEIGHT, WIDTH)
  assert max(errors.param_max_abs.values()) <= 1e-5
  config.train.lambda_depth = 0.2  # JAX side only: torch gets its own copy below
  from gio_ada_jax import torch_ref  # pylint: disable=g-import-not-at-top
  original = torch_ref.StepConfig.__init__

  def torch_with_paper_lambda(self, *args, **kwargs):
    original(self, *args, **kwargs)
    self.lambda_depth = 0.1

  monkeypatch.setattr(torch_ref.StepConfig, "__init__", torch_with_paper_lambda)
  errors = real_check(config, HEIGHT, WIDTH)
  assert errors.loss_relative["loss_g"] > 1e-4
  # The parameters show it too, beyond the 1e-5 tolerance (measured: 4e-4, Adam's first step
  # flipping sign where the depth term turns the gradient), in the networks that λ_depth
  # reaches, and only there: the discriminators' update does not involve it.
  assert errors.param_max_abs["task_net"] > 1e-4 and errors.param_max_abs["generator"] > 1e-4
  assert errors.param_max_abs["d_img"] <= 1e-5 and errors.param_max_abs["d_out"] <= 1e-5
