"""Every option of configs/default.py has a test that fails when its branch or value is handled
wrongly: the options no other test reaches, and the inventory (INVENTORY) naming the test(s) of
every option, held complete and pointing at tests that exist (docs/development.md)."""

import ast
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from configs import procedural as procedural_config_lib
from configs import test as test_config
from gio_ada_jax import models, variants
from gio_ada_jax.cyclegan import model as cyclegan
from gio_ada_jax.data import pipeline, procedural
from gio_ada_jax.train import loop as loop_lib, state, step as train_step

HEIGHT, WIDTH = 32, 48


def _leaves(config, prefix: str = "") -> dict:
  """{dotted path: value} of every leaf field of a ConfigDict."""
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


# ------------------------------------------------------------------------------ optimisers


def _adam_by_hand(gradients, lr_at, b1: float, b2: float, eps: float) -> list[float]:
  """The parameter after each step of Adam (Kingma & Ba, bias-corrected) from 0."""
  m = v = w = 0.0
  out = []
  for t, g in enumerate(gradients, start=1):
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    w -= lr_at(t - 1) * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    out.append(w)
  return out


def _run_optimizer(optimizer, gradients) -> list[float]:
  params = {"w": jnp.zeros((), jnp.float32)}
  opt_state = optimizer.init(params)
  out = []
  for g in gradients:
    updates, opt_state = optimizer.update({"w": jnp.float32(g)}, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    out.append(float(params["w"]))
  return out


# Gradients whose size changes from step to step, so that beta1, beta2 and eps all show after
# the first step (Adam's first update is lr * sign(g) whatever they are); eps is large enough
# to matter against sqrt(v) ~ 1e-3.
GRADIENTS = [1e-3, -3e-3, 2e-3, 5e-4, -1e-3]


def test_every_network_adam_uses_its_own_betas_eps_and_rate():
  """train.{generator,task_net,d_img,d_out}_betas, adam_eps, learning_rate: each network's
  Adam over 5 steps equals Adam by hand with its own betas (all four different)."""
  train = test_config.get_config().train
  train.learning_rate, train.adam_eps = 1e-2, 1e-4
  betas = {"generator": (0.5, 0.999), "task_net": (0.9, 0.99), "d_img": (0.3, 0.9),
           "d_out": (0.7, 0.95)}
  for name, value in betas.items():
    setattr(train, f"{name}_betas", value)
  optimizers = state.make_optimizers(train)
  assert set(optimizers) == set(betas)
  for name, (b1, b2) in betas.items():
    expected = _adam_by_hand(GRADIENTS, lambda t: 1e-2, b1, b2, 1e-4)
    np.testing.assert_allclose(_run_optimizer(optimizers[name], GRADIENTS), expected,
                               rtol=1e-5, err_msg=name)
    for other in betas.values():  # and not with another network's betas
      if other != (b1, b2):
        assert not np.allclose(_adam_by_hand(GRADIENTS, lambda t: 1e-2, *other, 1e-4),
                               expected, rtol=1e-3)
  assert not np.allclose(_adam_by_hand(GRADIENTS, lambda t: 1e-2, 0.5, 0.999, 1e-8),
                         _adam_by_hand(GRADIENTS, lambda t: 1e-2, 0.5, 0.999, 1e-4), rtol=1e-3)


def test_cyclegan_adam_uses_its_betas_rate_and_decay():
  """cyclegan.betas, learning_rate, decay_from, num_steps (and train.adam_eps): both CycleGAN
  optimisers equal Adam by hand with the linear decay from decay_from * num_steps."""
  config = test_config.get_config()
  cg = config.cyclegan
  cg.betas, cg.learning_rate, cg.decay_from, cg.num_steps = (0.3, 0.9), 1e-2, 0.6, 5
  config.train.adam_eps = 1e-4

  def rate(step):  # constant to step 3 (= int(0.6 * 5)), then linear to 0 at step 5
    return 1e-2 * min(max(1.0 - (step - 3) / 2, 0.0), 1.0)

  expected = _adam_by_hand(GRADIENTS, rate, 0.3, 0.9, 1e-4)
  for name, optimizer in cyclegan.make_optimizers(config).items():
    np.testing.assert_allclose(_run_optimizer(optimizer, GRADIENTS), expected, rtol=1e-5,
                               err_msg=name)


# ---------------------------------------------------------------------------- the losses


def _batch(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {
      "source_image": rng.uniform(-1, 1, (1, HEIGHT, WIDTH, 3)).astype(np.float32),
      "source_label": rng.integers(0, 10, (1, HEIGHT, WIDTH)).astype(np.int32),
      "source_depth": rng.uniform(0, 1, (1, HEIGHT, WIDTH, 1)).astype(np.float32),
      "source_depth_mask": np.ones((1, HEIGHT, WIDTH, 1), np.float32),
      "target_image": rng.uniform(-1, 1, (1, HEIGHT, WIDTH, 3)).astype(np.float32)}


@pytest.mark.parametrize("gan_loss", ["bce", "lsgan"])
def test_losses_follow_the_weights_and_gan_loss(gan_loss):
  """train.lambda_depth, lambda_input, lambda_output, gan_loss in the real step's losses: L_G
  is the weighted sum with this config's weights (not the paper's), and the adversarial terms
  are the chosen GAN loss of the discriminators' outputs, written out here."""
  config = test_config.get_config()
  train = config.train
  train.lambda_depth, train.lambda_input, train.lambda_output = 0.37, 0.21, 0.013
  train.gan_loss = gan_loss
  variant = variants.from_config(config)
  built = models.build_models(config.model, variant)
  params = jax.jit(functools.partial(state.init_params, built, variant, 10, height=HEIGHT,
                                     width=WIDTH))(jax.random.key(0))
  batch = _batch()
  g_params = {k: params[k] for k in ("generator", "task_net")}
  d_params = {k: params[k] for k in ("d_img", "d_out")}
  kwargs = dict(models=built, objective=train_step.objective_from_config(train, variant))
  _, (outputs, metrics) = jax.jit(functools.partial(train_step.generator_loss, **kwargs))(
      g_params, d_params, batch)

  def loss(logits, real):
    logits = np.asarray(logits, np.float64)
    if gan_loss == "lsgan":
      return np.mean((logits - (1.0 if real else 0.0))**2)
    return np.mean(np.logaddexp(0, -logits if real else logits))

  d_img = jax.jit(lambda x: built.d_img.apply({"params": params["d_img"]}, x))
  assert float(metrics["loss_g_input_adv"]) == pytest.approx(
      loss(d_img(outputs["translated"]), True), rel=1e-5)
  [(name, d_out_params)] = params["d_out"].items()
  target = jnp.concatenate([jax.nn.softmax(outputs["seg_t"], -1), outputs["depth_t"]], -1)
  assert float(metrics["loss_g_output_adv"]) == pytest.approx(
      loss(built.d_out.apply({"params": d_out_params}, target), False), rel=1e-5), name
  assert float(metrics["loss_g"]) == pytest.approx(
      float(metrics["loss_seg"]) + 0.37 * float(metrics["loss_depth"])
      + 0.21 * float(metrics["loss_g_input_adv"]) + 0.013 * float(metrics["loss_g_output_adv"]),
      rel=1e-6)
  _, d_metrics = jax.jit(functools.partial(train_step.discriminator_loss, **kwargs))(
      d_params, outputs, batch)
  assert float(d_metrics["loss_d_img"]) == pytest.approx(
      0.5 * (loss(d_img(batch["target_image"]), True)
             + loss(d_img(outputs["translated"]), False)), rel=1e-5)


# -------------------------------------------------------------------------- network shapes


def _param_shapes(module, *inputs) -> dict:
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))["params"]
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}


def _kernels(shapes: dict) -> list[tuple[int, ...]]:
  return [shape for name, shape in sorted(shapes.items()) if name.endswith("kernel")]


def test_network_sizes_follow_their_fields():
  """model.d_img.{ndf,n_layers}, model.d_out.{kind,ndf,n_layers}, model.generator.{ngf,
  num_blocks}, cyclegan.{ngf,num_blocks,ndf,n_layers}: the built networks have the layers and
  widths these fields give (at width 1, values unlike the defaults and unlike each other)."""
  config = test_config.get_config()
  model = config.model
  model.width = 1.0
  model.d_img.ndf, model.d_img.n_layers = 6, 2
  model.d_out.ndf, model.d_out.n_layers = 5, 1
  model.generator.ngf, model.generator.num_blocks = 4, 3
  image = jnp.zeros((1, HEIGHT, WIDTH, 3))
  built = models.build_models(model, variants.parse("na,ss"))
  # PatchGAN: conv_0 (ndf), n_layers - 1 doubling convs, one more at stride 1, the 1-channel head.
  assert [k[-1] for k in _kernels(_param_shapes(built.d_img, image))] == [6, 12, 24, 1]
  d_out_input = jnp.zeros((1, HEIGHT, WIDTH, 10))
  assert [k[-1] for k in _kernels(_param_shapes(built.d_out, d_out_input))] == [5, 10, 1]
  model.d_out.kind = "fc"  # AdaptSegNet's: 4 stride-2 convs ndf .. 8 ndf, then the head
  fc = models.build_models(model, variants.parse("na,ss")).d_out
  assert sorted(k[-1] for k in _kernels(_param_shapes(fc, d_out_input))) == [1, 5, 10, 20, 40]
  generator = models.build_models(model, variants.parse("gd,na")).generator
  shapes = _param_shapes(generator, image, jnp.zeros((1, HEIGHT, WIDTH), jnp.int32),
                         jnp.zeros((1, HEIGHT, WIDTH, 1)))
  assert shapes["stem/kernel"][-1] == 4
  assert sum(name.endswith("kernel") and "block" in name for name in shapes) == 3 * 2

  cg = config.cyclegan
  cg.ngf, cg.num_blocks, cg.ndf, cg.n_layers = 3, 1, 7, 2
  built_cg = cyclegan.build_models(config)
  shapes = _param_shapes(built_cg.generator, image, None, None)
  assert shapes["stem/kernel"][-1] == 3
  assert sum(name.endswith("kernel") and "block" in name for name in shapes) == 1 * 2
  assert [k[-1] for k in _kernels(_param_shapes(built_cg.discriminator, image))] == [7, 14, 28, 1]
  # cyclegan.residual_output: True starts both generators as the identity, False does not.
  x = jax.random.uniform(jax.random.key(2), (1, HEIGHT, WIDTH, 3), minval=-0.9, maxval=0.9)
  for residual in (True, False):
    cg.residual_output = residual
    generator = cyclegan.build_models(config).generator
    params = generator.init(jax.random.key(0), x, None, None)
    assert np.allclose(generator.apply(params, x, None, None), x, atol=1e-6) == residual


def test_aspp_dilations_reach_every_branch():
  """model.task_net.aspp_dilations: G_task's output with other dilations is another function of
  the same parameters, and each branch's dilation counts (one changed at a time)."""
  model = test_config.get_config().model
  image = jax.random.uniform(jax.random.key(1), (1, 64, 96, 3), minval=-1, maxval=1)

  def output(dilations):
    model.task_net.aspp_dilations = dilations
    net = models.build_models(model, variants.parse("na,na")).task_net
    params = net.init(jax.random.key(0), image)
    logits, depth = net.apply(params, image, upsample_to_input=False)
    return np.concatenate([np.ravel(logits), np.ravel(depth)])

  base = output((1, 2, 3, 4))
  for k in range(4):
    changed = [1, 2, 3, 4]
    changed[k] = 5 - k if k != 2 else 1
    assert not np.allclose(output(tuple(changed)), base), k


# --------------------------------------------------------------------------------- data


def _data_config(data_dir: str, **fields):
  config = test_config.get_config()
  config.data.data_dir = data_dir
  config.data.read_threads, config.data.read_buffer_batches = 1, 2
  for name, value in fields.items():
    setattr(config.data, name, value)
  return config


def _stored_images(data_dir: str, domain: str) -> list[np.ndarray]:
  source, _ = pipeline.open_split(data_dir, f"procedural/{domain}", "train")
  return [pipeline.normalise_image(source[i]["image"]) for i in range(len(source))]


def _window_of(image: np.ndarray, stored: list[np.ndarray]) -> str:
  """"kept" or "flipped" if `image` is a window of a stored image (as is or mirrored)."""
  height, width = image.shape[:2]
  for full in stored:
    for found, candidate in (("kept", full), ("flipped", full[:, ::-1])):
      for top in range(full.shape[0] - height + 1):
        for left in range(full.shape[1] - width + 1):
          if np.array_equal(candidate[top:top + height, left:left + width], image):
            return found
  return "none"


def test_data_mode_flip_batch_and_seed_reach_the_batches(procedural_data_dir):
  """data.mode, data.random_flip, data.height/width, data.global_batch, seed: "random_crop"
  batches are windows of the stored 32x48 images; with random_flip some are mirrored, without
  none; "resize" to the stored size gives the stored images themselves, global_batch of them
  per step, in an order the seed decides."""
  stored = _stored_images(procedural_data_dir, "source")
  seen = {}
  for flip in (True, False):
    config = _data_config(procedural_data_dir, mode="random_crop", random_flip=flip,
                          height=24, width=32)
    iterator = pipeline.train_iterator(config, local_devices=1)
    images = [image for _ in range(4) for image in next(iterator)["source"]["image"][0]]
    assert images[0].shape == (24, 32, 3)
    seen[flip] = [_window_of(image, stored) for image in images]
    assert "none" not in seen[flip]
  assert "flipped" in seen[True] and "kept" in seen[True]
  assert set(seen[False]) == {"kept"}
  orders = {}
  for seed in (0, 0, 1):
    config = _data_config(procedural_data_dir, mode="resize", random_flip=False, global_batch=8)
    config.seed = seed
    batch = next(pipeline.train_iterator(config, local_devices=1))["source"]["image"][0]
    assert batch.shape == (8, HEIGHT, WIDTH, 3)
    order = [next(i for i, s in enumerate(stored) if np.array_equal(image, s))
             for image in batch]
    assert sorted(order) == list(range(8))  # one epoch of the 8 stored images
    assert orders.setdefault(seed, order) == order
  assert orders[0] != orders[1]


def test_reader_threads_and_buffer_change_no_batch(
    procedural_data_dir, monkeypatch):
  """data.read_threads, data.read_buffer_batches: the reader gets them, and the batches are
  the same whatever they are."""
  real, calls = pipeline.train_dataset, []

  def recording(*args, **kwargs):
    calls.append((kwargs["threads"], kwargs["buffer_batches"]))
    return real(*args, **kwargs)

  monkeypatch.setattr(pipeline, "train_dataset", recording)
  batches = []
  for threads, buffer in ((1, 1), (3, 5)):
    config = _data_config(procedural_data_dir, read_threads=threads,
                          read_buffer_batches=buffer)
    iterator = pipeline.train_iterator(config, local_devices=1)
    batches.append([next(iterator)["source"]["image"] for _ in range(3)])
  assert calls == [(1, 1), (1, 1), (3, 5), (3, 5)]  # source and target readers
  for a, b in zip(*batches):
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------- training loop


class _CountingBatches:
  """A host iterator of tiny batches that counts how many were drawn (the grain contract)."""

  def __init__(self):
    self.drawn = 0

  def __next__(self):
    self.drawn += 1
    return {"x": np.full((jax.local_device_count(), 1), self.drawn, np.float32)}

  def get_state(self):
    return {"drawn": self.drawn}

  def set_state(self, value):
    self.drawn = value["drawn"]


def test_training_loop_paces_logs_checkpoints_pictures_prefetch(
    tmp_path, capsys):
  """train.log_every, checkpoint_every, keep_checkpoints, image_every and data.device_prefetch,
  through loop.run_loop with a stand-in step: log lines at multiples of log_every (and the
  last step), checkpoints at multiples of checkpoint_every of which the newest keep_checkpoints
  stay, pictures at multiples of image_every, and the batches drawn ahead of each step."""
  config = test_config.get_config()
  config.train.log_every, config.train.checkpoint_every = 3, 2
  config.train.keep_checkpoints, config.train.image_every = 2, 4
  config.data.device_prefetch = 3
  batches = _CountingBatches()
  drawn_at_step, pictures_at = [], []
  p_step = jax.pmap(lambda s, b: (s.replace(step=s.step + 1), {"loss": jnp.mean(b["x"])}),
                    axis_name="batch")

  def step(replicated, batch):
    drawn_at_step.append(batches.drawn)
    return p_step(replicated, batch)

  def pictures(params, batch):
    pictures_at.append(int(batch["x"][0]))
    return {"x": np.zeros((1, 4, 4, 3), np.uint8)}

  loop = loop_lib.Loop(p_step=step, to_step_batch=lambda b: b, num_steps=8,
                      learning_rate_at=lambda s: 1e-3, pictures=pictures)
  initial = state.GioAdaState(step=jnp.zeros((), jnp.int32),
                              params={n: {"w": jnp.zeros(2)} for n in variants.NETWORKS},
                              opt_states={n: {} for n in variants.NETWORKS})
  final = loop_lib.run_loop(loop, initial, batches, str(tmp_path), config)
  assert int(final.step) == 8
  printed = [line.split("/")[0] for line in capsys.readouterr().out.splitlines()
             if line.startswith("step ")]
  assert printed == ["step 3", "step 6", "step 8"]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == [6, 8]
  assert pictures_at == [4, 8]  # the batch of step n is the n-th drawn
  assert drawn_at_step == [k + 3 for k in range(1, 9)]  # device_prefetch batches ahead


# ------------------------------------------------------------------------------ procedural


def _perturbed(value):
  """Another value of the same kind, far enough from `value` to change what it controls."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 3
  if isinstance(value, float):
    if 0 < value < 1 and value != 0.45:
      return 1.0 if value < 0.5 else 0.0  # probabilities: always or never
    return value * 1.6 + 0.3
  if isinstance(value, tuple):
    return tuple(_perturbed(v) for v in value)
  raise TypeError(value)


# Fields read when the data is prepared, not by the renderer (tests named in INVENTORY).
PREPARE_FIELDS = ("num_train", "num_validation")
PROCEDURAL_FIELDS = [f for f in _leaves(procedural_config_lib.procedural_config())
                     if f not in PREPARE_FIELDS and not f.startswith("target_scene.")]
# The target's own layout: each field follows scene.* until it is set.
TARGET_SCENE_FIELDS = [f for f in _leaves(procedural_config_lib.procedural_config())
                       if f.startswith("target_scene.")]


def _render(config, field: str) -> list[dict]:
  domains = ["target"] if field.startswith("target.") else ["source"]
  if not field.startswith(("source.", "target.")):
    domains = ["source", "target"]
  return [procedural.generate_example(config, domain, "train", index)
          for domain in domains for index in range(4)]


# Where `_perturbed` would change too little: the near clip must reach the road.
PERTURBATIONS = {"camera.near_clip_m": 6.0}


@pytest.mark.parametrize("field", PROCEDURAL_FIELDS)
def test_every_procedural_field_changes_the_scenes(field):
  """data.procedural.*: each field, changed alone, changes the images, labels or depth of a few
  tiny scenes of the domain(s) it belongs to. The source domain's fields are tried on a
  photo-like source (the target's look), where textures and windows exist to be changed."""
  config = procedural_config_lib.procedural_config()
  config.height, config.width = 24, 40
  config.source = config.target.copy_and_resolve_references()
  before = _render(config, field)
  *parents, name = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = PERTURBATIONS.get(field, _perturbed(node[name]))
  after = _render(config, field)
  assert any(not np.array_equal(a[key], b[key]) for a, b in zip(before, after)
             for key in ("image", "label", "depth")), field


def _render_domain(config, domain: str) -> list[dict]:
  return [procedural.generate_example(config, domain, "train", index) for index in range(8)]


@functools.cache
def _tiny_default_scenes() -> dict[str, list[dict]]:
  config = procedural_config_lib.procedural_config()
  config.height, config.width = 24, 40
  return {domain: _render_domain(config, domain) for domain in ("source", "target")}


@pytest.mark.parametrize("field", TARGET_SCENE_FIELDS)
def test_every_target_scene_field_changes_only_the_target(field):
  """data.procedural.target_scene.*: each field, set alone, changes the images, labels or depth
  of a few tiny target scenes and none of the source's (which keeps scene.*). (Eight scenes:
  four may show no truck.)"""
  config = procedural_config_lib.procedural_config()
  config.height, config.width = 24, 40
  name = field.split(".", 1)[1]
  config.target_scene[name] = _perturbed(config.scene[name])
  assert config.scene[name] == procedural_config_lib.procedural_config().scene[name]
  before = _tiny_default_scenes()
  after = {domain: _render_domain(config, domain) for domain in ("source", "target")}
  assert all(np.array_equal(a[key], b[key]) for a, b in zip(before["source"], after["source"])
             for key in ("image", "label", "depth")), field
  assert any(not np.array_equal(a[key], b[key])
             for a, b in zip(before["target"], after["target"])
             for key in ("image", "label", "depth")), field


# ------------------------------------------------------------------------------- inventory

# Every leaf of configs/default.py -> the tests (under tests/) that fail when its branch or
# value is handled wrongly (docs/development.md, "Every config option has a test"). Pure
# performance knobs (marked "knob") have a test that the value reaches what it paces and that
# results do not depend on it.
INVENTORY = {
    "seed": [
        "test_config_branches.py::test_data_mode_flip_batch_and_seed_reach_the_batches",
        "test_pipeline.py::test_train_batches_are_device_shaped_and_seeded",
    ],
    "variant": [
        "test_variants.py::test_every_variant_matches_the_paper",
        "test_train_step.py::test_every_ablation_variant_steps",
        "test_step_parity.py::test_steps_match_pytorch",
    ],
    "data.data_dir": [
        "test_builders.py::test_config_driven_iterators_on_the_procedural_benchmark",
        "test_builders.py::test_unprepared_dataset_says_how_to_prepare_it",
    ],
    "data.source": [
        "test_builders.py::test_vkitti_sky_is_the_far_end_of_the_depth_range",
        "test_builders.py::test_procedural_sky_is_the_far_end_of_the_depth_range",
        "test_builders.py::test_config_driven_iterators_on_the_procedural_benchmark",
    ],
    "data.target": [
        "test_builders.py::test_vkitti_sky_is_the_far_end_of_the_depth_range",
        "test_builders.py::test_procedural_sky_is_the_far_end_of_the_depth_range",
        "test_builders.py::test_config_driven_iterators_on_the_procedural_benchmark",
    ],
    "data.source_data_dir": [
        "test_cyclegan.py::test_cg_run_translates_the_source_and_trains_the_task_net_on_it",
    ],
    "data.target_eval_split": [
        "test_builders.py::test_vkitti_sky_is_the_far_end_of_the_depth_range",
    ],
    "data.height": [
        "test_config_branches.py::test_data_mode_flip_batch_and_seed_reach_the_batches",
        "test_builders.py::test_config_driven_iterators_on_the_procedural_benchmark",
    ],
    "data.width": [
        "test_config_branches.py::test_data_mode_flip_batch_and_seed_reach_the_batches",
        "test_builders.py::test_config_driven_iterators_on_the_procedural_benchmark",
    ],
    "data.mode": [
        "test_config_branches.py::test_data_mode_flip_batch_and_seed_reach_the_batches",
        "test_pipeline.py::test_random_crop_keeps_the_window_aligned",
    ],
    "data.random_flip": [
        "test_config_branches.py::test_data_mode_flip_batch_and_seed_reach_the_batches",
        "test_pipeline.py::test_flip_is_applied_to_image_label_and_depth_together",
    ],
    "data.sky_depth": [
        "test_builders.py::test_vkitti_sky_is_the_far_end_of_the_depth_range",
        "test_builders.py::test_procedural_sky_is_the_far_end_of_the_depth_range",
    ],
    "data.global_batch": [
        "test_config_branches.py::test_data_mode_flip_batch_and_seed_reach_the_batches",
        "test_config_checks.py::test_train_iterator_reads_the_global_batch",
        "test_pipeline.py::test_a_resume_with_another_global_batch_continues_at_the_same_image",
    ],
    "data.device_prefetch": [  # knob
        "test_config_branches.py::test_training_loop_paces_logs_checkpoints_pictures_prefetch",
        "test_pipeline.py::test_device_prefetch_yields_device_batches_with_the_state_after_each",
    ],
    "data.read_threads": [  # knob
        "test_config_branches.py::test_reader_threads_and_buffer_change_no_batch",
    ],
    "data.read_buffer_batches": [  # knob
        "test_config_branches.py::test_reader_threads_and_buffer_change_no_batch",
    ],
    "data.procedural.num_train": [
        "test_builders.py::test_procedural_domains_prepare_and_match_the_renderer",
    ],
    "data.procedural.num_validation": [
        "test_builders.py::test_config_driven_iterators_on_the_procedural_benchmark",
    ],
    # The renderer"s fields: the parametrized test changes each one alone.
    **{f"data.procedural.{field}": ["test_config_branches.py::"
                                    "test_every_procedural_field_changes_the_scenes"]
       for field in PROCEDURAL_FIELDS},
    **{f"data.procedural.{field}": ["test_config_branches.py::"
                                    "test_every_target_scene_field_changes_only_the_target"]
       for field in TARGET_SCENE_FIELDS},
    "train.lambda_depth": [
        "test_config_branches.py::test_losses_follow_the_weights_and_gan_loss",
        "test_step_parity.py::test_multi_step_parity_fails_for_a_wrong_optimiser_setting_or_loss_weight",
    ],
    "train.lambda_input": [
        "test_config_branches.py::test_losses_follow_the_weights_and_gan_loss",
        "test_train_step.py::test_discriminator_update_does_not_depend_on_generator_side_weights",
    ],
    "train.lambda_output": ["test_config_branches.py::test_losses_follow_the_weights_and_gan_loss"],
    "train.gan_loss": [
        "test_config_branches.py::test_losses_follow_the_weights_and_gan_loss",
        "test_step_parity.py::test_steps_match_pytorch",
        "test_losses.py::test_gan_losses",
    ],
    "train.learning_rate": [
        "test_config_branches.py::test_every_network_adam_uses_its_own_betas_eps_and_rate",
        "test_train_step.py::test_every_optimizer_follows_the_learning_rate_schedule",
    ],
    "train.lr_schedule": [
        "test_train_step.py::test_every_optimizer_follows_the_learning_rate_schedule",
    ],
    "train.poly_power": [
        "test_train_step.py::test_every_optimizer_follows_the_learning_rate_schedule",
    ],
    "train.num_epochs": [
        "test_config_checks.py::test_vkitti_training_length_is_10_epochs_of_the_prepared_split",
        "test_config_checks.py::test_training_steps_rounds_the_last_batch_up",
        "test_config_checks.py::test_training_length_must_be_given_once",
    ],
    "train.num_steps": [
        "test_config_checks.py::test_vkitti_training_length_is_10_epochs_of_the_prepared_split",
        "test_config_checks.py::test_training_steps_rounds_the_last_batch_up",
        "test_config_checks.py::test_training_length_must_be_given_once",
        "test_train_step.py::test_every_optimizer_follows_the_learning_rate_schedule",
    ],
    "train.generator_betas": [
        "test_config_branches.py::test_every_network_adam_uses_its_own_betas_eps_and_rate",
    ],
    "train.task_net_betas": [
        "test_config_branches.py::test_every_network_adam_uses_its_own_betas_eps_and_rate",
    ],
    "train.d_img_betas": [
        "test_config_branches.py::test_every_network_adam_uses_its_own_betas_eps_and_rate",
    ],
    "train.d_out_betas": [
        "test_config_branches.py::test_every_network_adam_uses_its_own_betas_eps_and_rate",
    ],
    "train.adam_eps": [
        "test_config_branches.py::test_every_network_adam_uses_its_own_betas_eps_and_rate",
        "test_config_branches.py::test_cyclegan_adam_uses_its_betas_rate_and_decay",
    ],
    "train.log_every": [
        "test_config_branches.py::test_training_loop_paces_logs_checkpoints_pictures_prefetch",
    ],
    "train.checkpoint_every": [
        "test_config_branches.py::test_training_loop_paces_logs_checkpoints_pictures_prefetch",
        "test_trainer.py::test_train_py_runs_end_to_end_and_writes_checkpoints",
    ],
    "train.keep_checkpoints": [
        "test_config_branches.py::test_training_loop_paces_logs_checkpoints_pictures_prefetch",
    ],
    "train.image_every": [
        "test_config_branches.py::test_training_loop_paces_logs_checkpoints_pictures_prefetch",
    ],
    "train.parallelism": [
        "test_mesh.py::test_the_config_shapes_the_mesh",
        "test_mesh.py::test_checkpoints_move_between_pmap_and_mesh_runs",
        "test_mesh.py::test_static_checks_name_a_bad_parallelism_and_a_zero_data_axis",
    ],
    "train.mesh_data": [
        "test_mesh.py::test_the_config_shapes_the_mesh",
        "test_mesh.py::test_a_mesh_that_cannot_be_built_is_refused_naming_the_field",
    ],
    "train.mesh_spatial": [
        "test_mesh.py::test_the_config_shapes_the_mesh",
        "test_mesh.py::test_a_mesh_that_cannot_be_built_is_refused_naming_the_field",
        "test_mesh.py::test_a_height_or_batch_the_mesh_does_not_split_is_refused",
    ],
    "cyclegan.num_steps": [
        "test_config_branches.py::test_cyclegan_adam_uses_its_betas_rate_and_decay",
        "test_cyclegan.py::test_learning_rate_is_constant_then_linear_to_zero",
    ],
    "cyclegan.decay_from": [
        "test_config_branches.py::test_cyclegan_adam_uses_its_betas_rate_and_decay",
        "test_cyclegan.py::test_learning_rate_is_constant_then_linear_to_zero",
    ],
    "cyclegan.learning_rate": [
        "test_config_branches.py::test_cyclegan_adam_uses_its_betas_rate_and_decay",
        "test_cyclegan.py::test_learning_rate_is_constant_then_linear_to_zero",
    ],
    "cyclegan.betas": ["test_config_branches.py::test_cyclegan_adam_uses_its_betas_rate_and_decay"],
    "cyclegan.gan_loss": ["test_cyclegan.py::test_cyclegan_step_matches_pytorch"],
    "cyclegan.lambda_cycle": [
        "test_cyclegan.py::test_cyclegan_step_matches_pytorch",
        "test_cyclegan.py::test_cyclegan_parity_detects_a_changed_weight",
    ],
    "cyclegan.lambda_identity": ["test_cyclegan.py::test_cyclegan_step_matches_pytorch"],
    "cyclegan.pool_size": [
        "test_cyclegan.py::test_cyclegan_step_matches_pytorch",
        "test_cyclegan.py::test_pool_fills_then_swaps_as_upstream_image_pool",
        "test_cyclegan.py::test_pool_of_size_zero_returns_the_translations",
    ],
    "cyclegan.ngf": [
        "test_config_branches.py::test_network_sizes_follow_their_fields",
        "test_cyclegan.py::test_translate_command_loads_an_upstream_pytorch_generator",
    ],
    "cyclegan.num_blocks": [
        "test_config_branches.py::test_network_sizes_follow_their_fields",
        "test_cyclegan.py::test_translate_command_loads_an_upstream_pytorch_generator",
    ],
    "cyclegan.ndf": ["test_config_branches.py::test_network_sizes_follow_their_fields"],
    "cyclegan.n_layers": ["test_config_branches.py::test_network_sizes_follow_their_fields"],
    "cyclegan.residual_output": [
        "test_config_branches.py::test_network_sizes_follow_their_fields",
        "test_cyclegan.py::test_translate_command_loads_an_upstream_pytorch_generator",
    ],
    "cyclegan.translate_batch": [  # knob: validated; translations checked image by image
        "test_config_checks.py::test_each_bad_setting_is_named_before_anything_runs",
        "test_cyclegan.py::test_translated_images_are_the_final_generator_applied_to_the_source",
    ],
    "eval.per_device_batch": [  # knob: the depth test evaluates 2 per device too
        "test_evaluate.py::test_depth_metrics_equal_numpy_on_another_depth_range",
        "test_metrics.py::test_several_devices_give_what_one_device_gives",
    ],
    "eval.every_steps": [
        "test_eval_in_loop.py::test_in_loop_reports_equal_evaluate_py_of_the_checkpoints",
        "test_eval_in_loop.py::test_a_preempted_then_resumed_run_evaluates_each_later_step_once",
        "test_eval_in_loop.py::test_nothing_is_evaluated_in_training_by_default",
        "test_eval_in_loop.py::test_every_steps_past_the_end_evaluates_the_last_step_only",
        "test_eval_in_loop.py::test_a_bad_every_steps_is_named_before_anything_runs",
    ],
    "eval.at_label_resolution": [
        "test_evaluate.py::test_depth_metrics_equal_numpy_on_another_depth_range",
        "test_evaluate.py::test_all_steps_writes_a_report_per_checkpoint_and_the_curve",
    ],
    "eval.depth_min_m": [
        "test_evaluate.py::test_depth_metrics_equal_numpy_on_another_depth_range",
    ],
    "eval.depth_max_m": [
        "test_evaluate.py::test_depth_metrics_equal_numpy_on_another_depth_range",
        "test_metrics.py::test_the_depth_cap_drops_farther_ground_truth_and_clips_predictions",
    ],
    "model.num_classes": ["test_parity.py::test_adaptsegnet_deeplab_vgg_in_its_own_setting"],
    "model.dtype": [
        "test_models.py::test_bf16_compute_stays_close_to_float32",
        "test_train_step.py::test_mixed_precision_step_keeps_float32_params_and_losses",
    ],
    "model.param_dtype": ["test_models.py::test_bf16_params"],
    "model.width": ["test_models.py::test_width_multiplier_shrinks_every_network"],
    "model.generator.ngf": ["test_config_branches.py::test_network_sizes_follow_their_fields"],
    "model.generator.num_blocks": [
        "test_config_branches.py::test_network_sizes_follow_their_fields",
        "test_parity.py::test_generator_input_variants",
    ],
    "model.generator.residual_output": [
        "test_models.py::test_residual_generator_starts_as_the_identity_and_can_learn",
    ],
    "model.generator.upsampling": [
        "test_models.py::test_transposed_conv_forms_equal_flax_conv_transpose",
        "test_models.py::test_generator_upsampling_setting_picks_the_form",
    ],
    "model.task_net.input_norm": [
        "test_parity.py::test_task_net_variants",
        "test_layers.py::test_caffe_normalisation_is_bgr_0_255_minus_mean",
        "test_layers.py::test_torchvision_normalisation_is_imagenet_mean_std",
    ],
    "model.task_net.encoder_init": [
        "test_config_checks.py::test_paper_config_refuses_to_start_without_the_vgg16_weights",
        "test_config_checks.py::test_vgg16_path_resolution",
        "test_train_step.py::test_pretrained_vgg16_initialises_the_encoder",
    ],
    "model.task_net.vgg16_weights": [
        "test_config_checks.py::test_paper_config_refuses_to_start_without_the_vgg16_weights",
        "test_config_checks.py::test_vgg16_path_resolution",
        "test_train_step.py::test_pretrained_vgg16_initialises_the_encoder",
    ],
    "model.task_net.aspp_dilations": [
        "test_config_branches.py::test_aspp_dilations_reach_every_branch",
    ],
    "model.task_net.aspp_summed_branches": [
        "test_models.py::test_adaptsegnet_two_branch_aspp_ignores_the_last_two_branches",
        "test_parity.py::test_task_net_variants",
    ],
    "model.d_img.ndf": ["test_config_branches.py::test_network_sizes_follow_their_fields"],
    "model.d_img.n_layers": ["test_config_branches.py::test_network_sizes_follow_their_fields"],
    "model.d_out.kind": [
        "test_config_branches.py::test_network_sizes_follow_their_fields",
        "test_step_parity.py::test_steps_match_pytorch",
    ],
    "model.d_out.ndf": ["test_config_branches.py::test_network_sizes_follow_their_fields"],
    "model.d_out.n_layers": ["test_config_branches.py::test_network_sizes_follow_their_fields"],
}


def _test_functions(path: pathlib.Path) -> set[str]:
  """Names of the module-level test functions of a test file (parsed, not imported)."""
  tree = ast.parse(path.read_text())
  return {node.name for node in tree.body
          if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_config_option_has_a_test_named_in_the_inventory():
  """A new option in configs/default.py fails here until its test is named in INVENTORY (and
  docs/development.md says how to show that test fails with the branch wrong)."""
  leaves = set(_leaves(default_config.get_config()))
  assert sorted(leaves - set(INVENTORY)) == [], "options without a test in INVENTORY"
  assert sorted(set(INVENTORY) - leaves) == [], "INVENTORY names options that do not exist"
  assert all(INVENTORY.values())


def test_every_test_the_inventory_names_exists():
  root = pathlib.Path(__file__).resolve().parent.parent
  missing = []
  for node_id in sorted({n for names in INVENTORY.values() for n in names}):
    path, name = node_id.split("::")
    path = root / "tests" / path
    if not path.is_file() or name not in _test_functions(path):
      missing.append(node_id)
  assert missing == [], "INVENTORY names tests that do not exist"
