"""The embedded default: train GIO-Ada and its ablations on the procedural benchmark, evaluate
them on the target domain and show the paper's Table 1 and Figures 3-4 for them.

    python -m gio_ada_jax.demo [--output_dir demo_output] [--seeds 0,1,2] [--oracle]
        [--cyclegan] [--config configs/demo.py] [--config.train.num_steps=N ...]

The default config is the package's gio_ada_jax/configs/demo.py (configs/demo.py in the
repository), so the demo runs wherever the package is installed.
Rows (that config with a variant): the non-adapted baseline (na,na), input level only
(+sd,na), output level only (na,joint), GIO-Ada (+sd,joint), with --cyclegan Table 2's 'cg'
(cg,na: a CycleGAN's translation of the source set instead of G_img; not in `make demo`, which
must stay within 20 minutes), and with --oracle a task net trained on the target's own labels
(the upper bound). Each run lives in OUTPUT/runs/ROW_seedS
(rerunning resumes or reuses finished runs); the data in OUTPUT/data unless
--config.data.data_dir is given. Writes OUTPUT/results.{md,json} (mean ± std over seeds per
row), OUTPUT/figure3_segmentation.png, OUTPUT/figure4_translation.png and, with --cyclegan,
OUTPUT/figure4_cyclegan_vs_gio_ada.png.
"""

import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from gio_ada_jax import config_checks, configs, files, models, variants, workdir as workdir_lib
from gio_ada_jax.cyclegan import model as cyclegan, translate
from gio_ada_jax.data import formats, interrupts, pipeline, prepare
from gio_ada_jax.data.labels import label_space_for
from gio_ada_jax.eval import evaluate, pictures, reports
from gio_ada_jax.images import panel, write_png
from gio_ada_jax.train import checkpoint, loop, step as train_step, trainer, workdir_lock


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the table: a name, the variant, and where its labelled training data come from."""

  key: str  # folder name
  name: str  # row label
  variant: str  # "INPUT,OUTPUT"
  trains_on_target_labels: bool = False


ROWS = (
    Row("baseline", "source only (na,na)", "na,na"),
    Row("input", "input level (+sd,na)", "+sd,na"),
    Row("output", "output level (na,joint)", "na,joint"),
    Row("gio_ada", "GIO-Ada (+sd,joint)", "+sd,joint"),
)
ORACLE = Row("oracle", "target oracle (na,na on target labels)", "na,na", True)
# Table 2's 'cg': a CycleGAN translates the source set first, the task net trains on it.
CYCLEGAN = Row("cyclegan", "CycleGAN (cg,na)", "cg,na")
FIGURE_IMAGES = 4  # rows of each figure


def run_config(base_config, row: Row, seed: int, data_dir: str):
  """The config of one run: the base config with the row's variant, seed and data."""
  config = base_config.copy_and_resolve_references()
  config.variant = str(variants.parse(row.variant))
  config.seed = seed
  config.data.data_dir = data_dir
  if row.trains_on_target_labels:
    config.data.source = config.data.target
  return config


def ensure_data(config, data_dir: str, own_folder: bool) -> None:
  """Render the procedural domains into `data_dir` unless this config's are already there;
  a rendering of another config is replaced only in the demo's `own_folder` (OUT/data), and
  refused by prepare elsewhere (a --config.data.data_dir the user gave)."""
  try:
    for name in (config.data.source, config.data.target):
      _, info = pipeline.open_split(data_dir, name, "train")
      pipeline.check_procedural_config(info, config.data.procedural)
    return
  except (pipeline.DatasetNotPrepared, ValueError):
    pass
  print(f"Rendering the procedural domains into {data_dir} ...", flush=True)
  prepare.prepare("procedural", data_dir, config, overwrite=own_folder)


def train_and_evaluate_row(config, workdir: str, name: str) -> dict:
  """Train one run (reusing a finished one) and evaluate it on the target; its report."""
  if not os.path.exists(os.path.join(workdir_lib.export(workdir), workdir_lib.EXPORTED_PARAMS)):
    if trainer.train_and_evaluate(config, workdir) is None:
      print(f"SIGTERM: {name} is checkpointed in {workdir}, not finished; rerun the same "
            "command to resume.", flush=True)
      sys.exit(loop.PREEMPTED_EXIT_CODE)
  [report] = evaluate.evaluate(config, workdir, name=name)
  return report


def _task_net_predictions(config, workdir: str, images: np.ndarray) -> np.ndarray:
  built = models.build_models(config.model, variants.from_config(config))
  weights = evaluate.export_weights(built, config, workdir)
  logits, _ = jax.jit(built.task_net.apply)({"params": weights.params}, images)
  return np.asarray(np.argmax(logits, axis=-1))


def figure3(base_config, data_dir: str, runs: dict[str, str], path: str) -> None:
  """As the paper's Figure 3 (input | non-adapted | GIO-Ada) plus the ground truth, a row per
  image."""
  config = run_config(base_config, ROWS[0], 0, data_dir)
  split = pipeline.target_eval_split(config, at_label_resolution=False)
  examples = [pipeline.preprocess(split.source[i], split.spec, None)
              for i in range(FIGURE_IMAGES)]
  images = np.stack([e["image"] for e in examples])
  space = label_space_for(config.model.num_classes)
  baseline = _task_net_predictions(run_config(base_config, ROWS[0], 0, data_dir),
                                   runs["baseline"], images)
  gio_ada = _task_net_predictions(run_config(base_config, ROWS[3], 0, data_dir),
                                  runs["gio_ada"], images)
  write_png(path, panel([
      [pictures.image_to_uint8(e["image"]), pictures.colourise(b, space),
       pictures.colourise(g, space), pictures.colourise(e["label"], space)]
      for e, b, g in zip(examples, baseline, gio_ada)]))


def _validation_examples(config, data_dir: str, name: str) -> list[dict]:
  """The first FIGURE_IMAGES validation images of a domain, as the networks take them (depth
  as G_img takes it in training)."""
  spec = pipeline.Preprocessing(config.data.height, config.data.width,
                                depth_max_cm=_depth_scale_cm(config, data_dir),
                                far_depth_valid=config.data.sky_depth == "far")
  split, _ = pipeline.open_split(data_dir, name, "validation")
  return [pipeline.preprocess(split[i], spec, None) for i in range(FIGURE_IMAGES)]


def _gio_ada_translations(base_config, data_dir: str, workdir: str, src: list[dict],
                          tgt: list[dict]) -> np.ndarray:
  """x̂_s of the GIO-Ada run's forward pass (train/step.py) on the source examples (with their
  labels and depth) and target images."""
  config = run_config(base_config, ROWS[3], 0, data_dir)
  variant = variants.from_config(config)
  built = models.build_models(config.model, variant)
  params = evaluate.checkpoint_params(built, config, workdir)
  batch = {"source_image": np.stack([e["image"] for e in src]),
           "source_label": np.stack([e["label"] for e in src]),
           "source_depth": np.stack([e["depth"] for e in src]),
           "target_image": np.stack([e["image"] for e in tgt])}
  outputs = jax.jit(train_step.forward, static_argnums=(0, 3))(built, params, batch, variant)
  return np.asarray(outputs["translated"])


def figure4(base_config, data_dir: str, workdir: str, path: str) -> None:
  """After the paper's Figure 4: source image | translated by GIO-Ada's G_img | a target
  image."""
  config = run_config(base_config, ROWS[3], 0, data_dir)
  src = _validation_examples(config, data_dir, config.data.source)
  tgt = _validation_examples(config, data_dir, config.data.target)
  translated = _gio_ada_translations(base_config, data_dir, workdir, src, tgt)
  write_png(path, panel([
      [pictures.image_to_uint8(s["image"]), pictures.image_to_uint8(x),
       pictures.image_to_uint8(t["image"])] for s, x, t in zip(src, translated, tgt)]))


def figure4_cyclegan(base_config, data_dir: str, runs: dict[str, str], path: str) -> None:
  """Figure 4 of the paper as a comparison: source | CycleGAN ('cg') | GIO-Ada's G_img |
  a target image, the same source images in both translations."""
  config = run_config(base_config, CYCLEGAN, 0, data_dir)
  src = _validation_examples(config, data_dir, config.data.source)
  tgt = _validation_examples(config, data_dir, config.data.target)
  params, _ = translate.generator_from_checkpoint(
      config, translate.cyclegan_workdir(runs["cyclegan"]))
  by_cyclegan = np.asarray(cyclegan.apply_generator(cyclegan.build_models(config).generator,
                                                    params, np.stack([e["image"] for e in src])))
  by_gio_ada = _gio_ada_translations(base_config, data_dir, runs["gio_ada"], src, tgt)
  write_png(path, panel([
      [pictures.image_to_uint8(s["image"]), pictures.image_to_uint8(c),
       pictures.image_to_uint8(g), pictures.image_to_uint8(t["image"])]
      for s, c, g, t in zip(src, by_cyclegan, by_gio_ada, tgt)]))


def _depth_scale_cm(config, data_dir: str) -> float:
  _, source_info = pipeline.open_split(data_dir, config.data.source, "train")
  return pipeline.depth_scale_cm(source_info, config.data.sky_depth)


def run(base_config, output_dir: str, seeds: list[int], with_oracle: bool,
        with_cyclegan: bool = False) -> str:
  """Everything `python -m gio_ada_jax.demo` does; the results table (Markdown)."""
  start = time.time()
  data_dir = base_config.data.data_dir
  own_folder = data_dir == "~/tensorflow_datasets" or not data_dir
  if own_folder:  # the default: keep the demo apart
    data_dir = os.path.join(output_dir, "data")
  ensure_data(base_config, data_dir, own_folder)
  rows = ROWS + ((CYCLEGAN,) if with_cyclegan else ()) + ((ORACLE,) if with_oracle else ())
  found, runs = [], {}
  total = len(rows) * len(seeds)
  for seed in seeds:
    for row in rows:
      done = len(found)
      print(f"\n[{done + 1}/{total}] {row.name}, seed {seed} "
            f"({time.time() - start:.0f} s so far)", flush=True)
      workdir = os.path.join(output_dir, "runs", f"{row.key}_seed{seed}")
      found.append(train_and_evaluate_row(run_config(base_config, row, seed, data_dir),
                                          workdir, row.name))
      runs.setdefault(row.key, workdir)
  table = reports.compare_markdown(reports.compare(found), found[0]["classes"],
                                   "miou13" in found[0]["metrics"])
  files.atomic_write(os.path.join(output_dir, "results.md"), table + "\n")
  files.atomic_write(os.path.join(output_dir, "results.json"),
                                json.dumps(reports.json_ready(reports.compare(found)),
                                           indent=1) + "\n")
  figure3(base_config, data_dir, runs, os.path.join(output_dir, "figure3_segmentation.png"))
  figure4(base_config, data_dir, runs["gio_ada"],
          os.path.join(output_dir, "figure4_translation.png"))
  if with_cyclegan:
    figure4_cyclegan(base_config, data_dir, runs,
                     os.path.join(output_dir, "figure4_cyclegan_vs_gio_ada.png"))
  print(f"\nTarget-domain IoU (%), mean ± std over seeds {seeds}, "
        f"{time.time() - start:.0f} s in all:\n\n{table}\n")
  print(f"Outputs in {output_dir}: results.md, results.json, figure3_segmentation.png "
        "(target | baseline | GIO-Ada | ground truth), figure4_translation.png (source | "
        "translated | target), "
        + ("figure4_cyclegan_vs_gio_ada.png (source | CycleGAN | GIO-Ada | target), "
           if with_cyclegan else "")
        + "runs/*/eval (reports), runs/*/tensorboard.")
  return table


_CONFIG = config_flags.DEFINE_config_file("config", configs.path("demo"), "The demo config.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "demo_output", "Where everything goes.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; each row is trained once per seed.")
_ORACLE = flags.DEFINE_bool("oracle", False, "Add the target oracle row (trained on target "
                            "labels, the upper bound).")
_CYCLEGAN = flags.DEFINE_bool("cyclegan", False, "Add Table 2's 'cg' row (a CycleGAN "
                              "translates the source set, the task net trains on it) and "
                              "figure4_cyclegan_vs_gio_ada.png.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    print(f"--seeds={','.join(_SEEDS.value)}: give integers, e.g. --seeds 0,1,2",
          file=sys.stderr)
    return 2
  try:
    run(_CONFIG.value, _OUTPUT_DIR.value, seeds, _ORACLE.value, _CYCLEGAN.value)
  except workdir_lock.WorkdirLockError as e:  # another demo is training in the same run folder
    print(f"demo: {e}", file=sys.stderr)
    return 2
  except config_checks.ConfigError as e:  # e.g. rerun with another config: the runs are reused
    print(f"demo: {e} (The demo has no --allow_config_change: it reuses the runs of "
          f"{_OUTPUT_DIR.value}; give another --output_dir to train with this config.)",
          file=sys.stderr)
    return 2
  except (pipeline.DatasetNotPrepared, pipeline.DatasetUnusable, formats.DataError,
          checkpoint.UnrestorableCheckpoint) as e:
    print(f"demo: {e}", file=sys.stderr)
    return 2
  except interrupts.Terminated:  # while rendering the data or translating the 'cg' source
    print("SIGTERM: stopped before the data being written was complete; rerun the same "
          "command to resume.", file=sys.stderr)
    return loop.PREEMPTED_EXIT_CODE
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
