"""The translation of a source set (cyclegan/translate.py): a translated copy is keyed on its
generator's content, and its refusals inside train.py's 'cg' stage name what train.py can change."""

import json
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from configs import test as test_config
from gio_ada_jax import images, workdir as workdir_lib
from gio_ada_jax.cyclegan import model as cyclegan, stage, translate
from gio_ada_jax.data import pipeline
from gio_ada_jax.train import checkpoint, run_config
from tests.conftest import tiny_training_config


# ------------------------------------------------------------------ translate: by content


def _save_torch_generator(config, path, seed: int) -> None:
  torch = pytest.importorskip("torch")
  from gio_ada_jax.interop import torch_ref  # pylint: disable=g-import-not-at-top  (imports torch)
  torch.manual_seed(seed)
  generator = torch_ref.init_cyclegan_weights(torch_ref.ResnetGenerator(
      3, 3, config.cyclegan.ngf, config.cyclegan.num_blocks, width=config.model.width))
  torch.save(generator.state_dict(), path)


def _translated_images(data_dir, config) -> np.ndarray:
  source, _ = pipeline.open_split(data_dir, config.data.source, "validation")
  return np.stack([source[i]["image"] for i in range(len(source))])


def _set_stored_provenance(data_dir, config, record: dict) -> None:
  """Rewrite the generator record of a translated copy."""
  info_file = pipeline.dataset_dir(data_dir, config.data.source) / "metadata.json"
  metadata = json.loads(info_file.read_text())
  metadata[pipeline.METADATA_TRANSLATED_BY] = record
  info_file.write_text(json.dumps(metadata))


def _stored_provenance(data_dir, config) -> dict:
  return translate.stored_provenance(pipeline.dataset_dir(data_dir, config.data.source))


@pytest.fixture
def cg_config(procedural_data_dir):
  pytest.importorskip("tensorflow_datasets")
  config = test_config.get_config("cg,na")
  config.data.data_dir = procedural_data_dir
  return config


def test_a_changed_generator_file_at_the_same_path_is_not_reused(cg_config, tmp_path):
  """The copy records the .pth's sha256; the same path with other weights is a
  different generator (refused without --overwrite), as is a copy recorded without a digest."""
  config, pth, output = cg_config, tmp_path / "latest_net_G_A.pth", str(tmp_path / "out")
  _save_torch_generator(config, pth, seed=0)
  params, first = translate.generator_from_torch(config, str(pth))
  translate.translate_source(config, params, output, first)
  before = _translated_images(output, config)
  translate.translate_source(config, params, output, first)  # the same content: kept

  _save_torch_generator(config, pth, seed=1)
  params, second = translate.generator_from_torch(config, str(pth))
  assert second["torch_generator"] == first["torch_generator"] == str(pth)
  assert second[translate.DIGEST] != first[translate.DIGEST]
  with pytest.raises(translate.OutputFolderTaken, match=re.escape(
      f"holds a translation by the PyTorch generator {pth} (sha256 {first['generator_sha256'][:12]}"
      f"), not by the PyTorch generator {pth} (sha256 {second['generator_sha256'][:12]}).")
  ) as refused:
    translate.translate_source(config, params, output, second)
  assert refused.value.replaceable  # translate's command line adds: pass --overwrite
  np.testing.assert_array_equal(_translated_images(output, config), before)
  translate.translate_source(config, params, output, second, overwrite=True)
  assert _stored_provenance(output, config) == second
  assert np.any(_translated_images(output, config) != before)

  # A copy recorded by path only (no digest): by an unknown generator.
  _set_stored_provenance(output, config, {"torch_generator": str(pth)})
  with pytest.raises(translate.OutputFolderTaken, match=re.escape(
      f"holds a translation by the PyTorch generator {pth} (no digest recorded), not by")
  ) as refused:
    translate.translate_source(config, params, output, second)
  assert refused.value.replaceable
  translate.translate_source(config, params, output, second, overwrite=True)
  assert _stored_provenance(output, config) == second


def _save_cyclegan_checkpoint(config, directory, seed: int):
  """A CycleGAN workdir whose final checkpoint holds freshly initialised networks from `seed`
  (as if trained to the end); its g_st."""
  state = cyclegan.create_state(cyclegan.build_models(config), config, jax.random.key(seed),
                                config.data.height, config.data.width)
  step = config.cyclegan.num_steps
  state = state.replace(step=jax.numpy.asarray(step, jax.numpy.int32))
  checkpoints = workdir_lib.checkpoints(directory)
  shutil.rmtree(os.path.join(checkpoints, str(step)), ignore_errors=True)
  checkpointer = checkpoint.Checkpointer(checkpoints, None)
  checkpointer.save(step, state, {})
  checkpointer.wait()
  checkpointer.close()
  run_config.record(config, directory, {}, step)  # as a run records its config
  return jax.device_get(state.params["g_st"])


def test_a_cyclegan_retrained_to_the_same_step_translates_again(cg_config, tmp_path):
  """The 'cg' stage reuses its copy only for the same g_st parameters; a copy
  recorded without a digest (by an unknown generator) is translated again."""
  config, workdir = cg_config, str(tmp_path / "work")
  output = translate.translated_data_dir(workdir)
  info_file = pipeline.dataset_dir(output, config.data.source) / "dataset_info.json"
  first = _save_cyclegan_checkpoint(config, translate.cyclegan_workdir(workdir), seed=0)
  assert stage.with_cyclegan_source(config, workdir).data.source_data_dir == output
  recorded = _stored_provenance(output, config)
  assert recorded[translate.DIGEST] == translate.params_sha256(first)
  assert recorded["step"] == config.cyclegan.num_steps
  written = info_file.stat().st_mtime_ns
  stage.with_cyclegan_source(config, workdir)
  assert info_file.stat().st_mtime_ns == written

  second = _save_cyclegan_checkpoint(config, translate.cyclegan_workdir(workdir), seed=1)
  stage.with_cyclegan_source(config, workdir)
  assert _stored_provenance(output, config)[translate.DIGEST] == translate.params_sha256(second)
  assert translate.params_sha256(second) != translate.params_sha256(first)
  expected = images.image_to_uint8(np.asarray(cyclegan.apply_generator(
      cyclegan.build_models(config).generator, second,
      pipeline.normalise_image(_translated_images(config.data.data_dir, config)))))
  got = _translated_images(output, config)
  assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # batch-size rounding

  _set_stored_provenance(output, config, {"cyclegan_checkpoint": translate.cyclegan_workdir(
      workdir), "step": config.cyclegan.num_steps})
  stage.with_cyclegan_source(config, workdir)
  assert _stored_provenance(output, config)[translate.DIGEST] == translate.params_sha256(second)


def test_params_digest_is_independent_of_key_order_and_sees_every_value():
  params = {"b": np.zeros((2, 3), np.float32), "a": {"k": np.arange(4, dtype=np.float32)}}
  reordered = {"a": {"k": np.arange(4, dtype=np.float32)}, "b": np.zeros((2, 3), np.float32)}
  assert translate.params_sha256(params) == translate.params_sha256(reordered)
  changed = {"a": {"k": np.arange(4, dtype=np.float32)}, "b": np.zeros((2, 3), np.float32)}
  changed["b"][1, 2] = 1e-7
  assert translate.params_sha256(changed) != translate.params_sha256(params)
  assert translate.params_sha256(params) != translate.params_sha256(
      {"b": np.zeros((3, 2), np.float32), "a": {"k": np.arange(4, dtype=np.float32)}})


def test_a_cg_runs_taken_translation_folder_names_what_train_py_can_change(
    procedural_data_dir, tmp_path):
  """translate_source's refusals, raised inside train.py's 'cg' stage, name no translate flag
  (--output_dir, --overwrite) but the config field or workdir that decides the folder."""
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import stage  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "work"
  output_dir = translate.translated_data_dir(str(workdir))
  config = tiny_training_config(procedural_data_dir, 1)
  config.data.source_data_dir = output_dir  # the translated copy of an earlier 'cg' run
  shutil.copytree(procedural_data_dir, output_dir)
  provenance = translate.checkpoint_provenance(translate.cyclegan_workdir(str(workdir)), 4,
                                               {"kernel": np.zeros(2)}, False)
  with pytest.raises(translate.TranslationError) as info:
    stage._translate_for_cg(  # pylint: disable=protected-access
        config, None, output_dir, provenance)
  assert str(info.value) == (
      f"{output_dir} is the data root of the source itself: the translated copy of "
      f"procedural/source would take the place of the prepared one; it needs a folder of its "
      f"own, e.g. {output_dir}/translated. A 'cg' run writes its translated source into "
      f"{output_dir}; data.source_data_dir names that folder: unset it (a 'cg' run translates "
      "data.source itself).")
  config.data.source_data_dir = ""
  shutil.rmtree(pathlib.Path(output_dir) / "procedural")
  (pathlib.Path(output_dir) / "kitti_semantics").mkdir()
  with pytest.raises(translate.TranslationError) as info:
    stage._translate_for_cg(  # pylint: disable=protected-access
        config, None, output_dir, provenance)
  assert str(info.value) == (
      f"{output_dir} holds other data (kitti_semantics); translated copies go into a folder of "
      f"their own. A 'cg' run writes its translated source into {output_dir}; move what is "
      "there elsewhere, or train in another --workdir.")


def test_an_output_dir_that_is_a_file_is_refused_before_the_generator_loads(tmp_path):
  from tests.conftest import run_side_by_side  # pylint: disable=g-import-not-at-top
  a_file = tmp_path / "notes.txt"
  a_file.write_text("mine")
  status, out, err = run_side_by_side({"translate": [
      "-m", "gio_ada_jax.cyclegan.translate", "--config", "configs/test.py:cg,na",
      "--torch_generator", str(tmp_path / "absent.pth"), "--output_dir", str(a_file)]}
                                      )["translate"]
  assert (status, err) == (2, f"translate: --output_dir {a_file} is a file, not a folder; give "
                              "a folder (a new one is created).\n"), err[-2000:]
  assert a_file.read_text() == "mine" and not out
