"""The grain pipeline on in-memory examples: shapes, ranges, flips, shards, seeds, resume."""

import numpy as np
import pytest

from gio_ada_jax.data import pipeline
from tests.conftest import tiny_training_config

HEIGHT, WIDTH = 6, 10


def _example(index: int, height: int = HEIGHT, width: int = WIDTH) -> dict:
  """Image, label and depth all encode the column, so a flip of one shows in all three; the
  label's last row holds the example index so batches can be traced back to examples."""
  cols = np.broadcast_to(np.arange(width), (height, width))
  image = np.stack([cols * 10, cols * 10, np.full_like(cols, index)], -1).astype(np.uint8)
  label = (cols % 10).astype(np.uint8)
  label[-1] = index
  depth = (100 + cols * 7).astype(np.uint16)
  depth[0, 0] = 0  # one invalid pixel
  return {"id": f"{index}", "image": image, "label": label[..., None], "depth": depth}


SOURCE = [_example(i) for i in range(10)]
SPEC = pipeline.Preprocessing(HEIGHT, WIDTH, depth_max_cm=1000.0)


def _indices(batch) -> list[int]:
  return batch["label"][..., -1, 0].ravel().tolist()


def test_preprocess_ranges_and_mask():
  out = pipeline.preprocess(SOURCE[3], SPEC, None)
  assert out["image"].shape == (HEIGHT, WIDTH, 3) and out["image"].dtype == np.float32
  # uint8 0..255 -> [-1, 1], channels in order: 0 -> -1, 255 -> 1, 90 -> 90 / 127.5 - 1.
  np.testing.assert_allclose(out["image"], SOURCE[3]["image"] / 127.5 - 1.0, rtol=0, atol=1e-6)
  assert pipeline.normalise_image(np.array([0, 255], np.uint8)).tolist() == [-1.0, 1.0]
  assert out["label"].dtype == np.int32
  np.testing.assert_array_equal(out["label"], SOURCE[3]["label"][..., 0])
  np.testing.assert_allclose(out["depth"][0, 1, 0], 107 / 1000)
  assert out["depth_mask"][0, 0, 0] == 0 and out["depth_mask"][1, 1, 0] == 1


def test_resize_uses_nearest_for_labels_and_depth():
  spec = pipeline.Preprocessing(3, 5, depth_max_cm=1000.0)
  out = pipeline.preprocess(_example(0), spec, None)
  # Nearest: every label is one of the originals (no interpolated ids).
  assert set(np.unique(out["label"])) <= set(range(10))
  np.testing.assert_array_equal(out["label"][0], [1, 3, 5, 7, 9])
  np.testing.assert_allclose(out["depth"][1, :, 0], (100 + 7 * np.array([1, 3, 5, 7, 9])) / 1000)


def test_flip_is_applied_to_image_label_and_depth_together():
  flipped = kept = 0
  for seed in range(20):
    out = pipeline.preprocess(SOURCE[0], SPEC, np.random.default_rng(seed))
    columns_from_image = np.rint((out["image"][1, :, 0] + 1) * 127.5 / 10).astype(int)
    np.testing.assert_array_equal(out["label"][1], columns_from_image % 10)
    np.testing.assert_allclose(out["depth"][1, :, 0], (100 + 7 * columns_from_image) / 1000)
    if columns_from_image[0] == WIDTH - 1:
      flipped += 1
    else:
      kept += 1
  assert flipped and kept  # both outcomes happen


def test_random_crop_keeps_the_window_aligned():
  spec = pipeline.Preprocessing(4, 6, mode="random_crop", random_flip=False, depth_max_cm=1000.0)
  out = pipeline.preprocess(SOURCE[0], spec, np.random.default_rng(1))
  columns = np.rint((out["image"][0, :, 0] + 1) * 127.5 / 10).astype(int)
  np.testing.assert_array_equal(np.diff(columns), 1)
  np.testing.assert_array_equal(out["label"][0], columns % 10)
  with pytest.raises(ValueError, match="smaller than the crop"):
    pipeline.preprocess(SOURCE[0], pipeline.Preprocessing(20, 20, mode="random_crop"), None)


def _train(seed=0, process_index=0, process_count=1, local_devices=2, per_device_batch=1):
  return pipeline.train_dataset(SOURCE, SPEC, seed=seed, per_device_batch=per_device_batch,
                                local_devices=local_devices, threads=2, buffer_batches=4,
                                process_index=process_index, process_count=process_count)


LAYOUT = dict(global_batch=2, process_count=1)  # _train's default: 1 image on each of 2 devices


def _unpaired(global_batch):
  return pipeline.UnpairedIterator(
      _train(seed=0, local_devices=1, per_device_batch=global_batch),
      _train(seed=9, local_devices=1, per_device_batch=global_batch),
      global_batch=global_batch, process_count=1)


def test_train_batches_are_device_shaped_and_seeded():
  batch = next(iter(_train()))
  assert batch["image"].shape == (2, 1, HEIGHT, WIDTH, 3)
  assert batch["depth"].shape == batch["depth_mask"].shape == (2, 1, HEIGHT, WIDTH, 1)
  first = [_indices(b) for b, _ in zip(iter(_train(seed=5)), range(6))]
  again = [_indices(b) for b, _ in zip(iter(_train(seed=5)), range(6))]
  other = [_indices(b) for b, _ in zip(iter(_train(seed=6)), range(6))]
  assert first == again and first != other


def test_one_epoch_visits_every_example_once_and_reshuffles():
  it = iter(_train(seed=1))
  epoch_1 = sum((_indices(next(it)) for _ in range(5)), [])
  epoch_2 = sum((_indices(next(it)) for _ in range(5)), [])
  assert sorted(epoch_1) == sorted(epoch_2) == list(range(10))
  assert epoch_1 != epoch_2


def test_process_shards_are_disjoint_and_cover_the_data():
  seen = []
  for process_index in (0, 1):
    it = iter(_train(seed=2, process_index=process_index, process_count=2))
    seen.append(set(sum((_indices(next(it)) for _ in range(5)), [])))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(10))


def test_iterator_state_resumes_exactly():
  it = iter(_train(seed=3))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = iter(_train(seed=3))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_unpaired_iterator_state_round_trips():
  unpaired = pipeline.UnpairedIterator(_train(seed=0), _train(seed=9), **LAYOUT)
  next(unpaired)
  state = unpaired.get_state()
  want = next(unpaired)
  again = pipeline.UnpairedIterator(_train(seed=0), _train(seed=9), **LAYOUT)
  again.set_state(state)
  got = next(again)
  assert _indices(got["source"]) == _indices(want["source"])
  assert _indices(got["target"]) == _indices(want["target"])
  sources, targets = zip(*((_indices(b["source"]), _indices(b["target"]))
                           for b, _ in zip(again, range(5))))
  assert sources != targets  # independent (unpaired) orders


def test_a_resume_with_another_global_batch_continues_at_the_same_image():
  """The iterator state counts batches; resuming at another data.global_batch recounts them,
  so each domain continues with the image that comes next (issue: it used to skip or repeat)."""
  order = _unpaired(1)
  sequence = [{d: _indices(b[d])[0] for d in b} for b, _ in zip(order, range(12))]
  run = _unpaired(2)
  for _ in range(3):  # 6 images of each domain
    next(run)
  resumed = _unpaired(3)
  resumed.set_state(run.get_state())
  for start in (6, 9):
    batch = next(resumed)
    for domain in ("source", "target"):
      assert _indices(batch[domain]) == [s[domain] for s in sequence[start:start + 3]]


def test_a_resume_whose_position_does_not_fit_the_new_batch_names_the_field():
  run = _unpaired(2)
  for _ in range(3):
    next(run)
  with pytest.raises(pipeline.ConfigError, match=r"6 images.*data.global_batch=4"):
    _unpaired(4).set_state(run.get_state())


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_the_whole_split_with_padding(process_count):
  seen, batches_per_process = [], []
  for process_index in range(process_count):
    batches = list(pipeline.eval_batches(SOURCE[:7], SPEC, per_device_batch=2, local_devices=2,
                                         process_index=process_index,
                                         process_count=process_count))
    batches_per_process.append(len(batches))
    for batch in batches:
      valid = batch["valid"].ravel().astype(bool)
      assert batch["image"].shape[:2] == (2, 2)
      seen += [i for i, v in zip(_indices(batch), valid) if v]
      assert np.all(batch["label"].reshape(4, -1)[~valid] == 255)  # padding is ignored
  assert sorted(seen) == list(range(7))
  assert len(set(batches_per_process)) == 1  # every process runs the same number of steps


def test_device_prefetch_yields_device_batches_with_the_state_after_each():
  """prefetch_to_devices runs ahead, but the state it hands out with batch n resumes at n+1."""
  import jax  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.distributed import prefetch_to_devices  # pylint: disable=g-import-not-at-top
  devices = jax.local_devices()
  unpaired = pipeline.UnpairedIterator(_train(seed=0, local_devices=len(devices)),
                                       _train(seed=9, local_devices=len(devices)), **LAYOUT)
  prefetched = prefetch_to_devices(unpaired, 3, lambda b: b["source"])
  batches = [next(prefetched) for _ in range(4)]
  for batch, _ in batches:
    assert isinstance(batch["image"], jax.Array)
    assert [s.device for s in batch["image"].addressable_shards] == devices
  state_after_second = batches[1][1]
  resumed = pipeline.UnpairedIterator(_train(seed=0, local_devices=len(devices)),
                                      _train(seed=9, local_devices=len(devices)), **LAYOUT)
  resumed.set_state(state_after_second)
  third = next(resumed)["source"]
  np.testing.assert_array_equal(np.asarray(batches[2][0]["image"]), third["image"])
  assert _indices(third) == _indices({"label": np.asarray(batches[2][0]["label"])})


def test_a_source_data_dir_without_the_source_names_the_field_and_both_ways_to_fill_it(
    procedural_data_dir, tmp_path):
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = tiny_training_config(procedural_data_dir, 1)
  config.data.source_data_dir = str(tmp_path / "translated")
  with pytest.raises(pipeline.DatasetNotPrepared) as info:
    pipeline.train_iterator(config, local_devices=1)
  message = str(info.value)
  assert message.startswith(f"data.source_data_dir='{tmp_path}/translated' holds no "
                            "'procedural/source' of data version")
  assert f"gio_ada_jax.cyclegan.translate --config ... --output_dir {tmp_path}/translated" in message
  assert "set data.source_data_dir='' to read data.source from data.data_dir" in message

  config.data.source_data_dir = ""
  config.data.procedural.num_train = 9  # another rendering than the prepared one
  with pytest.raises(pipeline.DatasetUnusable) as info:  # train.py: exit 2, one line
    pipeline.train_iterator(config, local_devices=1)
  assert str(info.value).startswith(f"{procedural_data_dir}/procedural/source/")
  assert ("re-run `python -m gio_ada_jax.data.prepare --dataset procedural --overwrite "
          f"--data_dir {procedural_data_dir}` with this config") in str(info.value)


def test_a_batch_larger_than_the_split_or_a_crop_larger_than_its_images_is_refused_at_start(
    procedural_data_dir):
  """Both used to start training: a global batch of 10^9 was built for minutes without end, and
  a crop larger than the images failed at the first batch, after compiling."""
  from gio_ada_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  config = tiny_training_config(procedural_data_dir, 1)  # 8 training images per domain
  config.data.global_batch = 10**9
  with pytest.raises(ConfigError, match=r"data.global_batch=1000000000 is more than the 8 "
                                        r"examples of 'procedural/source''s train split.*at "
                                        r"most 8\."):
    pipeline.train_iterator(config, local_devices=4)
  config.data.global_batch = 8
  pipeline.train_iterator(config, local_devices=4)  # the whole split in one batch is fine
  config.data.mode, config.data.height = "random_crop", 40  # the images are 32x48
  with pytest.raises(ConfigError, match=r"data.mode='random_crop' cuts data.height x "
                                        r"data.width = 40x48, but 'procedural/source''s train "
                                        r"split holds images of height 32 and width 48"):
    pipeline.train_iterator(config, local_devices=4)
  config.data.height = 24
  pipeline.train_iterator(config, local_devices=4)
