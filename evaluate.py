"""Evaluate GIO-Ada's task net: mIoU over the whole split, scored at label resolution.

  python evaluate.py --config configs/X.py --workdir DIR [--step N | --all_steps]
      [--save_predictions N] [--torch_checkpoint FILE.pth] [--name NAME]
  python evaluate.py --config configs/X.py --workdir DIR --images_dir FOLDER [--output_dir OUT]
  python evaluate.py compare DIR_OR_REPORT... [--step N] [--output_dir OUT]

The config must compute as the run's (recorded in DIR/config.json: model, variant, input
size and data; --allow_config_change=FIELD,... on purpose). Reports (Markdown + JSON), the
curve and pictures go into DIR/eval. `compare` groups the runs' reports by name (default: the
variant) and prints mean ± std per class and mIoU. Of a workdir it takes the report of
checkpoint --step, else the export's (eval/export.json: a finished run evaluated after its
checkpoints were removed), else the latest checkpoint's, else its only PyTorch one, and prints
which report each row used.

--images_dir predicts every image of FOLDER (.png .jpg .jpeg .bmp .ppm .pgm .pbm .pnm .tif .tiff
.webp; not recursive: other files and subfolders are listed as skipped) and writes
NAME_segmentation.png, NAME_depth.png and NAME_panel.png for each file NAME (the whole name:
a.png and a.jpg both keep theirs) into OUT (default DIR/eval/images). Any PIL mode is read as
8-bit RGB (16-bit scaled, alpha dropped; gio_ada_jax/images.py read_rgb); a file that cannot
be read correctly stops the run before anything is written. OUT must not be, be inside or
contain FOLDER, and may hold only pictures an earlier --images_dir run wrote there (listed in
OUT/.predict_images.json).
Errors are printed in one paragraph and the exit status is 2.
"""

import json
import os

from absl import flags, logging
from ml_collections import config_flags

from gio_ada_jax import cli, config_checks, distributed, errors, files, models, variants
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.eval import evaluate, reports
from gio_ada_jax.train import run_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (as for train.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir; reports go into "
                               "its eval/ folder.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest; "
                             "for compare: the report of that step).")
_ALL_STEPS = flags.DEFINE_bool("all_steps", False, "Evaluate every kept checkpoint and write "
                               "the curve (eval/curve.json and TensorBoard).")
_TORCH_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", "", "Evaluate this PyTorch .pth "
                                        "instead of the workdir's checkpoints.")
_TORCH_LAYOUT = flags.DEFINE_enum("torch_layout", evaluate.TORCH_LAYOUTS[0],
                                  list(evaluate.TORCH_LAYOUTS),
                                  "Layout of --torch_checkpoint (see convert.py).")
_SAVE_PREDICTIONS = flags.DEFINE_integer("save_predictions", 0, "Write pictures of this many "
                                         "evaluated images (segmentation, depth, panels).")
_IMAGES_DIR = flags.DEFINE_string("images_dir", "", "Instead of evaluating, predict every image "
                                  "of this folder (no labels needed, not recursive) and write "
                                  "NAME_segmentation/_depth/_panel.png per file NAME.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "Where --images_dir pictures (default "
                                  "WORKDIR/eval/images; a folder apart from --images_dir, "
                                  "holding nothing else) or compare's tables go.")
_NAME = flags.DEFINE_string("name", "", "Row name in reports and comparisons (default: the "
                            "variant, e.g. '+sd,joint').")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_list("allow_config_change", [], run_config.ALLOW_FLAG_HELP)
_PROCESSES = distributed.define_flags()
flags.adopt_module_key_flags(distributed)  # list them in --help too


def _compare(paths: list[str]) -> int:
  if not paths:
    raise errors.UserError("compare needs at least one workdir or report JSON.")
  if _OUTPUT_DIR.value:  # before the reports are read, not after
    files.check_writable_folder(_OUTPUT_DIR.value, f"--output_dir {_OUTPUT_DIR.value}")
  chosen = [reports.choose_report(p, _STEP.value) for p in paths]
  given_as: dict[str, str] = {}
  for path, report in zip(paths, chosen):
    same = given_as.setdefault(os.path.realpath(report.path), path)
    if same != path or paths.count(path) > 1:
      raise errors.UserError(
          f"compare: {same} and {path} are the same report, {report.path}; give each run once "
          "(its mean ± std over runs would count it twice).")
  found = [reports.load_report(c.path) for c in chosen]
  rows = reports.compare(found)
  table = reports.compare_markdown(rows, found[0]["classes"], "miou13" in found[0]["metrics"])
  used = "\n".join(f"- {r['name']}: {reports.report_choice(p, c)}"
                   for p, c, r in zip(paths, chosen, found))
  print(f"Reports compared:\n{used}\n\n{table}")
  if _OUTPUT_DIR.value:
    files.atomic_write(os.path.join(_OUTPUT_DIR.value, "compare.md"),
                       f"{table}\n\nReports compared:\n{used}\n")
    files.atomic_write(os.path.join(_OUTPUT_DIR.value, "compare.json"),
                       json.dumps(reports.json_ready(rows), indent=1) + "\n")
  return 0


def _evaluate() -> int:
  if _CONFIG.value is None or not _WORKDIR.value:
    raise errors.UserError("--config and --workdir are required (or use `evaluate.py compare "
                           "DIR...`).")
  if _ALL_STEPS.value and (_STEP.value is not None or _TORCH_CHECKPOINT.value):
    raise errors.UserError("--all_steps evaluates every checkpoint; drop --step / "
                           "--torch_checkpoint.")
  config, workdir = _CONFIG.value, _WORKDIR.value
  config_checks.check_config(config)
  if _IMAGES_DIR.value:
    if not distributed.is_main_process():
      return 0  # a folder of images is small work: process 0 alone predicts and writes it
    output_dir = _OUTPUT_DIR.value or os.path.join(workdir_lib.evaluation(workdir), "images")
    evaluate.check_image_folders(_IMAGES_DIR.value, output_dir)  # before loading weights
    built = models.build_models(config.model, variants.from_config(config))
    weights = (evaluate.torch_weights(built, config, _TORCH_CHECKPOINT.value,
                                       _TORCH_LAYOUT.value) if _TORCH_CHECKPOINT.value
               else evaluate.latest_weights(built, config, workdir, step=_STEP.value,
                                             allow_config_change=_ALLOW_CONFIG_CHANGE.value))
    folder = evaluate.predict_images(config, weights, _IMAGES_DIR.value, output_dir)
    print(f"Predicted {len(folder.images)} images with {weights.checkpoint} -> {output_dir}")
    if folder.skipped:
      print(f"Skipped in {_IMAGES_DIR.value}: {', '.join(folder.skipped)}")
    return 0
  if os.path.isdir(workdir) and distributed.is_main_process():  # before the evaluation runs
    files.check_writable_folder(workdir_lib.evaluation(workdir),
                                f"{workdir_lib.evaluation(workdir)} (where the reports go)",
                                create=False)
  written = evaluate.evaluate(
      config, workdir, step=_STEP.value, all_steps=_ALL_STEPS.value,
      torch_checkpoint=_TORCH_CHECKPOINT.value, torch_layout=_TORCH_LAYOUT.value,
      save_predictions=_SAVE_PREDICTIONS.value, name=_NAME.value,
      allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  if distributed.is_main_process():
    print()
    print(evaluate.tables(written))
    print(f"\nReports in {workdir_lib.evaluation(workdir)}")
  return 0


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save and restore at INFO; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1 and argv[1] == "compare":
    return _compare(argv[2:])
  if len(argv) > 1:
    raise errors.UserError(f"unknown arguments {argv[1:]}; the only command is `compare`.")
  try:  # before anything touches a device
    _PROCESSES.initialize()
  except ValueError as e:
    raise errors.UserError(str(e)) from e
  return _evaluate()


if __name__ == "__main__":
  cli.run(main, "evaluate.py")
