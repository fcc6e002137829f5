"""train/summaries.py's event files: what TensorBoard reads back, written without TensorFlow."""

import io
import subprocess
import sys

import numpy as np
from PIL import Image

WRITE = """
import sys
import numpy as np
from gio_ada_jax.train import summaries
writer = summaries.SummaryWriter(sys.argv[1])
writer.scalar("train/loss_seg", 2.5, 3)
writer.scalar("train/loss_seg", 0.125, 7)
pictures = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 3)).astype(np.uint8)
writer.image("pictures/target", pictures, 7, max_outputs=2)
writer.close()
assert "tensorflow" not in sys.modules, "the writer imported TensorFlow"
"""


def test_scalars_and_pictures_read_back_in_tensorboard_and_no_tensorflow_is_imported(tmp_path):
  result = subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], capture_output=True,
                          text=True, check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert sorted(events.Tags()["tensors"]) == ["pictures/target", "train/loss_seg"]
  scalars = events.Tensors("train/loss_seg")
  assert [(e.step, e.tensor_proto.float_val[0]) for e in scalars] == [(3, 2.5), (7, 0.125)]
  assert events.SummaryMetadata("train/loss_seg").plugin_data.plugin_name == "scalars"
  [picture] = events.Tensors("pictures/target")
  assert picture.step == 7
  assert events.SummaryMetadata("pictures/target").plugin_data.plugin_name == "images"
  width, height, *pngs = picture.tensor_proto.string_val
  assert (int(width), int(height), len(pngs)) == (4, 5, 2)  # max_outputs of the 3
  expected = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 3)).astype(np.uint8)
  for png, pixels in zip(pngs, expected):
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)
