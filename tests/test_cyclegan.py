"""The 'cg' baseline: the CycleGAN step (pool, schedule, pmap, PyTorch parity), its training
with exact resume, the translated source dataset and the translate command."""

import functools
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from gio_ada_jax import config_checks
from gio_ada_jax.cyclegan import model as cyclegan
from gio_ada_jax.interop import parity
from gio_ada_jax.train import checkpoint

HEIGHT, WIDTH = 32, 48


def _step(config, built, axis_name=None):
  return functools.partial(cyclegan.train_step, models=built,
                           optimizers=cyclegan.make_optimizers(config),
                           cyclegan_config=config.cyclegan, axis_name=axis_name)


def test_pool_fills_then_swaps_as_upstream_image_pool():
  """The JAX pool against torch_ref's transcription of upstream's ImagePool, same draws."""
  torch = pytest.importorskip("torch")
  from gio_ada_jax.interop.torch_ref.cyclegan_step import (  # pylint: disable=g-import-not-at-top
      ImagePool)
  size, batches, per_batch = 3, 5, 2
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (batches, per_batch, 2, 2, 3)).astype(np.float32)
  uniforms = rng.uniform(size=(batches, per_batch)).astype(np.float32)
  indices = rng.integers(0, size, (batches, per_batch)).astype(np.int32)
  # Upstream draws only once the pool is full: from the (size + 1)-th image on.
  draws = iter(list(zip(uniforms.ravel().tolist(), indices.ravel().tolist()))[size:])
  reference = ImagePool(size, lambda: next(draws))
  pool = cyclegan.empty_pool(size, 2, 2)
  swapped = 0
  for b in range(batches):
    pool, returned = jax.jit(cyclegan.query_pool)(pool, images[b], uniforms[b], indices[b])
    expected = reference.query(torch.from_numpy(images[b].transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(np.asarray(returned), expected.numpy().transpose(0, 2, 3, 1))
    swapped += int(np.any(np.asarray(returned) != images[b]))
  stored = np.concatenate([p.numpy() for p in reference.images]).transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(np.asarray(pool.images), stored)
  assert int(pool.count) == size
  assert swapped > 0  # the test reaches the full-pool branch


def test_pool_of_size_zero_returns_the_translations():
  pool = cyclegan.empty_pool(0, 2, 2)
  images = jnp.ones((2, 2, 2, 3))
  _, returned = cyclegan.query_pool(pool, images, jnp.zeros(2), jnp.zeros(2, jnp.int32))
  np.testing.assert_array_equal(returned, images)


def test_learning_rate_is_constant_then_linear_to_zero():
  config = test_config.get_config().cyclegan
  config.num_steps, config.decay_from, config.learning_rate = 100, 0.5, 2e-4
  rates = [cyclegan.learning_rate_at(config, s) for s in (0, 50, 75, 99, 100)]
  np.testing.assert_allclose(rates, [2e-4, 2e-4, 1e-4, 4e-6, 0.0], rtol=1e-5, atol=1e-12)


ROWS = {"defaults": (0.5, 3, "lsgan"),  # upstream's defaults (narrow networks)
        "no-identity-no-pool-bce": (0.0, 0, "bce")}  # no identity loss, no pool, vanilla GAN


def _row_runs(row: str) -> dict[str, parity.JaxSteps]:
  """What `parity --cyclegan_step --num_steps 4` runs in JAX for `row`: one float32 step, then
  4 float64 steps from the same weights (the test config's whole schedule: constant, then
  halved at the 4th; a pool of 3 fills, then swaps)."""
  config = test_config.get_config()
  cg = config.cyclegan
  cg.lambda_identity, cg.pool_size, cg.gan_loss = ROWS[row]
  return parity.step_runs(config, HEIGHT, WIDTH, num_steps=4, steps=parity.cyclegan_jax_steps)


@pytest.fixture(scope="module")
def default_runs():
  pytest.importorskip("torch")
  return _row_runs("defaults")


@pytest.mark.parametrize("row", list(ROWS))
def test_cyclegan_step_matches_pytorch(row, request):
  """`parity --cyclegan_step`: the float32 step's losses and pools, then every loss of every
  float64 step and, after the 4th, the four networks, their Adam moments and the pools, with
  PyTorch's pools taking JAX's draws (parity.decided_checks' tolerances), and the step
  counts."""
  pytest.importorskip("torch")
  runs = request.getfixturevalue("default_runs") if row == "defaults" else _row_runs(row)
  report = parity.step_report({dtype: parity.compare_cyclegan_steps(run)
                               for dtype, run in runs.items()})
  float32, float64 = report.errors["float32"], report.errors["float64"]
  assert set(float32.loss_relative) >= {"loss_g", "loss_d_s", "loss_d_t", "loss_cycle_s"}
  assert len(float64.loss_relative_per_step) == 4
  assert set(float64.param_in_updates) == set(cyclegan.NETWORKS)
  assert set(float64.pool_relative) == ({"pool_s", "pool_t"} if ROWS[row][1] else set())
  assert {k.split("/")[0] for k in float64.moment_relative} == set(cyclegan.NETWORKS)
  assert report.passed, [(c.precision, c.name, c.error) for c in report.failures()] + (
      report.count_errors)
  assert jnp.zeros(()).dtype == jnp.float32  # x64 mode did not leak out of the check


def test_cyclegan_parity_detects_a_changed_weight(default_runs, monkeypatch):
  """Not vacuous: a cycle weight of 5 in the PyTorch reference against the config's 10 shows
  up in the float32 losses and in the float64 generators."""
  real = parity.torch_cyclegan_step

  def torch_step_with_half_the_cycle_weight(cfg, params, *args, **kwargs):
    cfg = cfg.copy_and_resolve_references()
    cfg.cyclegan.lambda_cycle = 5.0
    return real(cfg, params, *args, **kwargs)

  monkeypatch.setattr(parity, "torch_cyclegan_step", torch_step_with_half_the_cycle_weight)
  report = parity.step_report({dtype: parity.compare_cyclegan_steps(run)
                               for dtype, run in default_runs.items()})
  assert default_runs["float32"].config.cyclegan.lambda_cycle == 10.0
  assert not report.passed
  assert report.errors["float32"].loss_relative["loss_g"] > 1e-2
  assert report.errors["float64"].param_in_updates["g_st"] > 1e3 * parity.float64_param_tolerance(
      default_runs["float64"].config.train.adam_eps)


def test_pmap_with_one_pool_over_devices_equals_one_device_with_the_whole_batch():
  """4 devices x 1 image: the pool gathers every device's translations, so the state equals
  one device stepping on all 4 images (pool contents and order included). Adam's eps is 1e-3,
  as in the GIO-Ada step's pmap test (tests/test_train_step.py)."""
  config = test_config.get_config()
  config.train.adam_eps = 1e-3
  built = cyclegan.build_models(config)
  state = cyclegan.create_state(built, config, jax.random.key(0), HEIGHT, WIDTH)
  devices = jax.local_device_count()
  batch = parity.cyclegan_batch(HEIGHT, WIDTH, seed=3, batch_size=devices)
  single = state
  multi = jax.tree.map(lambda x: jnp.stack([x] * devices), state)
  p_step = cyclegan.make_p_train_step(built, cyclegan.make_optimizers(config), config.cyclegan)
  sharded = {k: v.reshape((devices, 1) + v.shape[1:]) for k, v in batch.items()}
  single_step = jax.jit(_step(config, built))
  for _ in range(2):  # the second step queries a full pool (size 3 < 4 images)
    single, _ = single_step(single, batch)
    multi, metrics = p_step(multi, sharded)
  assert metrics["loss_g"].shape == (devices,)
  for a, b in zip(jax.tree.leaves(single.pools), jax.tree.leaves(multi.pools)):
    np.testing.assert_allclose(np.asarray(b)[0], a, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(b)[0], np.asarray(b)[-1])  # still replicated
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(multi.params)):
    np.testing.assert_allclose(np.asarray(b)[0], a, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- training and translating


@pytest.fixture(scope="module")
def cg_run(procedural_data_dir, tmp_path_factory):
  """(config, workdir, final state) of a whole 'cg,na' run: CycleGAN 4 steps, translation,
  task net 6 steps."""
  pytest.importorskip("tensorflow_datasets")
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  config = test_config.get_config("cg,na")
  config.data.data_dir = procedural_data_dir
  workdir = str(tmp_path_factory.mktemp("cg_run"))
  state = trainer.train_and_evaluate(config, workdir)
  return config, workdir, state


def _examples(data_dir, name, split):
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  source, info = pipeline.open_split(data_dir, name, split)
  return [source[i] for i in range(len(source))], info


def test_cg_run_translates_the_source_and_trains_the_task_net_on_it(cg_run):
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config, workdir, state = cg_run
  assert int(state.step) == config.train.num_steps
  assert os.path.exists(os.path.join(workdir_lib.export(workdir), workdir_lib.EXPORTED_PARAMS))
  cyclegan_checkpoints = checkpoint.Checkpointer(
      workdir_lib.checkpoints(translate.cyclegan_workdir(workdir)), None)
  assert cyclegan_checkpoints.latest_step() == config.cyclegan.num_steps
  cyclegan_checkpoints.close()
  translated_dir = translate.translated_data_dir(workdir)
  for split in ("train", "validation"):
    originals, info = _examples(config.data.data_dir, config.data.source, split)
    translated, translated_info = _examples(translated_dir, config.data.source, split)
    assert [e["id"] for e in translated] == [e["id"] for e in originals]
    for t, o in zip(translated, originals):
      np.testing.assert_array_equal(t["label"], o["label"])
      np.testing.assert_array_equal(t["depth"], o["depth"])
      assert t["image"].shape == o["image"].shape
    assert any(np.any(t["image"] != o["image"]) for t, o in zip(translated, originals))
  for sky_depth in config_checks.SKY_DEPTH_MODES:
    assert (pipeline.depth_scale_cm(translated_info, sky_depth)
            == pipeline.depth_scale_cm(info, sky_depth))
  provenance = translated_info.metadata[pipeline.METADATA_TRANSLATED_BY]
  assert provenance["step"] == config.cyclegan.num_steps


def test_translated_images_are_the_final_generator_applied_to_the_source(cg_run):
  from gio_ada_jax import images  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config, workdir, _ = cg_run
  params, _ = translate.generator_from_checkpoint(config, translate.cyclegan_workdir(workdir))
  originals, _ = _examples(config.data.data_dir, config.data.source, "validation")
  translated, _ = _examples(translate.translated_data_dir(workdir), config.data.source,
                            "validation")
  generator = cyclegan.build_models(config).generator
  expected = images.image_to_uint8(np.asarray(cyclegan.apply_generator(
      generator, params, pipeline.normalise_image(np.stack([o["image"] for o in originals])))))
  got = np.stack([t["image"] for t in translated])
  assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # batch-size rounding


def test_rerunning_a_finished_cg_run_retrains_and_rewrites_nothing(cg_run):
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config, workdir, _ = cg_run
  info_file = os.path.join(translate.translated_data_dir(workdir), "procedural", "source",
                           pipeline.VERSION_DIR, "dataset_info.json")
  before = os.stat(info_file).st_mtime_ns
  state = trainer.train_and_evaluate(config, workdir)
  assert int(state.step) == config.train.num_steps
  assert os.stat(info_file).st_mtime_ns == before


def test_cyclegan_training_resumes_exactly(cg_run, tmp_path):
  """Checkpoint 3 of the 4-step CycleGAN, resumed: the same parameters, Adam states and
  pools as the uninterrupted run."""
  from gio_ada_jax.cyclegan import trainer  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  config, workdir, _ = cg_run
  straight_dir = translate.cyclegan_workdir(workdir)
  resumed_dir = tmp_path / "cyclegan"
  shutil.copytree(straight_dir, resumed_dir, ignore=shutil.ignore_patterns("translated"))
  shutil.rmtree(resumed_dir / "checkpoints" / str(config.cyclegan.num_steps))
  resumed = trainer.train_cyclegan(config, str(resumed_dir))
  assert int(resumed.step) == config.cyclegan.num_steps
  checkpoints = checkpoint.Checkpointer(os.path.join(straight_dir, "checkpoints"), None)
  straight, _ = checkpoints.restore(resumed, config.cyclegan.num_steps)
  checkpoints.close()
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(resumed.pools["s"].count) == config.cyclegan.pool_size


def test_translate_command_loads_an_upstream_pytorch_generator(cg_run, tmp_path):
  """A PyTorch CycleGAN G_A state_dict (upstream keys) through convert.py: the translated
  dataset holds what the PyTorch generator itself outputs."""
  torch = pytest.importorskip("torch")
  from gio_ada_jax.interop import torch_ref  # pylint: disable=g-import-not-at-top
  config, _, _ = cg_run
  torch.manual_seed(0)
  generator = torch_ref.init_cyclegan_weights(torch_ref.ResnetGenerator(
      3, 3, config.cyclegan.ngf, config.cyclegan.num_blocks, width=config.model.width))
  generator.eval()
  torch.save(generator.state_dict(), tmp_path / "latest_net_G_A.pth")
  output_dir = tmp_path / "translated"
  command = [sys.executable, "-m", "gio_ada_jax.cyclegan.translate", "--config", "configs/test.py",
             f"--config.data.data_dir={config.data.data_dir}",
             f"--output_dir={output_dir}"]
  result = subprocess.run(command + [f"--torch_generator={tmp_path / 'latest_net_G_A.pth'}"],
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "--config.data.source_data_dir=" in result.stdout
  originals, _ = _examples(config.data.data_dir, config.data.source, "validation")
  translated, _ = _examples(str(output_dir), config.data.source, "validation")
  with torch.no_grad():
    images = np.stack([o["image"] for o in originals]).astype(np.float32) / 127.5 - 1.0
    expected = generator(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  expected = np.clip((expected.transpose(0, 2, 3, 1) + 1.0) * 127.5, 0, 255).round()
  got = np.stack([t["image"] for t in translated]).astype(np.float64)
  assert np.abs(got - expected).max() <= 1

  # The same output folder again, with another generator: refused unless --overwrite.
  again = subprocess.run(command + [f"--cyclegan_workdir={tmp_path / 'missing'}"],
                         capture_output=True, text=True, timeout=600, check=False)
  assert again.returncode == 2 and "no CycleGAN checkpoint" in again.stderr
  neither = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
  assert neither.returncode == 2 and "exactly one of" in neither.stderr
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.cyclegan.residual_output = True  # not an upstream generator
  with pytest.raises(translate.TranslationError, match="residual_output=False"):
    translate.generator_from_torch(config, str(tmp_path / "latest_net_G_A.pth"))


def test_translation_to_an_occupied_folder_names_it_and_how_to_fix(cg_run, tmp_path):
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  config, workdir, _ = cg_run
  params, provenance = translate.generator_from_checkpoint(
      config, translate.cyclegan_workdir(workdir))
  other = dict(provenance, generator_sha256="0" * 64)  # the same path and step, other content
  with pytest.raises(translate.OutputFolderTaken, match="holds a translation by") as info:
    translate.translate_source(config, params, translate.translated_data_dir(workdir), other)
  assert info.value.replaceable  # translate's command line adds: pass --overwrite


def test_translation_never_replaces_data_it_did_not_write(cg_run, tmp_path):
  """Even with --overwrite: not the source's own root, not a folder holding other data, not a
  prepared dataset without a recorded generator."""
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config, workdir, _ = cg_run
  params, provenance = translate.generator_from_checkpoint(
      config, translate.cyclegan_workdir(workdir))
  config = config.copy_and_resolve_references()
  config.data.data_dir = str(tmp_path / "data")  # a copy: the session's data stays untouched
  shutil.copytree(cg_run[0].data.data_dir, config.data.data_dir)
  source = pipeline.dataset_dir(config.data.data_dir, config.data.source)
  with pytest.raises(translate.TranslationError, match="data root of the source itself"):
    translate.translate_source(config, params, config.data.data_dir, provenance, overwrite=True)
  assert (source / "dataset_info.json").exists()

  shared = tmp_path / "shared"
  (shared / "kitti_semantics").mkdir(parents=True)
  with pytest.raises(translate.TranslationError, match=r"holds other data \(kitti_semantics\)"):
    translate.translate_source(config, params, str(shared), provenance, overwrite=True)
  assert (shared / "kitti_semantics").is_dir()

  copy_root = tmp_path / "copy"
  copy = pipeline.dataset_dir(str(copy_root), config.data.source)
  shutil.copytree(source, copy)
  with pytest.raises(translate.TranslationError, match="translate did not write"):
    translate.translate_source(config, params, str(copy_root), provenance, overwrite=True)
  assert (copy / "dataset_info.json").exists()


def test_interrupted_translation_does_not_load_as_prepared(cg_run, tmp_path):
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config, workdir, _ = cg_run
  params, provenance = translate.generator_from_checkpoint(
      config, translate.cyclegan_workdir(workdir))
  real = translate.image_translator
  calls = []

  def failing_translator(cfg, p):
    translate_images = real(cfg, p)

    def maybe_fail(images):
      calls.append(1)
      if len(calls) == 3:
        raise KeyboardInterrupt("interrupted")
      return translate_images(images)
    return maybe_fail

  translate.image_translator = failing_translator
  try:
    with pytest.raises(KeyboardInterrupt):
      translate.translate_source(config, params, str(tmp_path), provenance)
  finally:
    translate.image_translator = real
  with pytest.raises(pipeline.DatasetNotPrepared):
    pipeline.open_split(str(tmp_path), config.data.source, "train")


def test_demo_figure_compares_cyclegan_and_gio_ada_translations(cg_run, trained_run, tmp_path):
  """source | CycleGAN | GIO-Ada | target, from a 'cg' run and a '+sd,joint' run."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from gio_ada_jax import demo  # pylint: disable=g-import-not-at-top
  from gio_ada_jax import images  # pylint: disable=g-import-not-at-top
  config, cg_workdir, _ = cg_run
  _, gio_ada_workdir = trained_run
  path = tmp_path / "figure.png"
  demo.figure4_cyclegan(config, config.data.data_dir,
                        {demo.CYCLEGAN.key: cg_workdir, demo.GIO_ADA.key: gio_ada_workdir},
                        config.seed, str(path))
  figure = np.asarray(Image.open(path))
  gap = images.PANEL_GAP
  assert figure.shape == (images.TITLE_HEIGHT + 4 * HEIGHT + 3 * gap, 4 * WIDTH + 3 * gap, 3)
  figure = figure[images.TITLE_HEIGHT:]  # below the column titles
  tile = lambda row, col: figure[row * (HEIGHT + gap):row * (HEIGHT + gap) + HEIGHT,  # noqa
                                 col * (WIDTH + gap):col * (WIDTH + gap) + WIDTH]
  originals, _ = _examples(config.data.data_dir, config.data.source, "validation")
  np.testing.assert_array_equal(tile(0, 0), originals[0]["image"])  # stored at input size
  assert np.any(tile(0, 1) != tile(0, 2))  # two different translators


def test_sigterm_during_the_cyclegan_stage_checkpoints_it_and_stops(procedural_data_dir,
                                                                     tmp_path):
  """train.py with 'cg': SIGTERM while the CycleGAN trains saves its checkpoint and exits 75
  (errors.PREEMPTED_EXIT_CODE, not finished) before anything is translated or the task net starts (resuming from such a checkpoint:
  test_cyclegan_training_resumes_exactly)."""
  pytest.importorskip("tensorflow_datasets")
  from tests.test_trainer import SUBPROCESS_ENV, _stop_after  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "work"
  process = subprocess.Popen(
      [sys.executable, "train.py", "--config", "configs/test.py:cg,na", "--workdir",
       str(workdir), f"--config.data.data_dir={procedural_data_dir}",
       "--config.cyclegan.num_steps=50"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SUBPROCESS_ENV)
  _stop_after(process, "step 2/50", signal.SIGTERM)
  assert process.returncode == 75
  saved = [int(p.name) for p in (workdir / "cyclegan" / "checkpoints").iterdir()
           if p.name.isdigit()]
  assert len(saved) == 1 and 2 <= saved[0] < 50
  assert not (workdir / "cyclegan" / "translated").exists()
  assert not (workdir / "checkpoints").exists()
