"""The input pipeline: prepared datasets -> device-shaped batches, deterministic and resumable.

grain reads the ArrayRecord shards with random access. Each process reads a disjoint shard
(`process_index::process_count`), shuffled by seed and reshuffled every epoch; one random draw per
example decides the horizontal flip of image, label and depth together. Images come out in
[-1, 1], labels int32 (255 = ignore), depth in [0, 1] (divided by the dataset-wide maximum) with
a validity mask; the far clip (the sky) is depth 1, the far end of the range, unless
`data.sky_depth = "invalid"`. Batches are shaped [local_devices, per_device_batch, ...], where
per_device_batch is data.global_batch split over all processes' devices.

Only numpy, PIL (through images.resize_image), grain and TFDS's reader are used here; TensorFlow
is not imported.
"""

import dataclasses
import json
import math
import pathlib
import re
from typing import Any, Iterator

import grain
from absl import logging
import numpy as np

from gio_ada_jax.data.formats import FAR_DEPTH_CM
from gio_ada_jax.data.labels import IGNORE_LABEL
from gio_ada_jax.errors import ConfigError, UserError
from gio_ada_jax.images import resize_image

METADATA_DEPTH_MAX = "depth_max_cm"  # written by builders.py, the far clip included
METADATA_DEPTH_MAX_BELOW_FAR = "depth_max_below_far_cm"  # written by builders.py
METADATA_PROCEDURAL_CONFIG = "procedural_config"  # written by builders.py
METADATA_SPLIT_STATS = "split_stats"  # written by builders.py
METADATA_TRANSLATED_BY = "translated_by"  # written by builders.py ('cg': which generator)
# The prepared data's version. 2.0.0: the far clip (the sky) is stored as FAR_DEPTH_CM in every
# dataset with depth; 1.0.0 stored it as 0 (invalid) and is refused with a message to re-prepare.
VERSION_DIR = "2.0.0"
# TFDS's temporary folder of a dataset version (tensorflow_datasets.core.utils.file_utils.
# _get_incomplete_dir: "incomplete." + 6 random upper-case letters or digits + "_" + version).
UNFINISHED_COPY = r"incomplete\.[A-Z0-9]{6}_"
# The TFDS feature classes builders.py writes into a prepared dataset's features.json. TFDS
# imports whatever module that file names, so nothing else is accepted.
FEATURE_CLASSES = frozenset(
    f"tensorflow_datasets.core.features.{name}" for name in (
        "features_dict.FeaturesDict", "tensor_feature.Tensor", "text_feature.Text",
        "image_feature.Image"))


class DatasetNotPrepared(UserError, FileNotFoundError):
  """The prepared folder of a dataset is missing."""


class DatasetUnusable(UserError, ValueError):
  """A prepared dataset that cannot be read as it is (rendered from another config, foreign
  feature classes, a missing split or statistics); the message says how to prepare it again."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How raw examples become network inputs."""

  height: int
  width: int
  mode: str = "resize"  # "resize" to height x width, or "random_crop" a height x width window
  random_flip: bool = True
  depth_max_cm: float = 0.0  # the depth that normalises to 1 (depth_scale_cm); 0: no depth
  # Whether pixels at the far clip (the sky) are depth (1 after normalisation) or invalid.
  far_depth_valid: bool = True


def dataset_dir(data_dir: str, name: str) -> pathlib.Path:
  """Folder of a prepared dataset: DATA_DIR/NAME/VERSION_DIR (NAME may be 'procedural/target')."""
  return pathlib.Path(data_dir).expanduser() / name / VERSION_DIR


def unfinished_copies(data_path) -> list[pathlib.Path]:
  """TFDS's temporary folders of the dataset version `data_path` (DATA_DIR/NAME/VERSION) left
  by a writer that was killed: only folders so named, beside `data_path`."""
  parent, version = pathlib.Path(data_path).parent, pathlib.Path(data_path).name
  if not parent.is_dir():
    return []
  name = re.compile(UNFINISHED_COPY + re.escape(version))
  return sorted(p for p in parent.iterdir()
                if name.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def _feature_classes(node) -> set[str]:
  """Every "pythonClassName" in a features.json tree."""
  if isinstance(node, dict):
    found = {node["pythonClassName"]} if isinstance(node.get("pythonClassName"), str) else set()
    return found.union(*(_feature_classes(v) for v in node.values()))
  if isinstance(node, list):
    return set().union(*(_feature_classes(v) for v in node))
  return set()


def prepared_builder(path):
  """The TFDS builder of the prepared dataset folder `path`, after checking that its
  features.json names only the feature classes this package writes (FEATURE_CLASSES)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features_file = pathlib.Path(path) / "features.json"
  try:
    foreign = _feature_classes(json.loads(features_file.read_text())) - FEATURE_CLASSES
  except (OSError, ValueError) as e:
    raise DatasetUnusable(f"{features_file}: cannot be read as this package's features "
                          f"({e}); re-run prepare with --overwrite.") from None
  if foreign:
    raise DatasetUnusable(
        f"{features_file} names feature classes this package does not write "
        f"({', '.join(sorted(foreign))}); TFDS would import them, so the dataset is refused. "
        "Re-run prepare with --overwrite into a folder you trust.")
  return tfds.builder_from_directory(str(path))


def open_split(data_dir: str, name: str, split: str):
  """(random-access source of `split`, DatasetInfo) of a prepared dataset."""
  path = dataset_dir(data_dir, name)
  if not (path / "dataset_info.json").exists():
    older = sorted(p.parent.name for p in path.parent.glob("*/dataset_info.json")
                   if not p.parent.name.startswith("incomplete."))
    if older:
      raise DatasetNotPrepared(
          f"{path.parent}: dataset {name!r} was prepared in data version {', '.join(older)}, "
          f"but this gio_ada_jax reads version {VERSION_DIR} (since 2.0.0 the sky's depth is "
          "the far clip instead of invalid). Re-run `python -m gio_ada_jax.data.prepare "
          f"--dataset {name.split('/')[0]} --data_dir {data_dir}` (with --manual_dir for the "
          "official datasets); the old version's folder can then be deleted.")
    unfinished = ", ".join(p.name for p in unfinished_copies(path))
    left = f"; a prepare that is running or was interrupted left {unfinished}" if unfinished else ""
    raise DatasetNotPrepared(
        f"{path}: dataset {name!r} is not prepared (no dataset_info.json{left}). "
        f"Run `python -m gio_ada_jax.data.prepare --dataset {name.split('/')[0]} --data_dir "
        f"{data_dir}` (with --manual_dir for the official datasets).")
  builder = prepared_builder(path)
  if split not in builder.info.splits:
    raise DatasetUnusable(f"{path}: dataset {name!r} has no split {split!r}; it has "
                          f"{sorted(builder.info.splits)}.")
  return builder.as_data_source(split=split), builder.info


def depth_scale_cm(info, sky_depth: str) -> float:
  """The depth that normalises to 1, recorded at prepare time (0 without depth): the dataset-wide
  maximum, which is the far clip wherever the sky is seen ("far"), or the maximum below the far
  clip ("invalid")."""
  key = METADATA_DEPTH_MAX if sky_depth == "far" else METADATA_DEPTH_MAX_BELOW_FAR
  return float((info.metadata or {}).get(key, 0))


def _leaf_fields(tree, prefix: str = "") -> dict[str, Any]:
  """{"a.b": value} of every leaf of a JSON dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_leaf_fields(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _stored_procedural_config(info) -> dict[str, Any]:
  """The procedural config a prepared domain was rendered from, as JSON ({} if none is stored)."""
  stored = (info.metadata or {}).get(METADATA_PROCEDURAL_CONFIG)
  return dict(stored) if isinstance(stored, dict) else {}


def check_procedural_config(info, procedural_config, data_dir: str | None = None) -> None:
  """Raise if a prepared procedural domain was rendered from another config than this one
  (`data_dir`: where it was read, for the command that prepares it again)."""
  stored = _leaf_fields(_stored_procedural_config(info))
  current = _leaf_fields(json.loads(procedural_config.to_json()))
  if stored != current:
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    where = f" --data_dir {data_dir}" if data_dir else ""
    raise DatasetUnusable(
        f"the prepared procedural data was rendered from another config.data.procedural "
        f"(fields differing: {changed}); re-run `python -m gio_ada_jax.data.prepare "
        f"--dataset procedural --overwrite{where}` with this config.")


def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  # Pixel-centre nearest neighbour, as PIL's NEAREST.
  return np.minimum(((np.arange(out_size) + 0.5) * in_size / out_size).astype(np.int64),
                    in_size - 1)


def _resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
  rows = _nearest_indices(array.shape[0], height)
  cols = _nearest_indices(array.shape[1], width)
  return array[rows][:, cols]


def preprocess(example: dict[str, Any], spec: Preprocessing,
               rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """One raw example -> network inputs; `rng` None means evaluation (no randomness)."""
  image, label = example["image"], example["label"][..., 0]
  depth = example.get("depth")
  height, width = image.shape[:2]
  if spec.mode == "random_crop" and (height, width) != (spec.height, spec.width):
    if height < spec.height or width < spec.width:
      raise DatasetUnusable(f"example {example.get('id')!r} is {height}x{width}, smaller than "
                            f"the crop {spec.height}x{spec.width}; use data.mode='resize'.")
    top = int(rng.integers(height - spec.height + 1)) if rng else (height - spec.height) // 2
    left = int(rng.integers(width - spec.width + 1)) if rng else (width - spec.width) // 2
    window = (slice(top, top + spec.height), slice(left, left + spec.width))
    image, label = image[window], label[window]
    depth = depth[window] if depth is not None else None
  elif spec.mode == "resize":
    image = resize_image(image, spec.height, spec.width)
    label = _resize_nearest(label, spec.height, spec.width)
    depth = _resize_nearest(depth, spec.height, spec.width) if depth is not None else None

  if rng is not None and spec.random_flip and rng.random() < 0.5:
    # One draw flips image, label and depth together.
    image, label = image[:, ::-1], label[:, ::-1]
    depth = depth[:, ::-1] if depth is not None else None

  out = {"image": normalise_image(image), "label": label.astype(np.int32)}
  out.update(_depth_inputs(depth, spec, (spec.height, spec.width)))
  return out


def normalise_image(image: np.ndarray) -> np.ndarray:
  """uint8 RGB -> float32 in [-1, 1], the range every network takes."""
  return image.astype(np.float32) / 127.5 - 1.0


def _depth_inputs(depth: np.ndarray | None, spec: Preprocessing,
                  size: tuple[int, int]) -> dict[str, np.ndarray]:
  """Depth in [0, 1] (divided by spec.depth_max_cm) and its validity mask, [H, W, 1]; invalid
  pixels (0, and the far clip unless spec.far_depth_valid) hold 0."""
  if depth is None:
    zeros = np.zeros(size + (1,), np.float32)
    return {"depth": zeros, "depth_mask": zeros.copy()}
  valid = depth > 0
  if not spec.far_depth_valid:
    valid &= depth != FAR_DEPTH_CM
  scale = 1.0 / spec.depth_max_cm if spec.depth_max_cm > 0 else 0.0
  return {"depth": (depth.astype(np.float32) * np.float32(scale) * valid)[..., None],
          "depth_mask": valid.astype(np.float32)[..., None]}


def preprocess_at_label_resolution(example: dict[str, Any], spec: Preprocessing,
                                   label_size: tuple[int, int]) -> dict[str, np.ndarray]:
  """Evaluation inputs: the image resized for the network, label and depth left at their own
  resolution and padded (ignore, invalid) to `label_size`, with that resolution in `label_size`.

  AdaptSegNet's and ADVENT's scripts score predictions upsampled to the ground truth's own
  resolution (the paper does not say how it scores); the
  padding gives every example of a split the same array shape.
  """
  label, depth = example["label"][..., 0], example.get("depth")
  height, width = label.shape
  if height > label_size[0] or width > label_size[1]:
    raise DatasetUnusable(
        f"example {example.get('id')!r}: its label is {height}x{width}, larger than the "
        f"split's recorded maximum {label_size[0]}x{label_size[1]}; re-prepare the dataset "
        "with --overwrite.")
  padded_label = np.full(label_size, IGNORE_LABEL, np.int32)
  padded_label[:height, :width] = label
  out = {"image": normalise_image(resize_image(example["image"], spec.height, spec.width)),
         "label": padded_label, "label_size": np.asarray([height, width], np.int32)}
  for key, value in _depth_inputs(depth, spec, (height, width)).items():
    out[key] = np.zeros(label_size + (1,), np.float32)
    out[key][:height, :width] = value
  return out


def split_image_sizes(info, split: str) -> list[tuple[int, int]]:
  """Every (height, width) of `split`'s images, as recorded at prepare time ([] if none)."""
  stats = ((info.metadata or {}).get(METADATA_SPLIT_STATS) or {}).get(split) or {}
  return [tuple(int(v) for v in key.split("x")) for key in stats.get("image_sizes") or {}]


def split_label_size(info, split: str) -> tuple[int, int]:
  """The largest label height and width of `split`, from the sizes recorded at prepare time."""
  sizes = split_image_sizes(info, split)
  if not sizes:
    raise DatasetUnusable(f"dataset {info.name!r}: no image sizes of split {split!r} in its "
                          "metadata; re-prepare it with `python -m gio_ada_jax.data.prepare "
                          "... --overwrite`.")
  return max(h for h, _ in sizes), max(w for _, w in sizes)


def _to_device_shape(batch: dict[str, np.ndarray], local_devices: int) -> dict[str, np.ndarray]:
  return {k: v.reshape((local_devices, -1) + v.shape[1:]) for k, v in batch.items()}


def _process_layout(local_devices, process_index, process_count) -> tuple[int, int, int]:
  """JAX's own device and process layout wherever the caller gives none."""
  import jax  # pylint: disable=g-import-not-at-top
  return (jax.local_device_count() if local_devices is None else local_devices,
          jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def train_dataset(source, spec: Preprocessing, *, seed: int, per_device_batch: int,
                  local_devices: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, threads: int,
                  buffer_batches: int) -> grain.IterDataset:
  """Endless shuffled batches [local_devices, per_device_batch, ...] of this process's shard.

  Device and process counts default to JAX's. `threads` read and preprocess batches ahead, at
  most `buffer_batches` of them (config: `data.read_threads`, `data.read_buffer_batches`;
  grain's own default buffer, 500 batches, would hold gigabytes at Cityscapes' size). Its
  iterator has `get_state()` / `set_state()` for exact resume.
  """
  local_devices, process_index, process_count = _process_layout(
      local_devices, process_index, process_count)
  shard = grain.MapDataset.source(source)[process_index::process_count]
  if len(shard) == 0:
    raise DatasetUnusable(f"process {process_index} of {process_count} has no examples to read.")
  dataset = shard.shuffle(seed=seed).repeat()
  dataset = dataset.random_map(lambda ex, rng: preprocess(ex, spec, rng), seed=seed)
  dataset = dataset.batch(per_device_batch * local_devices, drop_remainder=True)
  dataset = dataset.map(lambda batch: _to_device_shape(batch, local_devices))
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                   prefetch_buffer_size=buffer_batches))


class UnpairedIterator:
  """Source and target batches drawn independently (unpaired), with one saveable state.

  The state records the layout it was taken under (global batch, process count) beside each
  domain's position, so a run resumed with another global batch continues at the same image
  of each domain (the position is counted in images, not batches).
  """

  def __init__(self, source: grain.IterDataset, target: grain.IterDataset, *,
               global_batch: int, process_count: int):
    self._iterators = {"source": iter(source), "target": iter(target)}
    self._layout = {"global_batch": global_batch, "process_count": process_count}

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, dict[str, np.ndarray]]:
    return {name: next(it) for name, it in self._iterators.items()}

  def get_state(self) -> dict[str, Any]:
    return {**{name: it.get_state() for name, it in self._iterators.items()}, **self._layout}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continue from `state` (get_state's), also when it was taken at another global batch."""
    for name, it in self._iterators.items():
      it.set_state(_rebatched_position(state[name], state.get("global_batch"),
                                       self._layout["global_batch"], name))
    old_processes = state.get("process_count", self._layout["process_count"])
    if old_processes != self._layout["process_count"]:
      logging.warning(
          "Resumed on %d processes, saved on %d: each process now reads another shard of the "
          "data, so the remaining images come in another order than in an uninterrupted run "
          "(the position in the epoch is kept).", self._layout["process_count"], old_processes)


def _rebatched_position(domain_state: dict[str, Any], old_global_batch: int | None,
                        global_batch: int, domain: str) -> dict[str, Any]:
  """A grain iterator state counting batches of `old_global_batch` images, recounted in
  batches of `global_batch` (the same images read so far)."""
  if old_global_batch is None or old_global_batch == global_batch:
    return domain_state  # saved before the layout was recorded, or unchanged
  images = domain_state["next_index"] * old_global_batch
  if images % global_batch:
    raise ConfigError(
        f"the checkpoint's {domain} position is {images} images ({domain_state['next_index']} "
        f"batches of data.global_batch={old_global_batch}), not a whole number of batches of "
        f"data.global_batch={global_batch}; resume with a global batch that divides {images} "
        f"(e.g. {old_global_batch}), or start a new workdir.")
  return {**domain_state, "next_index": images // global_batch}


def eval_batches(source, spec: Preprocessing, *, per_device_batch: int,
                 label_size: tuple[int, int] | None = None, local_devices: int | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """The whole split once, in order: every process gets the same number of batches.

  The last partial batches are padded with zeros and `valid` = 0, so nothing is dropped and
  padded slots can be masked out of the metrics. `index` holds each slot's position in the
  split (-1 for padding). With `label_size`, labels and depth stay at their own resolution
  (`preprocess_at_label_resolution`); otherwise everything is resized to the input size.
  """
  local_devices, process_index, process_count = _process_layout(
      local_devices, process_index, process_count)
  num_examples = len(source)
  batch_size = per_device_batch * local_devices
  per_process = math.ceil(num_examples / process_count)
  num_batches = math.ceil(per_process / batch_size)
  indices = list(range(process_index, num_examples, process_count))

  def prepared(i):
    if label_size is None:
      return preprocess(source[i], spec, None)
    return preprocess_at_label_resolution(source[i], spec, label_size)

  for b in range(num_batches):
    chunk = indices[b * batch_size:(b + 1) * batch_size]
    examples = [prepared(i) for i in chunk]
    template = examples[0] if examples else prepared(0)
    batch = {k: np.zeros((batch_size,) + v.shape, v.dtype) for k, v in template.items()}
    batch["label"][:] = IGNORE_LABEL
    for slot, example in enumerate(examples):
      for k, v in example.items():
        batch[k][slot] = v
    batch["valid"] = (np.arange(batch_size) < len(examples)).astype(np.float32)
    batch["index"] = np.full(batch_size, -1, np.int32)
    batch["index"][:len(chunk)] = chunk
    yield _to_device_shape(batch, local_devices)


def _spec(data_config, info, train: bool) -> Preprocessing:
  # Evaluation scores measured depth only: the far clip is a stand-in, not a distance.
  return Preprocessing(data_config.height, data_config.width,
                       mode=data_config.mode if train else "resize",
                       random_flip=data_config.random_flip and train,
                       depth_max_cm=depth_scale_cm(info, data_config.sky_depth),
                       far_depth_valid=train and data_config.sky_depth == "far")


def source_data_dir(data_config) -> str:
  """Where the prepared source is: data.source_data_dir (the 'cg' translated copy) or
  data.data_dir."""
  return data_config.source_data_dir or data_config.data_dir


def _open_checked(data_config, name: str, split: str, data_dir: str | None = None):
  data_dir = data_dir or data_config.data_dir
  source, info = open_split(data_dir, name, split)
  if name.startswith("procedural/"):
    try:
      check_procedural_config(info, data_config.procedural, data_dir)
    except DatasetUnusable as e:
      raise DatasetUnusable(f"{dataset_dir(data_dir, name)}: {e}") from None
  return source, info


def open_source_split(data_config, split: str):
  """(random-access source, DatasetInfo) of data.source's `split` where training reads it:
  data.source_data_dir (e.g. the 'cg' translated copy) or else data.data_dir."""
  root = data_config.source_data_dir
  if not root:
    return _open_checked(data_config, data_config.source, split)
  try:
    return _open_checked(data_config, data_config.source, split, root)
  except DatasetNotPrepared as e:
    name = data_config.source
    raise DatasetNotPrepared(
        f"data.source_data_dir={root!r} holds no {name!r} of data version {VERSION_DIR} "
        f"({dataset_dir(root, name)}). A translated copy is written there by `python -m "
        f"gio_ada_jax.cyclegan.translate --config ... --output_dir {root}`, a prepared one by "
        f"`python -m gio_ada_jax.data.prepare --dataset {name.split('/')[0]} --data_dir {root}`; or set "
        "data.source_data_dir='' to read data.source from data.data_dir.") from e


def per_device_batch(global_batch: int, num_devices: int) -> int:
  """data.global_batch split evenly over `num_devices` (all processes' devices together)."""
  if global_batch <= 0 or global_batch % num_devices:
    raise ConfigError(
        f"data.global_batch={global_batch} does not split evenly over {num_devices} devices; "
        f"set it to a positive multiple of {num_devices} (e.g. --config.data.global_batch="
        f"{num_devices}), or run on fewer devices. The paper's mini-batch is 1 source + 1 "
        "target image.")
  return global_batch // num_devices


def check_fits_training(data_config, name: str, source, info) -> None:
  """ConfigError when `name`'s train split cannot give data_config's batches: fewer examples
  than data.global_batch (a batch would repeat images; an absurd one would never be built), or
  images smaller than data.mode='random_crop''s crop (checked at start from the sizes recorded at
  prepare time, not at the first small image)."""
  if data_config.global_batch > len(source):
    raise ConfigError(
        f"data.global_batch={data_config.global_batch} is more than the {len(source)} examples "
        f"of {name!r}'s train split: a batch would hold images several times. Set "
        f"--config.data.global_batch to at most {len(source)}.")
  sizes = split_image_sizes(info, "train")
  if data_config.mode == "random_crop" and sizes:
    height, width = min(h for h, _ in sizes), min(w for _, w in sizes)
    if height < data_config.height or width < data_config.width:
      raise ConfigError(
          f"data.mode='random_crop' cuts data.height x data.width = {data_config.height}x"
          f"{data_config.width}, but {name!r}'s train split holds images of height {height} "
          f"and width {width}: lower data.height/data.width to fit, or set data.mode='resize'.")


def train_iterator(config, local_devices: int | None = None) -> UnpairedIterator:
  """Unpaired source (`data.source`) and target (`data.target`) training batches of `config`:
  data.global_batch images of each domain per step over all processes, this process's share
  shaped for `local_devices` (default JAX's local device count)."""
  data = config.data
  local_devices, _, process_count = _process_layout(local_devices, None, None)
  per_device = per_device_batch(data.global_batch, local_devices * process_count)
  datasets = []
  domains = (open_source_split(data, "train"), _open_checked(data, data.target, "train"))
  for offset, (source, info) in enumerate(domains):
    check_fits_training(data, (data.source, data.target)[offset], source, info)
    # Different seeds: the two domains are drawn independently.
    datasets.append(train_dataset(source, _spec(data, info, train=True),
                                  seed=config.seed * 2 + offset,
                                  per_device_batch=per_device,
                                  local_devices=local_devices, threads=data.read_threads,
                                  buffer_batches=data.read_buffer_batches))
  return UnpairedIterator(*datasets, global_batch=data.global_batch,
                          process_count=process_count)


@dataclasses.dataclass(frozen=True)
class EvalSplit:
  """A prepared evaluation split and how to read it."""

  dataset: str
  split: str
  source: Any  # random-access examples
  info: Any  # the dataset's DatasetInfo
  spec: Preprocessing
  label_size: tuple[int, int] | None  # padded label resolution; None: the input size

  def __len__(self) -> int:
    return len(self.source)

  def batches(self, per_device_batch: int, **layout) -> Iterator[dict[str, np.ndarray]]:
    """`eval_batches` over this split (the layout keywords default to JAX's)."""
    return eval_batches(self.source, self.spec, per_device_batch=per_device_batch,
                        label_size=self.label_size, **layout)


def target_eval_split(config, at_label_resolution: bool) -> EvalSplit:
  """The target's evaluation split (`data.target_eval_split`) of `config`."""
  data = config.data
  source, info = _open_checked(data, data.target, data.target_eval_split)
  label_size = (split_label_size(info, data.target_eval_split) if at_label_resolution
                else None)
  return EvalSplit(data.target, data.target_eval_split, source, info,
                   _spec(data, info, train=False), label_size)


def target_eval_batches(config) -> Iterator[dict[str, np.ndarray]]:
  """The target's evaluation split resized to the input size, padded and masked."""
  return target_eval_split(config, at_label_resolution=False).batches(
      config.eval.per_device_batch)
