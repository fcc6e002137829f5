"""prepare -> TFDS ArrayRecord -> pipeline, end to end on fake trees in the official formats."""

import pathlib

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from configs import default as default_config  # noqa: E402
from gio_ada_jax import config_checks  # noqa: E402
from gio_ada_jax.data import formats, pipeline, prepare  # noqa: E402
from tests import fake_datasets  # noqa: E402

WRITERS = {
    "vkitti": fake_datasets.write_vkitti_131,
    "kitti_semantics": fake_datasets.write_kitti_semantics,
    "synthia_rand_cityscapes": fake_datasets.write_synthia,
    "cityscapes": fake_datasets.write_cityscapes,
}
# The benchmarks' class counts: GIO-Ada Table 1 (10) and Table 4 (16).
NUM_CLASSES = {"vkitti": 10, "kitti_semantics": 10, "synthia_rand_cityscapes": 16, "cityscapes": 16}


def _prepare(dataset, manual_dir, data_dir):
  return prepare.prepare(dataset, str(data_dir), default_config.get_config(), str(manual_dir))


def _decoded_id(example) -> str:
  value = example["id"]
  return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("dataset", sorted(WRITERS))
def test_prepared_examples_equal_the_raw_files(dataset, tmp_path):
  expected = WRITERS[dataset](tmp_path / "raw")
  _prepare(dataset, tmp_path / "raw", tmp_path / "data")
  depth_max = 0
  for split, examples in expected.items():
    source, info = pipeline.open_split(str(tmp_path / "data"), dataset, split)
    assert len(source) == len(examples)
    for i in range(len(source)):
      got = source[i]
      want = examples[_decoded_id(got)]
      np.testing.assert_array_equal(got["image"], want["image"])
      np.testing.assert_array_equal(got["label"][..., 0], want["label"])
      if "depth" in want:
        np.testing.assert_array_equal(got["depth"], want["depth"])
        depth_max = max(depth_max, int(want["depth"].max()))
      else:
        assert "depth" not in got
    stats = info.metadata["split_stats"][split]
    assert stats["num_examples"] == len(examples)
    num_classes = NUM_CLASSES[dataset]
    want_pixels = np.bincount(np.concatenate(
        [np.minimum(e["label"].ravel(), num_classes) for e in examples.values()]),
        minlength=num_classes + 1)
    np.testing.assert_array_equal(stats["class_pixels"], want_pixels)
  assert pipeline.depth_scale_cm(info, "far") == depth_max


def test_vkitti_203_layout_prepares_too(tmp_path):
  expected = fake_datasets.write_vkitti_203(tmp_path / "raw")
  _prepare("vkitti", tmp_path / "raw", tmp_path / "data")
  source, _ = pipeline.open_split(str(tmp_path / "data"), "vkitti", "train")
  assert sorted(_decoded_id(source[i]) for i in range(len(source))) == sorted(expected["train"])


def test_pipeline_reads_prepared_source_and_target(tmp_path):
  fake_datasets.write_vkitti_131(tmp_path / "vk", frames=3)
  fake_datasets.write_kitti_semantics(tmp_path / "kitti")
  data_dir = str(tmp_path / "data")
  _prepare("vkitti", tmp_path / "vk", data_dir)
  _prepare("kitti_semantics", tmp_path / "kitti", data_dir)
  src, src_info = pipeline.open_split(data_dir, "vkitti", "train")
  tgt, tgt_info = pipeline.open_split(data_dir, "kitti_semantics", "train")
  src_spec = pipeline.Preprocessing(8, 16, depth_max_cm=pipeline.depth_scale_cm(src_info, "far"))
  tgt_spec = pipeline.Preprocessing(8, 16, depth_max_cm=pipeline.depth_scale_cm(tgt_info, "far"))
  batches = pipeline.UnpairedIterator(
      pipeline.train_dataset(src, src_spec, seed=0, per_device_batch=1, local_devices=2,
                             threads=2, buffer_batches=4),
      pipeline.train_dataset(tgt, tgt_spec, seed=1, per_device_batch=1, local_devices=2,
                             threads=2, buffer_batches=4), global_batch=2, process_count=1)
  batch = next(batches)
  assert batch["source"]["image"].shape == batch["target"]["image"].shape == (2, 1, 8, 16, 3)
  assert batch["source"]["depth"].max() <= 1.0 and batch["source"]["depth_mask"].max() == 1.0
  assert batch["target"]["depth_mask"].max() == 0.0  # KITTI has no depth
  assert np.all(batch["target"]["label"] == 255)  # the adaptation split is unlabeled
  evaluation = list(pipeline.eval_batches(
      pipeline.open_split(data_dir, "kitti_semantics", "validation")[0], tgt_spec,
      per_device_batch=1, local_devices=2))
  assert sum(b["valid"].sum() for b in evaluation) == 2


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(pipeline.DatasetNotPrepared, match="gio_ada_jax.data.prepare --dataset"):
    pipeline.open_split(str(tmp_path), "cityscapes", "train")


def test_interrupted_prepare_leaves_nothing_that_loads(tmp_path):
  expected = fake_datasets.write_cityscapes(tmp_path / "raw", frames=3)
  # Truncate one label PNG of the validation split: generation fails part-way.
  victim = sorted((tmp_path / "raw" / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))[-1]
  victim.write_bytes(victim.read_bytes()[:40])
  with pytest.raises(formats.DataError, match=victim.name):
    _prepare("cityscapes", tmp_path / "raw", tmp_path / "data")
  with pytest.raises(pipeline.DatasetNotPrepared):
    pipeline.open_split(str(tmp_path / "data"), "cityscapes", "train")
  # Mended, the same command completes.
  fake_datasets.write_cityscapes(tmp_path / "raw", frames=3)
  _prepare("cityscapes", tmp_path / "raw", tmp_path / "data")
  source, _ = pipeline.open_split(str(tmp_path / "data"), "cityscapes", "validation")
  assert len(source) == len(expected["validation"])


def test_missing_folder_fails_before_writing(tmp_path):
  (tmp_path / "raw").mkdir()
  with pytest.raises(formats.DataError, match="does not exist or is empty"):
    _prepare("cityscapes", tmp_path / "raw", tmp_path / "data")
  (tmp_path / "raw" / "README").write_text("not the download")
  with pytest.raises(formats.DataError, match="leftImg8bit"):
    _prepare("cityscapes", tmp_path / "raw", tmp_path / "data")
  assert not list(pathlib.Path(tmp_path / "data").rglob("*.array_record*"))


def _tiny_procedural_config():
  config = default_config.get_config()
  procedural_config = config.data.procedural
  procedural_config.height, procedural_config.width = 24, 64
  procedural_config.num_train, procedural_config.num_validation = 5, 3
  return config


def test_procedural_domains_prepare_and_match_the_renderer(tmp_path):
  from gio_ada_jax.data import procedural  # pylint: disable=g-import-not-at-top
  config = _tiny_procedural_config()
  built = prepare.prepare("procedural", str(tmp_path), config, num_workers=2)
  assert [b.builder_config.name for b in built] == ["source", "target"]
  for domain in ("source", "target"):
    source, info = pipeline.open_split(str(tmp_path), f"procedural/{domain}", "train")
    assert len(source) == 5
    pipeline.check_procedural_config(info, config.data.procedural)
    example = source[0]
    index = int(_decoded_id(example).rsplit("/", 1)[1])
    want = procedural.generate_example(config.data.procedural, domain, "train", index)
    np.testing.assert_array_equal(example["image"], want["image"])
    np.testing.assert_array_equal(example["label"][..., 0], want["label"])
    np.testing.assert_array_equal(example["depth"], want["depth"])
    assert pipeline.depth_scale_cm(info, "far") == 65535  # every domain shows some sky
  changed = _tiny_procedural_config().data.procedural
  changed.target.noise_std = 0.5
  with pytest.raises(ValueError, match="noise_std|target"):
    pipeline.check_procedural_config(info, changed)


def test_config_driven_iterators_on_the_procedural_benchmark(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  config = _tiny_procedural_config()
  prepare.prepare("procedural", str(tmp_path), config, num_workers=1)
  config.data.data_dir = str(tmp_path)
  config.data.source, config.data.target = "procedural/source", "procedural/target"
  config.data.height, config.data.width = 16, 32
  devices = jax.local_device_count()
  config.data.global_batch = devices
  batch = next(pipeline.train_iterator(config))
  assert batch["source"]["image"].shape == (devices, 1, 16, 32, 3)
  assert batch["target"]["depth_mask"].shape == (devices, 1, 16, 32, 1)
  evaluation = list(pipeline.target_eval_batches(config))
  assert sum(int(b["valid"].sum()) for b in evaluation) == 3  # every validation image once
  config.data.procedural.target.gamma = 3.0  # not what was prepared
  with pytest.raises(ValueError, match="re-run"):
    pipeline.train_iterator(config)


FAR_CM = 65535  # Virtual KITTI's far clip (the sky), from its documentation: "655.35 m".


def _vkitti_with_sky(root: pathlib.Path, frames: int = 2) -> np.ndarray:
  """A Virtual KITTI 1.3.1 tree whose depth maps all hold the same map: the top two rows at the
  far clip (the sky), one invalid pixel, the rest 1..2 m, as stored; that map."""
  fake_datasets.write_vkitti_131(root, frames=frames)
  depth = np.full((12, 20), 150, np.uint16)
  depth[5:] = 200
  depth[:2] = FAR_CM
  depth[6, 7] = 0
  for path in (root / "vkitti_1.3.1_depthgt").rglob("*.png"):
    fake_datasets.save_png(path, depth)
  return depth


def _vkitti_to_kitti_config(data_dir: str, sky_depth: str):
  config = default_config.get_config()
  config.data.data_dir = data_dir
  config.data.source, config.data.target = "vkitti", "kitti_semantics"
  config.data.height, config.data.width = 12, 20  # the stored size: no resampling
  config.data.random_flip = False
  config.data.sky_depth = sky_depth
  config.data.read_threads, config.data.read_buffer_batches = 1, 2
  return config


def test_vkitti_sky_is_the_far_end_of_the_depth_range(tmp_path):
  """The paper: depth normalised to [0, 1] among all images, the sky far away. Virtual KITTI's
  far clip is depth 1 (valid) in training by default; "invalid" keeps data version 1's
  behaviour; evaluation never scores the far clip."""
  stored = _vkitti_with_sky(tmp_path / "vk")
  fake_datasets.write_kitti_semantics(tmp_path / "kitti")
  data_dir = str(tmp_path / "data")
  _prepare("vkitti", tmp_path / "vk", data_dir)
  _prepare("kitti_semantics", tmp_path / "kitti", data_dir)
  _, info = pipeline.open_split(data_dir, "vkitti", "train")
  assert pipeline.depth_scale_cm(info, "far") == FAR_CM
  assert pipeline.depth_scale_cm(info, "invalid") == 200

  far = next(pipeline.train_iterator(_vkitti_to_kitti_config(data_dir, "far"),
                                     local_devices=1))["source"]
  sky, measured = stored == FAR_CM, (stored > 0) & (stored != FAR_CM)
  assert np.all(far["depth"][..., sky, 0] == 1.0) and np.all(far["depth_mask"][..., sky, 0] == 1)
  np.testing.assert_allclose(far["depth"][..., measured, 0],
                             np.broadcast_to(stored[measured] / FAR_CM,
                                             far["depth"][..., measured, 0].shape), rtol=1e-6)
  assert np.all(far["depth_mask"][..., 6, 7, 0] == 0)

  old = next(pipeline.train_iterator(_vkitti_to_kitti_config(data_dir, "invalid"),
                                     local_devices=1))["source"]
  assert np.all(old["depth"][..., sky, 0] == 0) and np.all(old["depth_mask"][..., sky, 0] == 0)
  np.testing.assert_allclose(old["depth"][..., measured, 0],
                             np.broadcast_to(stored[measured] / 200,
                                             old["depth"][..., measured, 0].shape), rtol=1e-6)
  assert np.all(old["depth_mask"][..., measured, 0] == 1)

  # Scored as a target: measured depth only, on the training split's scale.
  config = _vkitti_to_kitti_config(data_dir, "far")
  config.data.target, config.data.target_eval_split = "vkitti", "train"
  split = pipeline.target_eval_split(config, at_label_resolution=True)
  batch = next(split.batches(1, local_devices=1, process_index=0, process_count=1))
  assert np.all(batch["depth_mask"][0, 0, :12, :20, 0] == measured)
  assert split.spec.depth_max_cm == FAR_CM


def test_procedural_sky_is_the_far_end_of_the_depth_range(tmp_path):
  config = _tiny_procedural_config()
  prepare.prepare("procedural", str(tmp_path), config, num_workers=1)
  config.data.data_dir = str(tmp_path)
  config.data.source, config.data.target = "procedural/source", "procedural/target"
  config.data.height, config.data.width = 24, 64  # the rendered size: no resampling
  config.data.read_threads, config.data.read_buffer_batches = 1, 2
  batch = next(pipeline.train_iterator(config, local_devices=1))
  for domain in ("source", "target"):
    sky = batch[domain]["label"] == 7  # VKITTI_KITTI_10's sky
    assert sky.any()
    assert np.all(batch[domain]["depth"][..., 0][sky] == 1.0)
    assert np.all(batch[domain]["depth_mask"][..., 0][sky] == 1.0)
    assert np.all(batch[domain]["depth"][..., 0][~sky] < 1.0)
  config.data.sky_depth = "invalid"
  batch = next(pipeline.train_iterator(config, local_devices=1))["source"]
  sky = batch["label"] == 7
  assert np.all(batch["depth_mask"][..., 0][sky] == 0) and np.all(batch["depth"][..., 0][sky] == 0)
  assert batch["depth"][..., 0][~sky].max() <= 1.0 and batch["depth_mask"][..., 0][~sky].all()
  config.data.sky_depth = "sky"
  with pytest.raises(ValueError, match="data.sky_depth"):  # at start, before any data is read
    config_checks.check_config(config)


def test_data_prepared_by_an_older_version_is_refused(tmp_path):
  old = tmp_path / "vkitti" / "1.0.0"
  old.mkdir(parents=True)
  (old / "dataset_info.json").write_text("{}")
  with pytest.raises(pipeline.DatasetNotPrepared,
                     match=r"data version 1\.0\.0.*Re-run `python -m gio_ada_jax\.data\.prepare "
                           r"--dataset vkitti"):
    pipeline.open_split(str(tmp_path), "vkitti", "train")


def test_prepare_refuses_a_procedural_copy_of_another_config(tmp_path):
  """A folder that holds another rendering is not passed off as this config's: an error naming
  the differing fields, and --overwrite re-renders it."""
  config = _tiny_procedural_config()
  prepare.prepare("procedural", str(tmp_path), config, num_workers=1)
  changed = _tiny_procedural_config()
  changed.data.procedural.target.noise_std = 0.5
  # Each domain records the whole procedural config: the first domain's folder is refused.
  with pytest.raises(formats.DataError,
                     match=r"procedural/source/.*fields differing: "
                           r"\['target.noise_std'\].*--overwrite"):
    prepare.prepare("procedural", str(tmp_path), changed, num_workers=1)
  prepare.prepare("procedural", str(tmp_path), config, num_workers=1)  # the same: a no-op
  prepare.prepare("procedural", str(tmp_path), changed, overwrite=True, num_workers=1)
  _, info = pipeline.open_split(str(tmp_path), "procedural/target", "train")
  pipeline.check_procedural_config(info, changed.data.procedural)


@pytest.mark.parametrize("edit", ["foreign_class", "not_json"])
def test_a_prepared_dataset_naming_foreign_feature_classes_is_refused(tmp_path, edit):
  """TFDS imports the modules a features.json names: an edited file must not make any entry
  point import them."""
  fake_datasets.write_kitti_semantics(tmp_path / "raw")
  _prepare("kitti_semantics", tmp_path / "raw", tmp_path / "data")
  path = pipeline.dataset_dir(str(tmp_path / "data"), "kitti_semantics")
  features = path / "features.json"
  marker = tmp_path / "imported"
  module = tmp_path / "hostile_features.py"
  module.write_text(f"open({str(marker)!r}, 'w').close()\n")
  if edit == "foreign_class":
    features.write_text(features.read_text().replace(
        "tensorflow_datasets.core.features.text_feature.Text", "hostile_features.Text"))
  else:
    features.write_text("{not json")
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(tmp_path))
  try:
    with pytest.raises(ValueError, match=r"features\.json.*(hostile_features\.Text|cannot be "
                                         r"read).*--overwrite"):
      pipeline.open_split(str(tmp_path / "data"), "kitti_semantics", "train")
  finally:
    sys.path.remove(str(tmp_path))
  assert not marker.exists()
  prepare.prepare("kitti_semantics", str(tmp_path / "data"), default_config.get_config(),
                  str(tmp_path / "raw"), overwrite=True)
  source, _ = pipeline.open_split(str(tmp_path / "data"), "kitti_semantics", "train")
  assert len(source) == 2
