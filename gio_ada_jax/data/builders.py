"""TFDS builders: each official download (or the procedural domains) prepared once into
ArrayRecord shards that the grain pipeline reads with random access.

Every example holds `id`, the uint8 `image`, the uint8 `label` already in the benchmark's class
space (255 = ignore) and, where the dataset has it, `depth` as uint16 centimetres (0 = invalid,
formats.FAR_DEPTH_CM = the far clip, the sky). Statistics gathered while writing go into the
dataset metadata: the dataset-wide depth maximum with and without the far clip (the paper
normalises depth to [0, 1] "among all images"), image sizes and class pixel counts per split.
TFDS writes into an `incomplete.*` folder and renames it only when every split is done, so an
interrupted prepare never loads as a complete dataset (prepare.write_dataset, which every writer
goes through, removes the folder a killed one left).

Importing this module imports TensorFlow Datasets (and prepare imports TensorFlow); the
training and evaluation pipeline only reads the prepared folders.
"""

import collections
import contextlib
import functools
import json
import multiprocessing
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from gio_ada_jax.data import formats, interrupts, procedural
from gio_ada_jax.data.labels import VKITTI_KITTI_10
from gio_ada_jax.data.pipeline import (METADATA_DEPTH_MAX, METADATA_DEPTH_MAX_BELOW_FAR,
                                       METADATA_PROCEDURAL_CONFIG, METADATA_SPLIT_STATS,
                                       METADATA_TRANSLATED_BY, VERSION_DIR, dataset_dir,
                                       prepared_builder)

VERSION = tfds.core.Version(VERSION_DIR)


def _features(has_depth: bool) -> tfds.features.FeaturesDict:
  features = {
      "id": tfds.features.Text(),
      "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8),
  }
  if has_depth:
    # zlib-compressed raw uint16: read back with numpy alone (PIL cannot decode 16-bit PNGs).
    features["depth"] = tfds.features.Tensor(shape=(None, None), dtype=np.uint16,
                                             encoding=tfds.features.Encoding.ZLIB)
  return tfds.features.FeaturesDict(features)


class SplitStats:
  """Running statistics of one split: examples, image sizes, class pixels, depth maxima."""

  def __init__(self, num_classes: int):
    self.num_examples = 0
    self.image_sizes = collections.Counter()
    self.class_pixels = np.zeros(num_classes + 1, np.int64)  # last entry: ignore
    self.depth_max_cm = 0
    self.depth_max_below_far_cm = 0

  def add(self, example: dict[str, Any]) -> None:
    self.num_examples += 1
    height, width = example["image"].shape[:2]
    self.image_sizes[f"{height}x{width}"] += 1
    label = example["label"].astype(np.int64).ravel()
    num_classes = len(self.class_pixels) - 1
    self.class_pixels += np.bincount(np.minimum(label, num_classes), minlength=num_classes + 1)
    if "depth" in example:
      depth = example["depth"]
      self.depth_max_cm = max(self.depth_max_cm, int(depth.max(initial=0)))
      below_far = depth[depth != formats.FAR_DEPTH_CM]
      self.depth_max_below_far_cm = max(self.depth_max_below_far_cm,
                                        int(below_far.max(initial=0)))

  def as_dict(self) -> dict[str, Any]:
    return {"num_examples": self.num_examples, "image_sizes": dict(self.image_sizes),
            "class_pixels": self.class_pixels.tolist(), "depth_max_cm": self.depth_max_cm,
            "depth_max_below_far_cm": self.depth_max_below_far_cm}


class _StatsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared plumbing: features, per-split statistics into the metadata."""

  VERSION = VERSION
  HAS_DEPTH = False
  NUM_CLASSES = 0

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=_features(self.HAS_DEPTH),
                                 metadata=tfds.core.MetadataDict())

  def _record(self, split: str, examples: Iterator[tuple[str, dict]]):
    """Pass examples through to TFDS, recording statistics; store them when the split ends."""
    stats = SplitStats(self.NUM_CLASSES)
    for key, example in examples:
      interrupts.check_terminated()
      stats.add(example)
      encoded = dict(example)
      encoded["label"] = example["label"][..., None]
      yield key, encoded
    if stats.num_examples == 0:
      raise formats.DataError(f"{self.name}: split {split!r} has no examples.")
    metadata = self.info.metadata
    split_stats = dict(metadata.get(METADATA_SPLIT_STATS, {}))
    split_stats[split] = stats.as_dict()
    metadata[METADATA_SPLIT_STATS] = split_stats
    metadata[METADATA_DEPTH_MAX] = max(s["depth_max_cm"] for s in split_stats.values())
    metadata[METADATA_DEPTH_MAX_BELOW_FAR] = max(s["depth_max_below_far_cm"]
                                                 for s in split_stats.values())


class _FormatBuilder(_StatsBuilder, skip_registration=True):
  """A builder over one official on-disk layout read by `formats.FORMATS[FORMAT_NAME]`."""

  FORMAT_NAME = ""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass --manual_dir: the folder of the extracted official download."

  @property
  def format(self):
    return formats.FORMATS[self.FORMAT_NAME]

  def _split_generators(self, dl_manager):
    manual_dir = dl_manager.manual_dir
    # List every split first, so a missing folder fails before anything is written.
    listed = {split: self.format.list_examples(manual_dir, split) for split in self.format.splits}
    return {split: self._generate_examples(split, raws) for split, raws in listed.items()}

  def _generate_examples(self, split, raws):
    examples = ((raw.example_id, self.format.read_example(raw)) for raw in raws)
    yield from self._record(split, examples)


def _format_builder(name: str, format_name: str) -> type:
  fmt = formats.FORMATS[format_name]
  return type(name, (_FormatBuilder,), {
      "name": name, "FORMAT_NAME": format_name, "HAS_DEPTH": fmt.has_depth,
      "NUM_CLASSES": fmt.label_space.num_classes,
      "__doc__": f"TFDS builder for {format_name} (see gio_ada_jax.data.formats).",
  }, skip_registration=True)


class Procedural(_StatsBuilder, skip_registration=True):
  """The procedural sim-to-real benchmark: one builder config per appearance domain."""

  name = "procedural"
  HAS_DEPTH = True
  NUM_CLASSES = VKITTI_KITTI_10.num_classes
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="source", description="synthetic look"),
                     tfds.core.BuilderConfig(name="target", description="real look")]

  def __init__(self, *, procedural_config, num_workers: int = 2, **kwargs):
    # Resolved: the worker processes get it pickled, and a reference's op does not pickle.
    self._procedural_config = procedural_config.copy_and_resolve_references()
    self._num_workers = num_workers
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    counts = {"train": self._procedural_config.num_train,
              "validation": self._procedural_config.num_validation}
    self.info.metadata[METADATA_PROCEDURAL_CONFIG] = json.loads(
        self._procedural_config.to_json())
    return {split: self._generate_examples(split, n) for split, n in counts.items()}

  def _generate_examples(self, split, num_examples):
    render = functools.partial(procedural.generate_example, self._procedural_config,
                               self.builder_config.name, split)
    # Rendering is pure numpy: spread it over worker processes started fresh ('spawn'), since
    # this process has TensorFlow's threads running.
    with contextlib.ExitStack() as stack:
      with interrupts.sigterm_deferred():  # SIGTERM: after the pool is whole and will be ended
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(
            self._num_workers, initializer=procedural.ignore_interrupts))
      examples = pool.imap(render, range(num_examples), chunksize=32)
      yield from self._record(split, ((ex["id"], ex) for ex in examples))


class _Translated(_StatsBuilder, skip_registration=True):
  """A prepared dataset with every image replaced by its translation (the 'cg' variant).

  Ids, labels, depth and the source's metadata (depth maximum, procedural config) carry over
  unchanged; `translate_images` maps a uint8 [N, H, W, 3] batch of same-sized images to one
  of the same shape. The source's own folder is only read.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = "Translated from another prepared dataset; nothing to download."

  def __init__(self, *, source_data_dir: str, translate_images, provenance: dict,
               batch_size: int = 1, **kwargs):
    self._source_dir = dataset_dir(source_data_dir, self.SOURCE_NAME)
    self._translate_images = translate_images
    self._provenance = provenance
    self._batch_size = max(batch_size, 1)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    source = prepared_builder(self._source_dir)
    metadata = dict(source.info.metadata or {})
    metadata.pop(METADATA_SPLIT_STATS, None)  # recomputed while writing
    self.info.metadata.update(metadata)
    self.info.metadata[METADATA_TRANSLATED_BY] = self._provenance
    return {split: self._generate_examples(split, source.as_data_source(split=split))
            for split in source.info.splits}

  def _generate_examples(self, split, examples):
    yield from self._record(split, self._translated(examples))

  def _translated(self, examples):
    """(id, example) with translated images, in the source's order, batching same sizes."""
    pending = []

    def flush():
      images = self._translate_images(np.stack([ex["image"] for ex in pending]))
      for ex, image in zip(pending, images):
        out = {"id": _text(ex["id"]), "image": np.asarray(image, np.uint8),
               "label": ex["label"][..., 0]}
        if "depth" in ex:
          out["depth"] = ex["depth"]
        yield out["id"], out
      pending.clear()

    for i in range(len(examples)):
      example = examples[i]
      if pending and (len(pending) == self._batch_size
                      or pending[0]["image"].shape != example["image"].shape):
        yield from flush()
      pending.append(example)
    if pending:
      yield from flush()


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def translated_builder(source_name: str, has_depth: bool, num_classes: int) -> type:
  """The builder class of a translated copy of the prepared dataset `source_name` (e.g.
  'vkitti' or 'procedural/source'): same name, so it reads back under the same data.source."""
  name, _, config_name = source_name.partition("/")
  attributes = {"name": name, "SOURCE_NAME": source_name, "HAS_DEPTH": has_depth,
                "NUM_CLASSES": num_classes}
  if config_name:
    attributes["BUILDER_CONFIGS"] = [tfds.core.BuilderConfig(name=config_name)]
  return type(f"Translated_{name}", (_Translated,), attributes, skip_registration=True)


Vkitti = _format_builder("vkitti", "vkitti")
KittiSemantics = _format_builder("kitti_semantics", "kitti_semantics")
SynthiaRandCityscapes = _format_builder("synthia_rand_cityscapes", "synthia_rand_cityscapes")
Cityscapes = _format_builder("cityscapes", "cityscapes")

FORMAT_BUILDERS = {b.name: b for b in (Vkitti, KittiSemantics, SynthiaRandCityscapes, Cityscapes)}
# Every dataset prepare.py builds: the --dataset names.
DATASETS = (*FORMAT_BUILDERS, Procedural.name)
