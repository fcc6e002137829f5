"""Folders of images (images.py, evaluate.py --images_dir): every mode PIL opens read as the
right 8-bit RGB, colliding names and output folders that are not the command's own."""

import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from configs import test as test_config
from gio_ada_jax import images, models, variants
from gio_ada_jax.eval import evaluate


# ------------------------------------------------------------------ reading any image mode


def _png(path, array: np.ndarray, colour_type: int) -> None:
  """A 16-bit PNG written byte by byte (PIL writes no 16-bit RGB): colour type 0 gray, 2 RGB,
  4 gray + alpha, 6 RGBA."""
  height, width = array.shape[:2]
  rows = b"".join(b"\x00" + array[r].astype(">u2").tobytes() for r in range(height))

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                   + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _to8(values) -> np.ndarray:
  return np.round(np.asarray(values, np.float64) * 255 / 65535).astype(np.uint8)


def _gray(values) -> np.ndarray:
  return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


_G16 = np.array([[0, 128, 129, 257], [32767, 32896, 65280, 65535]], np.uint16)
_RGB16 = np.array([[[0, 255, 256], [257, 65535, 32896]]], np.uint16)
_RGBA8 = np.array([[[10, 20, 30, 0], [200, 100, 50, 255]]], np.uint8)


def _write_pil(image: Image.Image, name: str):
  return lambda folder: image.save(folder / name) or folder / name


def _write_png16(array, colour_type, name="x.png"):
  return lambda folder: _png(folder / name, array, colour_type) or folder / name


def _palette_image():
  image = Image.new("P", (2, 1))
  image.putpalette([10, 20, 30, 200, 100, 50])
  image.putpixel((1, 0), 1)
  return image


READABLE = {
    # name: (writes the file into a folder, the uint8 RGB expected)
    "I;16 png": (_write_pil(Image.fromarray(_G16), "x.png"), _gray(_to8(_G16))),
    "I;16B tiff": (_write_pil(Image.frombytes("I;16B", (4, 2), _G16.astype(">u2").tobytes()),
                              "x.tif"),
                   _gray(_to8(_G16))),
    "I (16-bit pgm)": (lambda folder: (folder / "x.pgm").write_bytes(
        b"P5\n4 2\n65535\n" + _G16.astype(">u2").tobytes()) and folder / "x.pgm",
                       _gray(_to8(_G16))),
    # PIL keeps the high byte of 16-bit RGB PNGs (value // 256), within 1 of the rounding.
    "RGB 48-bit png": (_write_png16(_RGB16, 2), (_RGB16 // 256).astype(np.uint8)),
    "LA 16-bit png": (_write_png16(np.stack([_G16, 65535 - _G16], -1), 4),
                      _gray(_G16 // 256)),
    "RGBA 64-bit png": (_write_png16(np.concatenate([_RGB16, _RGB16[..., :1]], -1), 6),
                        (_RGB16 // 256).astype(np.uint8)),
    "F tiff": (_write_pil(Image.fromarray(np.array([[0, 0.4, 1.6, 254.5]], np.float32)),
                          "x.tif"), _gray([[0, 0, 2, 254]])),
    "P png": (_write_pil(_palette_image(), "x.png"), np.array([[[10, 20, 30], [200, 100, 50]]],
                                                               np.uint8)),
    "P png with a transparent colour": (
        lambda folder: _palette_image().save(folder / "x.png", transparency=1) or folder / "x.png",
        np.array([[[10, 20, 30], [200, 100, 50]]], np.uint8)),
    "LA png": (_write_pil(Image.fromarray(np.array([[[7, 0], [250, 255]]], np.uint8), "LA"),
                          "x.png"), _gray([[7, 250]])),
    "RGBA png (alpha dropped)": (_write_pil(Image.fromarray(_RGBA8, "RGBA"), "x.png"),
                                 _RGBA8[..., :3]),
    "CMYK tiff": (_write_pil(Image.fromarray(np.array([[[0, 0, 0, 0], [255, 0, 0, 0],
                                                        [100, 50, 0, 100]]], np.uint8), "CMYK"),
                             "x.tif"),
                  np.array([[[255, 255, 255], [0, 255, 255], [94, 125, 155]]], np.uint8)),
    "1-bit png": (_write_pil(Image.fromarray(np.array([[True, False]])), "x.png"),
                  _gray([[255, 0]])),
    "1-bit bmp": (_write_pil(Image.fromarray(np.array([[False, True]])), "x.bmp"),
                  _gray([[0, 255]])),
    "L bmp": (_write_pil(Image.fromarray(np.array([[3, 200]], np.uint8)), "x.bmp"),
              _gray([[3, 200]])),
}


@pytest.mark.parametrize("mode", sorted(READABLE))
def test_read_rgb_gives_the_right_8_bit_rgb_for_every_mode(mode, tmp_path):
  write, expected = READABLE[mode]
  path = write(tmp_path)
  got = images.read_rgb(path)
  assert got.dtype == np.uint8 and got.shape == expected.shape
  np.testing.assert_array_equal(got, expected)


UNREADABLE = {
    "I tiff beyond 16 bits": (
        _write_pil(Image.fromarray(np.array([[0, 70000]], np.int32)), "x.tif"),
        r"x.tif: integer values from 0 to 70000, outside the 16-bit range"),
    "F tiff in [0, 1]": (
        _write_pil(Image.fromarray(np.array([[0, 0.5, 1.0]], np.float32)), "x.tif"),
        r"x.tif: float values within \[0, 1\]"),
    "F tiff beyond 255": (
        _write_pil(Image.fromarray(np.array([[0, 300.0]], np.float32)), "x.tif"),
        r"x.tif: float values from 0.0 to 300.0"),
    "F tiff with NaN": (
        _write_pil(Image.fromarray(np.array([[0, np.nan]], np.float32)), "x.tif"),
        r"x.tif: float values .*NaN or infinite: True"),
    "truncated png": (lambda folder: (folder / "x.png").write_bytes(
        b"\x89PNG\r\n\x1a\n broken") and folder / "x.png", r"x.png: not a readable image"),
    "text named .jpg": (lambda folder: (folder / "x.jpg").write_text("hello") and
                        folder / "x.jpg", r"x.jpg: not a readable image"),
}


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_read_rgb_turns_an_image_upright_by_its_exif_orientation(suffix, tmp_path):
  """Orientation 6: the stored 40x20 pixels are shown turned 90 degrees clockwise, 20x40."""
  stored = np.zeros((20, 40, 3), np.uint8)
  stored[:, :20] = (255, 0, 0)  # left half red: the top once turned clockwise
  stored[:, 20:] = (0, 0, 255)
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation
  path = tmp_path / f"phone{suffix}"
  Image.fromarray(stored).save(path, exif=exif)
  upright = images.read_rgb(path)
  assert upright.shape == (40, 20, 3)
  np.testing.assert_allclose(upright[:18].reshape(-1, 3).mean(0), (255, 0, 0), atol=12)
  np.testing.assert_allclose(upright[22:].reshape(-1, 3).mean(0), (0, 0, 255), atol=12)
  exif[0x0112] = 1  # as stored
  Image.fromarray(stored).save(path, exif=exif)
  assert images.read_rgb(path).shape == (20, 40, 3)


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_read_rgb_names_the_file_it_cannot_read_correctly(case, tmp_path):
  write, message = UNREADABLE[case]
  with pytest.raises(images.UnreadableImage, match=message):
    images.read_rgb(write(tmp_path))


# ------------------------------------------------------------------ predicting a folder


@pytest.fixture(scope="module")
def init_weights():
  """(config, TaskNetWeights) of a freshly initialised G_task: enough to compare pictures."""
  config = test_config.get_config()
  built = models.build_models(config.model, variants.from_config(config))
  params = evaluate._task_net_template(built, config)  # pylint: disable=protected-access
  return config, evaluate.TaskNetWeights(params, "init", None, "init")


def _read(path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image)


def test_16_bit_images_give_the_pictures_of_their_8_bit_versions(init_weights, tmp_path):
  """A 16-bit PNG is scaled to 8 bits, not clipped to white."""
  config, weights = init_weights
  rng = np.random.default_rng(0)
  folder, output = tmp_path / "photos", tmp_path / "out"
  folder.mkdir()
  gray8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
  rgb8 = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  Image.fromarray(gray8).save(folder / "gray8.png")
  Image.fromarray(gray8.astype(np.uint16) * 257).save(folder / "gray16.png")
  Image.fromarray(rgb8).save(folder / "rgb8.png")
  _png(folder / "rgb16.png", rgb8.astype(np.uint16) * 257, colour_type=2)
  assert Image.open(folder / "gray16.png").mode == "I;16"
  evaluate.predict_images(config, weights, str(folder), str(output))
  for kind in evaluate.PICTURE_KINDS:
    for eight, sixteen in (("gray8", "gray16"), ("rgb8", "rgb16")):
      np.testing.assert_array_equal(_read(output / f"{sixteen}.png_{kind}.png"),
                                    _read(output / f"{eight}.png_{kind}.png"))
  panel = _read(output / "gray16.png_panel.png")
  np.testing.assert_array_equal(panel[:20, :30], np.repeat(gray8[..., None], 3, -1))


def test_same_stems_keep_their_own_pictures_and_skipped_files_are_listed(init_weights,
                                                                         tmp_path):
  config, weights = init_weights
  rng = np.random.default_rng(1)
  folder, output = tmp_path / "photos", tmp_path / "out"
  folder.mkdir()
  png, jpg = (rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(2))
  Image.fromarray(png).save(folder / "a.png")
  Image.fromarray(jpg).save(folder / "a.jpg")
  (folder / "notes.txt").write_text("not an image")
  (folder / "more.png").mkdir()  # image suffixes, but neither is an image file
  os.mkfifo(folder / "pipe.png")  # reading it would wait for a writer forever
  found = evaluate.predict_images(config, weights, str(folder), str(output))
  assert [p.name for p in found.images] == ["a.jpg", "a.png"]
  assert found.skipped == ["more.png/ (a folder: subfolders are not read)",
                           "notes.txt (not an image by its suffix)",
                           "pipe.png (not a regular file)"]
  assert sorted(os.listdir(output)) == sorted(
      [evaluate.IMAGES_MANIFEST] + [f"a.{ext}_{kind}.png" for ext in ("jpg", "png")
                                     for kind in evaluate.PICTURE_KINDS])
  np.testing.assert_array_equal(_read(output / "a.png_panel.png")[:20, :30], png)
  np.testing.assert_array_equal(_read(output / "a.jpg_panel.png")[:20, :30],
                                images.read_rgb(folder / "a.jpg"))  # JPEG's own loss

  # Running again into the same folder overwrites only its own pictures.
  (folder / "b.bmp").write_bytes(b"BM broken")
  with pytest.raises(images.UnreadableImage, match=r"b.bmp: not a readable image"):
    evaluate.predict_images(config, weights, str(folder), str(output))
  assert not any(name.startswith("b.bmp") for name in os.listdir(output))
  (folder / "b.bmp").unlink()
  evaluate.predict_images(config, weights, str(folder), str(output))


def test_output_folders_that_hold_the_images_or_other_files_are_refused(tmp_path):
  folder = tmp_path / "photos"
  (folder / "sub").mkdir(parents=True)
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "a.png")
  for output, relation in ((folder, "is the same folder as"), (folder / "sub", "is inside"),
                           (folder / "new" / "out", "is inside"), (tmp_path, "contains")):
    with pytest.raises(ValueError, match=(
        re.escape(f"--output_dir {output} {relation} --images_dir {folder}: pictures and images "
                  "are kept apart") + ".* " + re.escape(
                      f"Choose an output folder outside it, e.g. {folder}_predictions."))):
      evaluate.check_image_folders(str(folder), str(output))
  other = tmp_path / "other"
  other.mkdir()
  (other / "a.png_panel.png").write_bytes(b"someone else's")
  (other / "keep.txt").write_text("mine")
  with pytest.raises(ValueError, match=re.escape(
      f"--output_dir {other} holds files that `evaluate.py --images_dir` did not write there "
      "(a.png_panel.png, keep.txt); it never overwrites")):
    evaluate.check_image_folders(str(folder), str(other))
  (other / evaluate.IMAGES_MANIFEST).write_text(json.dumps({"files": ["a.png_panel.png"]}))
  with pytest.raises(ValueError, match=r"did not write there \(keep.txt\)"):
    evaluate.check_image_folders(str(folder), str(other))
  (other / "keep.txt").unlink()
  assert [p.name for p in evaluate.check_image_folders(str(folder), str(other)).images] == [
      "a.png"]
  for broken in ("{", '{"files": "a.png_panel.png"}'):
    (other / evaluate.IMAGES_MANIFEST).write_text(broken)
    with pytest.raises(ValueError, match=r"\.predict_images\.json: cannot be read as the list"):
      evaluate.check_image_folders(str(folder), str(other))
  assert (other / "a.png_panel.png").read_bytes() == b"someone else's"
  # A file, or a folder below a file, used to fail in os.makedirs with a traceback.
  for output in (other / "keep.txt", other / "keep.txt" / "out"):
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=re.escape(
        f"--output_dir {output}: {other / 'keep.txt'} is a file, not a folder; choose a new or "
        "empty folder for the pictures.")):
      evaluate.check_image_folders(str(folder), str(output))


def test_evaluate_py_refuses_the_images_folder_as_output_and_writes_nothing(tmp_path):
  folder = tmp_path / "photos"
  folder.mkdir()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "a.png")
  result = subprocess.run(
      [sys.executable, "evaluate.py", "--config", "configs/test.py", "--workdir",
       str(tmp_path / "no_run"), "--images_dir", str(folder), "--output_dir", str(folder)],
      capture_output=True, text=True, check=False, timeout=600)
  assert result.returncode == 2, result.stderr[-2000:]
  assert (f"evaluate.py: --output_dir {folder} is the same folder as --images_dir {folder}: "
          "pictures and images are kept apart") in result.stderr
  assert "Traceback" not in result.stderr
  assert sorted(os.listdir(folder)) == ["a.png"] and not (tmp_path / "no_run").exists()
