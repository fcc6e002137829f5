"""The shared helpers that replaced per-module copies read and resize as the copies did."""

import subprocess
import sys

import numpy as np
from PIL import Image

from gio_ada_jax.data import builders, pipeline
from gio_ada_jax.eval import pictures
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


def test_panel_tiles_are_resized_by_the_pipeline_resize():
  rng = np.random.default_rng(1)
  big, small = (rng.integers(0, 256, shape, np.uint8) for shape in ((6, 8, 3), (3, 4, 3)))
  out = pictures.panel([[big, small]])
  np.testing.assert_array_equal(out[:, :8], big)
  np.testing.assert_array_equal(out[:, 8 + pictures.PANEL_GAP:],
                                pipeline.resize_image(small, 6, 8))


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
