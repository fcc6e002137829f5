"""Prepare a dataset once: python -m gio_ada_jax.data.prepare --dataset NAME [--manual_dir DIR].

NAME is one of vkitti, kitti_semantics, synthia_rand_cityscapes, cityscapes (from the extracted
official download in --manual_dir) or procedural (both domains, rendered from
config.data.procedural). Writes ArrayRecord shards under --data_dir (default:
config.data.data_dir) and prints a summary: examples per split, image sizes, class pixel
frequencies, depth maximum.

TFDS writes each dataset version into a temporary sibling folder, incomplete.XXXXXX_VERSION,
and renames it when every split is done; it removes that folder itself when writing fails. A
prepare killed before (SIGKILL, a lost machine) leaves it behind: the next prepare of that
version removes it, saying so. SIGTERM and Ctrl-C stop a prepare after TFDS's own clean-up
(exit status 75 and 130, as every command).

One prepare at a time per dataset folder (DATA_DIR/NAME, or DATA_DIR/procedural/DOMAIN): it
holds an flock on PREPARE_LOCK there while it checks, removes and writes, so a second prepare is
refused, naming the first, and never removes the copy that the first is writing. The kernel
releases an flock when its process ends however it ends, so a killed prepare leaves no lock to
delete by hand (the file stays, unlocked, and the next prepare takes it).
"""

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import shutil
import socket
import sys

from absl import flags
from ml_collections import config_flags

from gio_ada_jax import cli, config_checks, configs
from gio_ada_jax.data import builders, formats, interrupts, pipeline
from gio_ada_jax.data.formats import FAR_DEPTH_CM
from gio_ada_jax.data.labels import VKITTI_KITTI_10

FLAGS = flags.FLAGS


def remove_unfinished_copies(data_path) -> list[pathlib.Path]:
  """Remove `pipeline.unfinished_copies(data_path)`, one line each; the removed folders."""
  removed = pipeline.unfinished_copies(data_path)
  for path in removed:
    shutil.rmtree(path)
    print(f"Removed {path}: an unfinished copy of {data_path} that an interrupted run left "
          "behind (TFDS's temporary folder).", flush=True)
  return removed


def write_dataset(builder, **download_and_prepare_kwargs) -> None:
  """`builder.download_and_prepare` after removing what a killed writer of the same dataset
  version left, with SIGTERM raising interrupts.Terminated after TFDS's clean-up."""
  remove_unfinished_copies(builder.data_path)
  try:
    with interrupts.terminated_on_sigterm():
      builder.download_and_prepare(**download_and_prepare_kwargs)
  except (interrupts.Terminated, KeyboardInterrupt):
    # TFDS removes its folder when interrupted while writing, but not between creating it and
    # starting to write.
    remove_unfinished_copies(builder.data_path)
    raise


PREPARE_LOCK = "prepare.lock"


def _holder(path: str) -> str:
  """Who holds the lock file `path`, as its holder wrote it."""
  try:
    with open(path) as f:
      record = json.loads(f.read())
    return (f"process {record['pid']} on {record['host']}, started {record['started']} "
            f"(command: {' '.join(record['command'])})")
  except (OSError, ValueError, KeyError, TypeError):
    return "a process that has not yet written its name into it"


@contextlib.contextmanager
def dataset_folder_lock(folder):
  """Hold an exclusive flock on `folder`/PREPARE_LOCK for the block; formats.DataError naming
  the holder when another process holds it. The file is removed on release."""
  path = os.path.join(folder, PREPARE_LOCK)
  while True:
    try:
      os.makedirs(folder, exist_ok=True)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise formats.DataError(f"cannot write {path}: {e.strerror}. Give a --data_dir that this "
                              "user can write.") from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise formats.DataError(
          f"{folder} is being written by another prepare: {_holder(path)} holds {path}. Wait "
          "for it to end (rerunning then finds the complete copy and writes nothing), or stop "
          "it and rerun.") from None
    except OSError as e:
      os.close(fd)
      raise formats.DataError(f"cannot lock {path}: {e.strerror}. Prepare into a folder on a "
                              "file system with file locks (--data_dir).") from e
    try:
      same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:  # not a file that its last holder removed after we opened it
      break
    os.close(fd)
  try:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(record) + "\n").encode())
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)  # while still holding it: a later opener makes a new file
    os.close(fd)


def hide_gpus_from_tensorflow() -> None:
  """Keep TensorFlow (used by TFDS while writing) off the accelerators JAX uses."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")


def make_builders(dataset: str, data_dir: str, config, num_workers: int = 2) -> list:
  """The TFDS builder(s) that prepare `dataset` into `data_dir`."""
  common = dict(data_dir=data_dir, file_format="array_record")
  if dataset == "procedural":
    return [builders.Procedural(config=domain, procedural_config=config.data.procedural,
                                num_workers=num_workers, **common)
            for domain in ("source", "target")]
  return [builders.FORMAT_BUILDERS[dataset](**common)]


def prepare(dataset: str, data_dir: str, config, manual_dir: str | None = None,
            overwrite: bool = False, num_workers: int = 2) -> list:
  """Build `dataset` into `data_dir` (a no-op where a complete copy exists); the builders."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  hide_gpus_from_tensorflow()
  if dataset != "procedural" and not manual_dir:
    raise formats.DataError(f"--manual_dir is required for {dataset}: the folder of the "
                            "extracted official download.")
  if manual_dir and not (os.path.isdir(manual_dir) and os.listdir(manual_dir)):
    raise formats.DataError(f"--manual_dir {manual_dir}: does not exist or is empty; extract "
                            f"the official {dataset} download there.")
  built = make_builders(dataset, data_dir, config, num_workers)
  for builder in built:
    with dataset_folder_lock(builder.data_path.parent):
      if overwrite and builder.data_path.exists():
        shutil.rmtree(builder.data_path)
      elif dataset == "procedural" and (builder.data_path / "dataset_info.json").exists():
        try:  # a complete copy is kept only if it is this config's rendering
          pipeline.check_procedural_config(pipeline.prepared_builder(builder.data_path).info,
                                           config.data.procedural)
        except ValueError as e:
          raise formats.DataError(f"{builder.data_path}: {e}") from None
      write_dataset(builder,
                    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return built


def summary(builder, class_names) -> str:
  """Examples per split, image sizes, class pixel frequencies and the depth maximum."""
  metadata = builder.info.metadata or {}
  lines = [f"{builder.data_path}"]
  for split, stats in sorted(metadata.get("split_stats", {}).items()):
    sizes = sorted(stats["image_sizes"].items(), key=lambda kv: -kv[1])
    size_text = ", ".join(f"{s} ({n})" for s, n in sizes[:3]) + (" ..." if len(sizes) > 3 else "")
    lines.append(f"  {split}: {stats['num_examples']} examples; image sizes {size_text}")
    pixels = stats["class_pixels"]
    total = max(sum(pixels), 1)
    names = list(class_names) + ["ignore"]
    lines.append("    class pixels: " + ", ".join(
        f"{name} {100 * n / total:.1f}%" for name, n in zip(names, pixels)))
  depth_max = metadata.get(pipeline.METADATA_DEPTH_MAX, 0)
  if depth_max:
    below_far = metadata.get(pipeline.METADATA_DEPTH_MAX_BELOW_FAR, 0)
    far = " (the far clip: the sky)" if depth_max == FAR_DEPTH_CM else ""
    lines.append(f"  depth maximum: {depth_max / 100:.2f} m{far}; below the far clip: "
                 f"{below_far / 100:.2f} m")
  return "\n".join(lines)


def _define_flags() -> None:
  """Command-line flags, defined only when this module runs as a program."""
  config_flags.DEFINE_config_file("config", configs.path("default"),
                                  "Config (data.data_dir, data.procedural).")
  flags.DEFINE_enum("dataset", None, builders.DATASETS, "Dataset to prepare.")
  flags.DEFINE_string("manual_dir", None, "Extracted official download (not for procedural).")
  flags.DEFINE_string("data_dir", None, "Output root (default config.data.data_dir).")
  flags.DEFINE_bool("overwrite", False, "Delete an existing prepared copy first.")
  flags.DEFINE_integer("num_workers", 2, "Processes rendering procedural scenes.")
  flags.mark_flag_as_required("dataset")


def main(argv):
  del argv
  config = FLAGS.config
  data_dir = FLAGS.data_dir or config.data.data_dir
  config_checks.check_config(config)
  built = prepare(FLAGS.dataset, data_dir, config, FLAGS.manual_dir, FLAGS.overwrite,
                  FLAGS.num_workers)
  fmt = formats.FORMATS.get(FLAGS.dataset)
  label_space = fmt.label_space if fmt else VKITTI_KITTI_10  # procedural: the 10 classes
  for builder in built:
    print(summary(builder, label_space.class_names))
  return 0


if __name__ == "__main__":
  _define_flags()
  cli.run(main, "prepare")
