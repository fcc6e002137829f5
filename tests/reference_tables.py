"""The datasets' class tables, typed out by hand from their documentation, for the tests.

Nothing here is imported from gio_ada_jax: tests compare the library's tables (labels.py) and
what its readers produce against these. Sources (summarised in /work/shared/reference/
datasets.md, where each is cited):
- Cityscapes: mcordts/cityscapesScripts, cityscapesscripts/helpers/labels.py (`labels`).
- SYNTHIA-RAND-CITYSCAPES: the README.txt of the package (class ids 0..22); its 16 classes
  and their ids as in valeoai/DADA dada/dataset/synthia.py and cityscapes_list/info16class.json.
- Virtual KITTI 1.3.1: `*_scenegt_rgb_encoding.txt` static colours; 2.0.3: `colors.txt`.
- GIO-Ada (CVPR 2019) Table 1 columns for the 10 Virtual KITTI <-> KITTI classes; Table 4 for
  the 16 SYNTHIA <-> Cityscapes classes and mIoU* (13 classes).
"""

import numpy as np

IGNORE = 255

# cityscapesScripts labels.py: (name, labelId, trainId, colour), every label, in file order.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
    ("license plate", -1, -1, (0, 0, 142)),
)
CITYSCAPES_MAX_LABEL_ID = 33  # bicycle: the largest id a gtFine labelIds PNG holds
# The 19 trainIds in order (labels.py's trainIds 0..18).
CITYSCAPES_19_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle")
# labelId -> trainId of the 19 (labels.py; every other id -> 255).
CITYSCAPES_LABEL_ID_TO_19 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                             23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17,
                             33: 18}
# Colour of each class name (labels.py's `color`), the palette of every label space.
CITYSCAPES_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
    "wall": (102, 102, 156), "fence": (190, 153, 153), "pole": (153, 153, 153),
    "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "sky": (70, 130, 180),
    "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142), "truck": (0, 0, 70),
    "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32)}

# GIO-Ada Table 4 (DADA info16class.json, "motocycle" spelt as Cityscapes spells it).
SYNTHIA_CITYSCAPES_16_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle")
# mIoU* of Table 4: the 16 without wall (3), fence (4) and pole (5).
MIOU13_CLASSES = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
# Cityscapes labelId -> the 16 (DADA info16class.json label2train; terrain 22, truck 27,
# train 31 and the voids -> 255).
CITYSCAPES_LABEL_ID_TO_16 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8,
                             23: 9, 24: 10, 25: 11, 26: 12, 28: 13, 32: 14, 33: 15}

# SYNTHIA-RAND-CITYSCAPES README.txt: class id -> name (0..22).
SYNTHIA_CLASSES = {
    0: "void", 1: "sky", 2: "Building", 3: "Road", 4: "Sidewalk", 5: "Fence", 6: "Vegetation",
    7: "Pole", 8: "Car", 9: "Traffic sign", 10: "Pedestrian", 11: "Bicycle", 12: "Motorcycle",
    13: "Parking-slot", 14: "Road-work", 15: "Traffic light", 16: "Terrain", 17: "Rider",
    18: "Truck", 19: "Bus", 20: "Train", 21: "Wall", 22: "Lanemarking"}
SYNTHIA_MAX_ID = 22
# SYNTHIA class id -> the 16 (DADA dada/dataset/synthia.py; 0, 13, 14, 16, 18, 20, 22 -> 255).
SYNTHIA_ID_TO_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10,
                    17: 11, 8: 12, 19: 13, 12: 14, 11: 15}

# GIO-Ada Table 1: road, building, pole, traffic light, traffic sign, vegetation, terrain, sky,
# car, truck.
VKITTI_KITTI_10_NAMES = (
    "road", "building", "pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky",
    "car", "truck")
# KITTI semantics (Cityscapes labelIds) -> the 10 (datasets.md sec. 5; polegroup 18, guard rail
# 14, caravan 29, trailer 30 and every other id -> 255).
KITTI_LABEL_ID_TO_10 = {7: 0, 11: 1, 17: 2, 19: 3, 20: 4, 21: 5, 22: 6, 23: 7, 26: 8, 27: 9}
# Virtual KITTI class name (1.3.1 and 2.0.3) -> the 10: Tree and Vegetation are vegetation, Van
# is car (Cityscapes' car includes vans), GuardRail, Misc and Undefined have no column.
VKITTI_NAME_TO_10 = {
    "Road": 0, "Building": 1, "Pole": 2, "TrafficLight": 3, "TrafficSign": 4, "Tree": 5,
    "Vegetation": 5, "Terrain": 6, "Sky": 7, "Car": 8, "Van": 8, "Truck": 9,
    "GuardRail": IGNORE, "Misc": IGNORE, "Undefined": IGNORE}

# Static class colours of Virtual KITTI 1.3.1 `*_scenegt_rgb_encoding.txt` (Car and Van have a
# colour per instance, `Car:<trackId> r g b`, different in every file).
VKITTI_131_STATIC_COLOURS = {
    "Terrain": (210, 0, 200), "Sky": (90, 200, 255), "Tree": (0, 199, 0),
    "Vegetation": (90, 240, 0), "Building": (140, 140, 140), "Road": (100, 60, 100),
    "GuardRail": (255, 100, 255), "TrafficSign": (255, 255, 0), "TrafficLight": (200, 200, 0),
    "Pole": (255, 130, 0), "Misc": (80, 80, 80), "Truck": (160, 60, 60),
}
# Virtual KITTI 2.0.3 colors.txt (one colour per class).
VKITTI_203_COLOURS = {
    "Terrain": (210, 0, 200), "Sky": (90, 200, 255), "Tree": (0, 199, 0),
    "Vegetation": (90, 240, 0), "Building": (140, 140, 140), "Road": (100, 60, 100),
    "GuardRail": (250, 100, 255), "TrafficSign": (255, 255, 0), "TrafficLight": (200, 200, 0),
    "Pole": (255, 130, 0), "Misc": (80, 80, 80), "Truck": (160, 60, 60), "Car": (255, 127, 80),
    "Van": (0, 139, 139), "Undefined": (0, 0, 0),
}


def lut(mapping: dict[int, int]) -> np.ndarray:
  """A 256-entry uint8 table: `mapping[id]` where given, 255 elsewhere."""
  return np.asarray([mapping.get(i, IGNORE) for i in range(256)], np.uint8)
