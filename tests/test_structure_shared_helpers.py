"""The shared helpers that replaced per-module copies read and resize as the copies did, and
gio_ada_jax/images.py is the only place of the picture mechanisms."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs.procedural import procedural_config
from gio_ada_jax import images
from gio_ada_jax.data import builders, procedural
from gio_ada_jax.data.labels import VKITTI_KITTI_10
from gio_ada_jax.interop import parity


def test_parity_load_image_matches_the_former_pil_code(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "x.png"
  Image.fromarray(rng.integers(0, 256, (13, 17, 3), np.uint8)).save(path)
  for height, width in ((13, 17), (8, 10), (20, 30)):
    with Image.open(path) as image:  # the code load_image had before it used read_rgb
      former = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR),
                          np.float32)
    np.testing.assert_array_equal(parity.load_image(str(path), height, width),
                                  (former / 127.5 - 1.0)[None])


def test_panel_tiles_are_resized_by_resize_image():
  rng = np.random.default_rng(1)
  big, small = (rng.integers(0, 256, shape, np.uint8) for shape in ((6, 8, 3), (3, 4, 3)))
  out = images.panel([[big, small]])
  np.testing.assert_array_equal(out[:, :8], big)
  np.testing.assert_array_equal(out[:, 8 + images.PANEL_GAP:], images.resize_image(small, 6, 8))


def test_parity_cli_names_an_unreadable_image_and_exits_2(tmp_path):
  missing = tmp_path / "missing.png"
  result = subprocess.run([sys.executable, "-m", "gio_ada_jax.interop.parity", "--image",
                           str(missing)], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().endswith(f"parity: --image {missing}: not a readable image "
                                        "(FileNotFoundError: [Errno 2] No such file or "
                                        f"directory: '{missing}').")
  assert "Traceback" not in result.stderr


def test_prepare_offers_the_builders_dataset_names():
  assert builders.DATASETS == ("vkitti", "kitti_semantics", "synthia_rand_cityscapes",
                               "cityscapes", "procedural")
  assert set(builders.DATASETS) == set(builders.FORMAT_BUILDERS) | {builders.Procedural.name}


PACKAGE = Path(images.__file__).parent
# Function names of the picture mechanisms: reading RGB, colouring depth, panels / grids.
PICTURE_FUNCTION = re.compile(r"read_rgb|rgb_from|depth_colo|colou?ri[sz]e_depth|panel|grid|"
                              r"resize_image|write_png")


def _package_sources() -> dict[str, ast.Module]:
  return {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text(), str(p))
          for p in sorted(PACKAGE.rglob("*.py"))}


def test_images_is_the_only_module_defining_the_picture_mechanisms():
  """Functions reading RGB, colouring depth or tiling panels, and depth colour ramps, are
  defined in gio_ada_jax/images.py only (formats._read_rgb: the datasets' stricter mode check
  before images.rgb_from_image)."""
  found = {}
  for path, tree in _package_sources().items():
    for node in ast.walk(tree):
      if isinstance(node, ast.FunctionDef) and PICTURE_FUNCTION.search(node.name):
        found.setdefault(path, []).append(node.name)
      if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and "RAMP" in node.id:
        found.setdefault(path, []).append(node.id)
  assert found.pop("gio_ada_jax/images.py")
  assert found == {"gio_ada_jax/data/formats.py": ["_read_rgb"]}


def test_only_images_converts_resizes_and_writes_with_pil():
  """PIL is imported by images.py and, to open dataset files, by formats.py, which uses only
  Image.open (and the Image.Image type): every conversion, resize and PNG write is in images."""
  users = {}
  for path, tree in _package_sources().items():
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [getattr(node, "module", None) or ""] + [alias.name for alias in node.names]
        if any(name == "PIL" or name.startswith("PIL.") for name in names):
          users.setdefault(path, tree)
  assert sorted(users) == ["gio_ada_jax/data/formats.py", "gio_ada_jax/images.py"]
  attributes = [node for node in ast.walk(users["gio_ada_jax/data/formats.py"])
                if isinstance(node, ast.Attribute)]
  assert {a.attr for a in attributes if isinstance(a.value, ast.Name) and a.value.id == "Image"
          } == {"open", "Image"}
  assert not {a.attr for a in attributes} & {"convert", "resize", "save", "fromarray"}


def test_depth_colours_near_gives_a_log_scale_from_near_to_scale():
  got = images.depth_colours(np.asarray([[2.0, 20.0, 200.0, 2000.0, 0.5]]), scale=200.0,
                             near=2.0)
  # the same colours as the linear scale at the log positions 0, 1/2, 1, 1 (clipped), 0
  linear = images.depth_colours(np.asarray([[0.0, 0.5, 1.0, 1.0, 0.0]]))
  np.testing.assert_allclose(got.astype(int), linear.astype(int), atol=1)
  assert got[0, 0].tolist() == [252, 253, 191] and got[0, 2].tolist() == [0, 0, 4]
  for scale, near in ((0.0, None), (200.0, 0.0), (200.0, 200.0), (float("nan"), None)):
    with pytest.raises(ValueError, match=f"scale {scale} and near {near} must satisfy"):
      images.depth_colours(np.ones((2, 2)), scale=scale, near=near)


def test_contact_sheet_tiles_are_panel_tiles_with_log_depth_colours(tmp_path):
  config = procedural_config()
  config.height, config.width = 16, 40
  path = tmp_path / "sheet.png"
  procedural.contact_sheet(config, 1, str(path))
  sheet = np.asarray(Image.open(path))
  source = procedural.generate_example(config, "source", "train", 0)
  target = procedural.generate_example(config, "target", "train", 0)
  depth = lambda cm: images.depth_colours(cm / 100.0, cm > 0, scale=200.0, near=2.0)  # noqa
  palette = VKITTI_KITTI_10.palette()
  tiles = [source["image"], palette[source["label"]], depth(source["depth"]),
           target["image"], palette[target["label"]], depth(target["depth"])]
  np.testing.assert_array_equal(sheet, images.panel([tiles], gap=2))
  np.testing.assert_array_equal(sheet[:, 2 * 42:2 * 42 + 40], depth(source["depth"]))
