"""What a config must hold before a command compiles or reads anything: only the fields this
version has, settings in range, and the files it names. Each error names the field, what is
wrong and how to fix it. Every command checks its config here once, at start; the modules trust
a checked config."""

import math
import numbers
import os

from gio_ada_jax.configs import default
from gio_ada_jax.errors import ConfigError

ENCODER_INITS = ("imagenet", "random")
SKY_DEPTH_MODES = ("far", "invalid")  # data.sky_depth
# torchvision's file name for the ImageNet VGG16 weights (torchvision.models.VGG16_Weights).
VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
TORCH_HOME = "$TORCH_HOME"  # stands for torch's cache folder in model.task_net.vgg16_weights


# Whole-number fields and their smallest sensible value (what they count).
MINIMUMS = {
    "data.global_batch": (1, "images of each domain per step; the paper's is 1"),
    "train.log_every": (1, "steps between console lines"),
    "train.checkpoint_every": (1, "steps between checkpoints"),
    "train.keep_checkpoints": (1, "checkpoints kept; fewer would delete the latest one"),
    "train.image_every": (1, "steps between TensorBoard pictures"),
    "eval.per_device_batch": (1, "target images per device per evaluation step"),
    "eval.every_steps": (0, "steps between evaluations during training; 0 = none"),
    "train.mesh_data": (-1, "devices along the mesh's batch axis; -1 = all the rest"),
    "train.mesh_spatial": (1, "devices along the mesh's image-height axis"),
    "cyclegan.num_steps": (1, "CycleGAN training steps of the 'cg' variant"),
    "cyclegan.translate_batch": (1, "source images per translation batch"),
}


# Fields that name one of a few implementations, and those names: the one list. The modules that
# implement them trust a checked config (every command checks it at start).
CHOICES = {
    "data.mode": ("resize", "random_crop"),
    "train.gan_loss": ("bce", "lsgan"),
    "train.lr_schedule": ("constant", "poly"),
    "train.parallelism": ("pmap", "mesh"),
    "cyclegan.gan_loss": ("bce", "lsgan"),
    "model.generator.upsampling": ("auto", "subpixel", "dilated"),
    "model.task_net.input_norm": ("torchvision", "caffe", "none"),
    "model.d_out.kind": ("patch", "fc"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16", "float16"),
}


def _field(config, dotted: str):
  node = config
  for key in dotted.split("."):
    node = node[key]
  return node


def has_field(config, dotted: str) -> bool:
  """Whether `config` holds the field `dotted` ("a.b.c")."""
  try:
    _field(config, dotted)
  except (KeyError, AttributeError, TypeError):
    return False
  return True


def _leaves(node, prefix: str = "") -> dict:
  """{"a.b.c": value} of every leaf of a ConfigDict."""
  found = {}
  for key, value in node.items():
    found.update(_leaves(value, f"{prefix}{key}.") if hasattr(value, "items")
                 else {prefix + key: value})
  return found


def check_known_fields(config) -> None:
  """Raise naming every field the config sets that this version does not have (configs/
  default.py holds every field): a typo, or a field of an earlier version, which nothing would
  read (a config file can add fields: ConfigDict accepts them)."""
  unknown = sorted(set(_leaves(config)) - set(_leaves(default.get_config())))
  if unknown:
    raise ConfigError(
        f"the config sets {', '.join('config.' + f for f in unknown)}, which this version does "
        "not have: a typo, or a field of an earlier version, which nothing would read. Remove "
        f"{'it' if len(unknown) == 1 else 'them'}; configs/default.py lists every field with "
        "its meaning (the variant is config.variant = 'INPUT,OUTPUT').")


def training_length_problem(train_config) -> str | None:
  """What is wrong with train.num_epochs / train.num_steps (exactly one positive), or None."""
  epochs, steps = train_config.num_epochs, train_config.num_steps
  if epochs < 0 or steps < 0 or int(steps) != steps:
    return (f"train.num_epochs={epochs} and train.num_steps={steps}: the training length must "
            "be a positive number of epochs or a positive whole number of steps (the other "
            "one 0)")
  if (epochs > 0) == (steps > 0):
    return (f"train.num_epochs={epochs} and train.num_steps={steps}: give the training length "
            "once, either in epochs of the prepared source split (train.num_steps=0) or in "
            "steps (train.num_epochs=0), e.g. --config.train.num_epochs=0 "
            "--config.train.num_steps=1000")
  return None


def sky_depth_problem(sky_depth: str) -> str | None:
  """What is wrong with data.sky_depth, or None."""
  if sky_depth in SKY_DEPTH_MODES:
    return None
  return (f"data.sky_depth={sky_depth!r} is not known; choose 'far' (the far clip is the far "
          "end of the [0, 1] range, after the paper's 'the sky is always far away') or "
          "'invalid' (no depth there)")


def choice_problems(config) -> list[str]:
  """Every CHOICES field whose value is not one of its names."""
  return [f"{field}={_field(config, field)!r} is not known; choose one of {', '.join(names)}"
          for field, names in CHOICES.items() if _field(config, field) not in names]


def _is_whole_number(value) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and float(value).is_integer())


MAX_STEPS = 2**31 - 1  # the training states' step counter is an int32


def range_problems(config) -> list[str]:
  """Every MINIMUMS field that is not a whole number or is below its minimum, negative weights
  or learning rates, a NaN or infinite number, the seed, the widths and the depth range
  scored."""
  problems = []
  for field, (minimum, meaning) in MINIMUMS.items():
    value = _field(config, field)
    if not _is_whole_number(value):
      problems.append(f"{field}={value!r}: must be a whole number ({meaning})")
    elif value < minimum:
      problems.append(f"{field}={value}: must be at least {minimum} ({meaning})")
  if _field(config, "train.mesh_data") == 0:
    problems.append("train.mesh_data=0: must be -1 (all the devices the spatial axis leaves) "
                    "or at least 1")
  for field in ("train.learning_rate", "cyclegan.learning_rate"):
    if _field(config, field) <= 0:
      problems.append(f"{field}={_field(config, field)}: must be positive")
  for field in ("train.lambda_depth", "train.lambda_input", "train.lambda_output"):
    if _field(config, field) < 0:
      problems.append(f"{field}={_field(config, field)}: a loss weight cannot be negative "
                      "(0 turns the term off)")
  problems += [f"{field}={value}: must be a finite number" for field, value in
               _leaves(config).items() if isinstance(value, float) and not math.isfinite(value)
               and not field.startswith("data.procedural.")]  # checked with their ranges
  for field in ("train.num_steps", "cyclegan.num_steps"):
    if _is_whole_number(_field(config, field)) and _field(config, field) > MAX_STEPS:
      problems.append(f"{field}={_field(config, field)}: must be at most 2**31 - 1 = "
                      f"{MAX_STEPS} (the step counter, and the learning-rate schedule that "
                      "reads it, are 32-bit integers)")
  seed = _field(config, "seed")
  if not (_is_whole_number(seed) and 0 <= seed < 2**31):
    problems.append(f"seed={seed!r}: must be a whole number from 0 to 2**31 - 1 (the two "
                    "domains' data orders use 2 * seed and 2 * seed + 1, seeds of 32 bits)")
  if not _field(config, "model.width") > 0:
    problems.append(f"model.width={_field(config, 'model.width')}: must be positive (the "
                    "channel multiplier of every network; 1 is the default widths)")
  min_m, max_m = _field(config, "eval.depth_min_m"), _field(config, "eval.depth_max_m")
  if not min_m > 0:
    problems.append(f"eval.depth_min_m={min_m}: must be positive (true depths below it are not "
                    "scored; the log metrics need depths above 0)")
  if max_m != 0 and not max_m > min_m:
    problems.append(f"eval.depth_max_m={max_m}: must be 0 (no cap) or above "
                    f"eval.depth_min_m={min_m}")
  if (_field(config, "train.parallelism") == "pmap"
      and (_field(config, "train.mesh_data"), _field(config, "train.mesh_spatial")) != (-1, 1)):
    problems.append(f"train.mesh_data={_field(config, 'train.mesh_data')} and "
                    f"train.mesh_spatial={_field(config, 'train.mesh_spatial')} shape the mesh "
                    "of train.parallelism='mesh', but train.parallelism is 'pmap', which would "
                    "ignore them; set --config.train.parallelism=mesh, or leave them at -1 and 1")
  return problems


# The procedural benchmark (gio_ada_jax/configs/procedural.py): the rule of each field, by its
# name or the end of its name, as (test of every value, what the values must be).
_POSITIVE = (lambda v: v > 0, "positive")
_NOT_NEGATIVE = (lambda v: v >= 0, "at least 0")
_FRACTION = (lambda v: 0 <= v <= 1, "between 0 and 1")
_COLOUR = (lambda v: 0 <= v <= 255, "between 0 and 255 (display RGB)")
_ANY = (lambda v: True, "")
_PROCEDURAL_RULES = (  # the first that matches a field's path applies
    ("camera.horizontal_fov_deg", (lambda v: 0 < v < 180, "between 0 and 180 degrees")),
    ("camera.horizon_row_fraction", (lambda v: 0 < v < 1, "between 0 and 1")),
    ("seed", _NOT_NEGATIVE), ("target_scene_offset", _NOT_NEGATIVE),
    ("road_curvature", _NOT_NEGATIVE), ("sun_direction", _ANY),
    ("_probability", _FRACTION), ("_range_m", _ANY), ("jitter_m", _NOT_NEGATIVE),
    ("_gap_m", _NOT_NEGATIVE), ("setback_m", _NOT_NEGATIVE), ("_m", _POSITIVE),
    ("_deg", _POSITIVE), ("height", _POSITIVE), ("width", _POSITIVE), ("num_", _POSITIVE),
    ("palette", _COLOUR), ("_rgb", _COLOUR), ("window_contrast", _FRACTION),
    ("vehicle_darkening", _FRACTION), ("vignetting", _FRACTION), ("white_balance", _POSITIVE),
    ("gamma", _POSITIVE), ("", _NOT_NEGATIVE),  # jitters, amplitudes, light, blur, noise
)
# Scene fields that count things: (lo, hi) whole numbers.
_PROCEDURAL_COUNTS = ("trees_per_side", "bushes", "treeline_blobs", "street_lamps", "signs",
                      "traffic_lights", "ego_lane_vehicles", "oncoming_vehicles",
                      "parked_vehicles_per_strip")


def _numbers(value) -> list:
  """Every number in a field's value (nested tuples flattened); [None] for a non-number."""
  if isinstance(value, (tuple, list)):
    return [n for item in value for n in _numbers(item)]
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    return [value]
  return [None]


def _shape(value) -> list[int]:
  """A tuple's nested lengths (a palette: [10, 3, 3, ...]); [] for a number."""
  if isinstance(value, (tuple, list)):
    return [len(value)] + [n for item in value for n in _shape(item)]
  return []


def procedural_problems(procedural) -> list[str]:
  """What is wrong with data.procedural's values: ranges, (lo, hi) order, and the number of
  entries of a tuple (one per class, an RGB triple, a pair), which is its default's."""
  problems = []
  defaults = _leaves(default.get_config().data.procedural.copy_and_resolve_references())
  for path, value in _leaves(procedural.copy_and_resolve_references()).items():
    field, name = f"data.procedural.{path}", path.rsplit(".", 1)[-1]
    values = _numbers(value)
    test, meaning = next(rule for end, rule in _PROCEDURAL_RULES
                         if path == end or path.endswith(end) or name.startswith(end))
    if None in values or not all(math.isfinite(v) for v in values):
      problems.append(f"{field}={value!r}: must hold finite numbers")
    elif not all(test(v) for v in values):
      problems.append(f"{field}={value!r}: every value must be {meaning}")
    elif name in _PROCEDURAL_COUNTS and not all(float(v).is_integer() for v in values):
      problems.append(f"{field}={value!r}: counts are whole numbers")
    elif (path.split(".")[0] in ("scene", "target_scene") and isinstance(value, (tuple, list))
          and len(values) == 2 and values[0] > values[1]):
      problems.append(f"{field}={value!r}: a (lo, hi) range needs lo <= hi")
    elif _shape(value) != _shape(defaults.get(path, value)):
      problems.append(f"{field}={value!r}: takes {_shape(defaults[path])[0]} entries of the "
                      "default's shape (one per class, an RGB triple or a (lo, hi) pair; "
                      "gio_ada_jax/configs/procedural.py)")
  return problems


def torch_cache_dir() -> str:
  """Where torch caches downloads: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else
  ~/.cache/torch (torch.hub.get_dir's rule)."""
  if os.environ.get("TORCH_HOME"):
    return os.path.expanduser(os.environ["TORCH_HOME"])
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return os.path.expanduser(os.path.join(cache, "torch"))


def vgg16_weights_path(task_net_config) -> str | None:
  """The ImageNet VGG16 file the encoder starts from; None for model.task_net.encoder_init
  'random'. Raises ConfigError, with how to get the file or opt out, when it is missing."""
  init = task_net_config.encoder_init
  if init not in ENCODER_INITS:
    raise ConfigError(f"model.task_net.encoder_init={init!r} is not known; choose 'imagenet' "
                      "(the paper) or 'random'.")
  if init == "random":
    return None
  configured = task_net_config.vgg16_weights
  path = os.path.expanduser(configured.replace(TORCH_HOME, torch_cache_dir(), 1))
  if not os.path.isfile(path):
    raise ConfigError(
        f"model.task_net.encoder_init='imagenet' (the paper initialises the task net with "
        f"ImageNet weights) needs torchvision's VGG16 file, but {path} "
        f"(model.task_net.vgg16_weights={configured!r}) does not exist. Get it with "
        f"`python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"` "
        f"(it lands in {torch_cache_dir()}/hub/checkpoints/) or download {VGG16_URL} and pass "
        "--config.model.task_net.vgg16_weights=PATH. Nothing is downloaded at run time. To "
        "train from random initialisation on purpose (not the paper's setting), pass "
        "--config.model.task_net.encoder_init=random.")
  return path


def check_config(config) -> None:
  """The settings a training run checks before it reads data or compiles (the VGG16 file:
  vgg16_weights_path); one error names every bad field."""
  check_known_fields(config)
  problems = ([training_length_problem(config.train), sky_depth_problem(config.data.sky_depth)]
              + choice_problems(config) + range_problems(config)
              + (procedural_problems(config.data.procedural)
                 if has_field(config, "data.procedural") else []))
  problems = [p for p in problems if p]
  if problems:
    raise ConfigError("the config cannot run: " + "; ".join(problems) + ".")
