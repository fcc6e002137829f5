"""The embedded default: the paper's Table 1 and Figures 3-4 on the procedural benchmark, i.e.
`python -m gio_ada_jax.experiments --table 1` with the demo's config and output folder, plus
the figures.

    python -m gio_ada_jax.demo [--output_dir demo_output] [--seeds 0,1,2] [--oracle]
        [--cyclegan] [--config configs/demo.py] [--config.train.num_steps=N ...]

The default config is the package's gio_ada_jax/configs/demo.py (configs/demo.py in the
repository), so the demo runs wherever the package is installed.
Rows (that config with a variant): the non-adapted baseline (na,na), input level only
(+sd,na), output level only (na,joint), GIO-Ada (+sd,joint), with --cyclegan Table 2's 'cg'
(cg,na: a CycleGAN's translation of the source set instead of G_img; not in `make demo`, which
must stay within 20 minutes), and with --oracle a task net trained on the target's own labels
(the upper bound). Each run lives in OUTPUT/runs/INPUT_OUTPUT_seedS (rerunning resumes or
reuses finished runs); the data in OUTPUT/data unless --config.data.data_dir is given. Writes
OUTPUT/results.{md,json} (the paper's published Table 1 beside mean ± std over seeds per
row), OUTPUT/results.png (its chart), OUTPUT/figure3_segmentation.png (with column titles and
a class colour key), OUTPUT/figure4_translation.png and, with --cyclegan,
OUTPUT/figure4_cyclegan_vs_gio_ada.png.
"""

import os
import sys
import time

import jax
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from gio_ada_jax import cli, config_checks, configs, experiments, models, variants
from gio_ada_jax.cyclegan import model as cyclegan, translate
from gio_ada_jax.data import pipeline
from gio_ada_jax.data.labels import label_space_for
from gio_ada_jax.eval import evaluate
from gio_ada_jax.images import (colourise, image_to_uint8, legend, panel, with_column_titles,
                                 write_png)
from gio_ada_jax.train import step as train_step


ROWS = experiments.TABLES[1].rows  # non-adapted, input level, output level, GIO-Ada
BASELINE, GIO_ADA = ROWS[0], ROWS[3]
# Table 2's 'cg': a CycleGAN translates the source set first, the task net trains on it.
CYCLEGAN = experiments.Row("cg,na", "CycleGAN")
ORACLE = experiments.Row("na,na", "target oracle", trains_on_target_labels=True)
FIGURE_IMAGES = 4  # rows of each figure


def _task_net_predictions(config, workdir: str, images: np.ndarray) -> np.ndarray:
  built = models.build_models(config.model, variants.from_config(config))
  weights = evaluate.export_weights(built, config, workdir)
  logits, _ = jax.jit(built.task_net.apply)({"params": weights.params}, images)
  return np.asarray(np.argmax(logits, axis=-1))


def figure3(base_config, data_dir: str, runs: dict[str, str], seed: int, path: str) -> None:
  """As the paper's Figure 3 (input | non-adapted | GIO-Ada) plus the ground truth, a row per
  image (`runs`: a run folder of `seed` by row key)."""
  config = experiments.run_config(base_config, BASELINE.variant, seed, data_dir)
  split = pipeline.target_eval_split(config, at_label_resolution=False)
  examples = [pipeline.preprocess(split.source[i], split.spec, None)
              for i in range(FIGURE_IMAGES)]
  images = np.stack([e["image"] for e in examples])
  space = label_space_for(config.model.num_classes)
  baseline = _task_net_predictions(config, runs[BASELINE.key], images)
  gio_ada = _task_net_predictions(
      experiments.run_config(base_config, GIO_ADA.variant, seed, data_dir),
      runs[GIO_ADA.key], images)
  grid = panel([[image_to_uint8(e["image"]), colourise(b, space.palette()),
                 colourise(g, space.palette()), colourise(e["label"], space.palette())]
                for e, b, g in zip(examples, baseline, gio_ada)])
  titled = with_column_titles(grid, ["target image", f"non-adapted {BASELINE.variant}",
                                     f"GIO-Ada {GIO_ADA.variant}", "ground truth"],
                              images.shape[2])
  key = legend(list(space.class_names), list(space.colours), titled.shape[1])
  write_png(path, np.concatenate([titled, key], axis=0))


def _validation_examples(config, data_dir: str, name: str) -> list[dict]:
  """The first FIGURE_IMAGES validation images of a domain, as the networks take them (depth
  as G_img takes it in training)."""
  spec = pipeline.Preprocessing(config.data.height, config.data.width,
                                depth_max_cm=_depth_scale_cm(config, data_dir),
                                far_depth_valid=config.data.sky_depth == "far")
  split, _ = pipeline.open_split(data_dir, name, "validation")
  return [pipeline.preprocess(split[i], spec, None) for i in range(FIGURE_IMAGES)]


def _gio_ada_translations(base_config, data_dir: str, workdir: str, seed: int,
                          src: list[dict], tgt: list[dict]) -> np.ndarray:
  """x̂_s of the GIO-Ada run's forward pass (train/step.py) on the source examples (with their
  labels and depth) and target images."""
  config = experiments.run_config(base_config, GIO_ADA.variant, seed, data_dir)
  variant = variants.from_config(config)
  built = models.build_models(config.model, variant)
  params = evaluate.checkpoint_params(built, config, workdir)
  batch = {"source_image": np.stack([e["image"] for e in src]),
           "source_label": np.stack([e["label"] for e in src]),
           "source_depth": np.stack([e["depth"] for e in src]),
           "target_image": np.stack([e["image"] for e in tgt])}
  outputs = jax.jit(train_step.forward, static_argnums=(0, 3))(built, params, batch, variant)
  return np.asarray(outputs["translated"])


def figure4(base_config, data_dir: str, workdir: str, seed: int, path: str) -> None:
  """After the paper's Figure 4: source image | translated by GIO-Ada's G_img | a target
  image."""
  config = experiments.run_config(base_config, GIO_ADA.variant, seed, data_dir)
  src = _validation_examples(config, data_dir, config.data.source)
  tgt = _validation_examples(config, data_dir, config.data.target)
  translated = _gio_ada_translations(base_config, data_dir, workdir, seed, src, tgt)
  grid = panel([[image_to_uint8(s["image"]), image_to_uint8(x),
                 image_to_uint8(t["image"])] for s, x, t in zip(src, translated, tgt)])
  write_png(path, with_column_titles(grid, ["source image", "translated by G_img (GIO-Ada)",
                                            "a target image"], src[0]["image"].shape[1]))


def figure4_cyclegan(base_config, data_dir: str, runs: dict[str, str], seed: int,
                     path: str) -> None:
  """Figure 4 of the paper as a comparison: source | CycleGAN ('cg') | GIO-Ada's G_img |
  a target image, the same source images in both translations."""
  config = experiments.run_config(base_config, CYCLEGAN.variant, seed, data_dir)
  src = _validation_examples(config, data_dir, config.data.source)
  tgt = _validation_examples(config, data_dir, config.data.target)
  params, _ = translate.generator_from_checkpoint(
      config, translate.cyclegan_workdir(runs[CYCLEGAN.key]))
  by_cyclegan = np.asarray(cyclegan.apply_generator(cyclegan.build_models(config).generator,
                                                    params, np.stack([e["image"] for e in src])))
  by_gio_ada = _gio_ada_translations(base_config, data_dir, runs[GIO_ADA.key], seed, src, tgt)
  grid = panel([[image_to_uint8(s["image"]), image_to_uint8(c),
                 image_to_uint8(g), image_to_uint8(t["image"])]
                for s, c, g, t in zip(src, by_cyclegan, by_gio_ada, tgt)])
  write_png(path, with_column_titles(grid, ["source image", "CycleGAN (cg)",
                                            "G_img of GIO-Ada (+sd,joint)", "a target image"],
                                     src[0]["image"].shape[1]))


def _depth_scale_cm(config, data_dir: str) -> float:
  _, source_info = pipeline.open_split(data_dir, config.data.source, "train")
  return pipeline.depth_scale_cm(source_info, config.data.sky_depth)


def extra_rows(with_oracle: bool, with_cyclegan: bool) -> tuple:
  """The rows the demo adds to Table 1's."""
  return ((CYCLEGAN,) if with_cyclegan else ()) + ((ORACLE,) if with_oracle else ())


def run(base_config, output_dir: str, seeds: list[int], with_oracle: bool,
        with_cyclegan: bool = False) -> str:
  """Everything `python -m gio_ada_jax.demo` does: Table 1 of `python -m
  gio_ada_jax.experiments` on the procedural benchmark (with the extra rows asked for), written
  to OUTPUT/results.{md,json,png}, and the figures; the results table (Markdown)."""
  start = time.time()
  made = experiments.run(experiments.TABLES[1], base_config, output_dir, seeds,
                         extra_rows(with_oracle, with_cyclegan), stem="results")
  runs = {key: folders[0] for key, folders in made.run_folders.items()}  # the first seed's
  figure3(base_config, made.data_dir, runs, seeds[0],
          os.path.join(output_dir, "figure3_segmentation.png"))
  figure4(base_config, made.data_dir, runs[GIO_ADA.key], seeds[0],
          os.path.join(output_dir, "figure4_translation.png"))
  if with_cyclegan:
    figure4_cyclegan(base_config, made.data_dir, runs, seeds[0],
                     os.path.join(output_dir, "figure4_cyclegan_vs_gio_ada.png"))
  print(f"\n{time.time() - start:.0f} s in all. Outputs in {output_dir}: results.md, "
        "results.json, results.png (a chart of the table), figure3_segmentation.png (target | "
        "baseline | GIO-Ada | ground truth, with a class key), "
        "figure4_translation.png (source | translated | target), "
        + ("figure4_cyclegan_vs_gio_ada.png (source | CycleGAN | GIO-Ada | target), "
           if with_cyclegan else "")
        + "runs/*/eval (reports), runs/*/tensorboard.")
  return made.text


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
  seeds = experiments.parse_seeds(_SEEDS.value)  # distinct: the table's spread is over seeds
  experiments.check_run_configs(experiments.TABLES[1], _CONFIG.value, seeds,
                                extra_rows(_ORACLE.value, _CYCLEGAN.value))
  try:
    run(_CONFIG.value, _OUTPUT_DIR.value, seeds, _ORACLE.value, _CYCLEGAN.value)
  except config_checks.ConfigError as e:  # e.g. rerun with another config: the runs are reused
    print(f"demo: {e} (The demo has no --allow_config_change: it reuses the runs of "
          f"{_OUTPUT_DIR.value}; give another --output_dir to train with this config.)",
          file=sys.stderr)
    return e.exit_code
  return 0


if __name__ == "__main__":
  cli.run(main, "demo")
