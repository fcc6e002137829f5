"""Readers of the official layouts (gio_ada_jax/data/formats.py) on tiny fake trees.

Each reader must give back what tests/fake_datasets.py wrote, and every bad input must raise a
DataError naming the file. Only the SYNTHIA tests import TensorFlow (16-bit multi-channel PNGs).
"""

import contextlib
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from gio_ada_jax.data import formats, labels
from tests import fake_datasets


def read_split(name, manual_dir, split):
  reader = formats.FORMATS[name]
  return [reader.read_example(raw) for raw in reader.list_examples(manual_dir, split)]


def assert_reads_expected(name, manual_dir, expected):
  """Every split lists exactly the expected ids (sorted) and reads the expected arrays."""
  reader = formats.FORMATS[name]
  for split, examples in expected.items():
    raws = reader.list_examples(manual_dir, split)
    assert [raw.example_id for raw in raws] == sorted(examples)
    for raw in raws:
      got = reader.read_example(raw)
      want = examples[raw.example_id]
      assert got["id"] == raw.example_id
      assert set(got) == {"id", "image", "label"} | ({"depth"} if reader.has_depth else set())
      assert got["image"].dtype == np.uint8 and got["image"].ndim == 3
      assert got["label"].dtype == np.uint8
      np.testing.assert_array_equal(got["image"], want["image"])
      np.testing.assert_array_equal(got["label"], want["label"])
      if reader.has_depth:
        assert got["depth"].dtype == np.uint16
        np.testing.assert_array_equal(got["depth"], want["depth"])


@contextlib.contextmanager
def raises_naming(path, match=None):
  """Expects a DataError whose message names `path` and, when given, matches `match`."""
  with pytest.raises(formats.DataError) as error:
    yield
  assert str(path) in str(error.value)
  if match:
    assert re.search(match, str(error.value)), str(error.value)


def truncate(path: pathlib.Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def test_formats_table():
  assert set(formats.FORMATS) == {"vkitti", "kitti_semantics", "synthia_rand_cityscapes",
                                  "cityscapes"}
  assert formats.FORMATS["vkitti"].label_space is labels.VKITTI_KITTI_10
  assert formats.FORMATS["kitti_semantics"].label_space is labels.VKITTI_KITTI_10
  assert formats.FORMATS["synthia_rand_cityscapes"].label_space is labels.SYNTHIA_CITYSCAPES_16
  assert formats.FORMATS["cityscapes"].label_space is labels.SYNTHIA_CITYSCAPES_16
  assert [f.has_depth for f in formats.FORMATS.values()] == [True, False, True, False]


# ---------------------------------------------------------------------------- Virtual KITTI


def test_vkitti_131(tmp_path):
  expected = fake_datasets.write_vkitti_131(tmp_path, worlds=("0001", "0018"),
                                            variations=("clone", "fog"))
  assert len(expected["train"]) == 8
  assert_reads_expected("vkitti", tmp_path, expected)
  raw = formats.FORMATS["vkitti"].list_examples(tmp_path, "train")[0]
  assert raw.example_id == "0001/clone/00000"
  assert raw.encoding_path.name == "0001_clone_scenegt_rgb_encoding.txt"


def test_vkitti_131_instance_colours_differ_between_files(tmp_path):
  fake_datasets.write_vkitti_131(tmp_path, variations=("clone", "fog"))
  scenegt = tmp_path / "vkitti_1.3.1_scenegt"
  car_lines = [{line for line in (scenegt / f"0001_{v}_scenegt_rgb_encoding.txt").read_text()
                .splitlines() if line.startswith("Car:")} for v in ("clone", "fog")]
  assert car_lines[0] and car_lines[0].isdisjoint(car_lines[1])


@pytest.mark.parametrize("one_folder_per_tarball", [False, True])
@pytest.mark.parametrize("class_folder", ["classSegmentation", "classsegmentation"])
def test_vkitti_203(tmp_path, one_folder_per_tarball, class_folder):
  expected = fake_datasets.write_vkitti_203(
      tmp_path, scenes=("Scene01", "Scene20"), variations=("clone", "30-deg-left"),
      one_folder_per_tarball=one_folder_per_tarball, class_folder=class_folder)
  assert len(expected["train"]) == 8  # Camera_0 only.
  assert_reads_expected("vkitti", tmp_path, expected)


def test_vkitti_203_under_one_top_folder(tmp_path):
  expected = fake_datasets.write_vkitti_203(tmp_path / "vkitti_2.0.3")
  assert_reads_expected("vkitti", tmp_path, expected)


def test_vkitti_missing_tarball_folder(tmp_path):
  fake_datasets.write_vkitti_131(tmp_path)
  depth_root = tmp_path / "vkitti_1.3.1_depthgt"
  for path in sorted(depth_root.rglob("*"), reverse=True):
    path.unlink() if path.is_file() else path.rmdir()
  depth_root.rmdir()
  with raises_naming(tmp_path, "vkitti_1.3.1_depthgt.tar"):
    formats.FORMATS["vkitti"].list_examples(tmp_path, "train")


def test_vkitti_203_missing_textgt(tmp_path):
  fake_datasets.write_vkitti_203(tmp_path, one_folder_per_tarball=True)
  (tmp_path / "vkitti_2.0.3_textgt" / "Scene01" / "clone" / "colors.txt").unlink()
  with raises_naming("Scene01/clone/colors.txt", "vkitti_2.0.3_textgt"):
    formats.FORMATS["vkitti"].list_examples(tmp_path, "train")


def test_vkitti_missing_depth_file(tmp_path):
  fake_datasets.write_vkitti_203(tmp_path)
  missing = tmp_path / "Scene01/clone/frames/depth/Camera_0/depth_00001.png"
  missing.unlink()
  with raises_naming(missing, "vkitti_2.0.3_depth"):
    formats.FORMATS["vkitti"].list_examples(tmp_path, "train")


def test_vkitti_unknown_colour_is_reported_with_pixel_count(tmp_path):
  fake_datasets.write_vkitti_131(tmp_path)
  label_path = tmp_path / "vkitti_1.3.1_scenegt/0001/clone/00000.png"
  colours = np.asarray(Image.open(label_path)).copy()
  colours[0, :3] = (1, 2, 3)  # in no encoding file
  colours[1, 0] = (4, 5, 6)
  fake_datasets.save_png(label_path, colours)
  reader = formats.FORMATS["vkitti"]
  raw = reader.list_examples(tmp_path, "train")[0]
  with raises_naming(label_path, re.escape("(1, 2, 3): 3 px, (4, 5, 6): 1 px")):
    reader.read_example(raw)


def test_vkitti_unknown_class_name_in_encoding(tmp_path):
  fake_datasets.write_vkitti_131(tmp_path)
  encoding = tmp_path / "vkitti_1.3.1_scenegt/0001_clone_scenegt_rgb_encoding.txt"
  encoding.write_text(encoding.read_text() + "Bridge 1 2 3\n")
  reader = formats.FORMATS["vkitti"]
  raw = reader.list_examples(tmp_path, "train")[0]
  with raises_naming(encoding, "line 18: unknown Virtual KITTI class 'Bridge'"):
    reader.read_example(raw)


def test_vkitti_depth_size_mismatch(tmp_path):
  fake_datasets.write_vkitti_131(tmp_path)
  depth_path = tmp_path / "vkitti_1.3.1_depthgt/0001/clone/00001.png"
  fake_datasets.save_png(depth_path, np.ones((5, 7), np.uint16))
  reader = formats.FORMATS["vkitti"]
  raw = reader.list_examples(tmp_path, "train")[1]
  with raises_naming(depth_path, "7x5"):
    reader.read_example(raw)


def test_vkitti_truncated_jpeg(tmp_path):
  fake_datasets.write_vkitti_203(tmp_path, size=(64, 64))
  image_path = tmp_path / "Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg"
  truncate(image_path)
  reader = formats.FORMATS["vkitti"]
  raw = reader.list_examples(tmp_path, "train")[0]
  with raises_naming(image_path, "damaged or truncated"):
    reader.read_example(raw)


def test_vkitti_not_found(tmp_path):
  with raises_naming(tmp_path, "vkitti_1.3.1_rgb"):
    formats.FORMATS["vkitti"].list_examples(tmp_path, "train")


def test_vkitti_empty_split(tmp_path):
  for tarball in ("rgb", "scenegt", "depthgt"):
    (tmp_path / f"vkitti_1.3.1_{tarball}").mkdir()
  with raises_naming(tmp_path, "empty"):
    formats.FORMATS["vkitti"].list_examples(tmp_path, "train")


def test_unknown_split(tmp_path):
  with pytest.raises(formats.DataError, match="no split 'validation'"):
    formats.FORMATS["vkitti"].list_examples(tmp_path, "validation")


# -------------------------------------------------------------------------- KITTI semantics


@pytest.mark.parametrize("top", ["", "data_semantics"])
def test_kitti_semantics_both_splits(tmp_path, top):
  expected = fake_datasets.write_kitti_semantics(tmp_path / top)
  assert_reads_expected("kitti_semantics", tmp_path, expected)
  shapes = [example["image"].shape
            for example in read_split("kitti_semantics", tmp_path, "train")]
  assert shapes == [(12, 20, 3), (13, 22, 3)]  # sizes read per image


def test_kitti_missing_label_file(tmp_path):
  fake_datasets.write_kitti_semantics(tmp_path)
  missing = tmp_path / "training/semantic/000001_10.png"
  missing.unlink()
  with raises_naming(missing, "data_semantics.zip"):
    formats.FORMATS["kitti_semantics"].list_examples(tmp_path, "validation")


def test_kitti_missing_folder(tmp_path):
  fake_datasets.write_kitti_semantics(tmp_path)
  with raises_naming(tmp_path, "data_semantics.zip"):
    formats.FORMATS["kitti_semantics"].list_examples(tmp_path / "training", "train")


def test_kitti_label_size_mismatch(tmp_path):
  fake_datasets.write_kitti_semantics(tmp_path)
  label_path = tmp_path / "training/semantic/000000_10.png"
  fake_datasets.save_png(label_path, np.zeros((12, 21), np.uint8))
  reader = formats.FORMATS["kitti_semantics"]
  with raises_naming(label_path, "21x12"):
    reader.read_example(reader.list_examples(tmp_path, "validation")[0])


# ------------------------------------------------------------------- SYNTHIA-RAND-CITYSCAPES


@pytest.mark.parametrize("nested_depth, top", [(False, ""), (True, "RAND_CITYSCAPES")])
def test_synthia(tmp_path, nested_depth, top):
  expected = fake_datasets.write_synthia(tmp_path, nested_depth=nested_depth, top=top)
  assert_reads_expected("synthia_rand_cityscapes", tmp_path, expected)


def test_synthia_label_id_out_of_table(tmp_path):
  fake_datasets.write_synthia(tmp_path, frames=1)
  label_path = tmp_path / "GT/LABELS/0000000.png"
  ids = np.zeros((12, 20, 3), np.uint16)
  ids[0, :4, 0] = 23
  ids[1, 0, 0] = 300
  fake_datasets.save_png16_channels(label_path, ids)
  reader = formats.FORMATS["synthia_rand_cityscapes"]
  with raises_naming(label_path, re.escape("(0..22): 23: 4 px, 300: 1 px")):
    reader.read_example(reader.list_examples(tmp_path, "train")[0])


def test_synthia_truncated_label_png(tmp_path):
  fake_datasets.write_synthia(tmp_path, frames=1, size=(64, 64))
  label_path = tmp_path / "GT/LABELS/0000000.png"
  truncate(label_path)
  reader = formats.FORMATS["synthia_rand_cityscapes"]
  with raises_naming(label_path, "damaged or truncated"):
    reader.read_example(reader.list_examples(tmp_path, "train")[0])


def test_synthia_missing_depth_folder(tmp_path):
  (tmp_path / "RGB").mkdir()
  (tmp_path / "GT/LABELS").mkdir(parents=True)
  with raises_naming(tmp_path / "Depth", "SYNTHIA_RAND_CITYSCAPES"):
    formats.FORMATS["synthia_rand_cityscapes"].list_examples(tmp_path, "train")


# ------------------------------------------------------------------------------- Cityscapes


def test_cityscapes_both_splits(tmp_path):
  expected = fake_datasets.write_cityscapes(tmp_path)
  assert len(expected["train"]) == 4 and len(expected["validation"]) == 2
  assert_reads_expected("cityscapes", tmp_path, expected)
  raw = formats.FORMATS["cityscapes"].list_examples(tmp_path, "validation")[0]
  assert raw.example_id == "val/frankfurt/frankfurt_000000_000019"


def test_cityscapes_missing_gtfine(tmp_path):
  fake_datasets.write_cityscapes(tmp_path)
  (tmp_path / "gtFine").rename(tmp_path / "elsewhere")
  with raises_naming(tmp_path, "gtFine_trainvaltest.zip"):
    formats.FORMATS["cityscapes"].list_examples(tmp_path, "train")


def test_cityscapes_label_id_out_of_table(tmp_path):
  fake_datasets.write_cityscapes(tmp_path)
  label_path = tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
  ids = np.zeros((12, 20), np.uint8)
  ids[:5, 0] = 40
  fake_datasets.save_png(label_path, ids)
  reader = formats.FORMATS["cityscapes"]
  with raises_naming(label_path, "40: 5 px"):
    reader.read_example(reader.list_examples(tmp_path, "validation")[0])


def test_cityscapes_colour_label_is_rejected(tmp_path):
  fake_datasets.write_cityscapes(tmp_path)
  label_path = tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
  fake_datasets.save_png(label_path, np.zeros((12, 20, 3), np.uint8))
  reader = formats.FORMATS["cityscapes"]
  with raises_naming(label_path, "single-channel"):
    reader.read_example(reader.list_examples(tmp_path, "validation")[0])


def test_cityscapes_truncated_png(tmp_path):
  fake_datasets.write_cityscapes(tmp_path, size=(64, 64))
  image_path = tmp_path / "leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png"
  truncate(image_path)
  reader = formats.FORMATS["cityscapes"]
  with raises_naming(image_path, "damaged or truncated"):
    reader.read_example(reader.list_examples(tmp_path, "validation")[0])


def test_cityscapes_empty_split(tmp_path):
  (tmp_path / "leftImg8bit/val").mkdir(parents=True)
  (tmp_path / "gtFine/val").mkdir(parents=True)
  with raises_naming(tmp_path / "leftImg8bit/val", "empty"):
    formats.FORMATS["cityscapes"].list_examples(tmp_path, "validation")
