"""Every class table of the project: benchmark label spaces, names, colours, raw-encoding LUTs.

Labels inside the project are uint8 class indices of a benchmark's label space, 255 = ignore.
"""

import dataclasses

import numpy as np

IGNORE_LABEL = 255


@dataclasses.dataclass(frozen=True)
class LabelSpace:
  """A benchmark's classes in the order of the paper's tables, with a colour each for pictures."""

  name: str
  class_names: tuple[str, ...]
  colours: tuple[tuple[int, int, int], ...]  # RGB, Cityscapes palette

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def palette(self) -> np.ndarray:
    """[256, 3] uint8 colour lookup; ignore (and unused ids) are black."""
    table = np.zeros((256, 3), np.uint8)
    table[:self.num_classes] = np.asarray(self.colours, np.uint8)
    return table


# Virtual KITTI <-> KITTI, the paper's Table 1 column order (Cityscapes colours).
VKITTI_KITTI_10 = LabelSpace(
    name="vkitti_kitti_10",
    class_names=("road", "building", "pole", "traffic light", "traffic sign", "vegetation",
                 "terrain", "sky", "car", "truck"),
    colours=((128, 64, 128), (70, 70, 70), (153, 153, 153), (250, 170, 30), (220, 220, 0),
             (107, 142, 35), (152, 251, 152), (70, 130, 180), (0, 0, 142), (0, 0, 70)),
)
