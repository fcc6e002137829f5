"""The paper's tables with one command: every GIO-Ada row x seed trained in its own run folder
(rerun: resumed, or reused when finished), evaluated on the target, and laid out as the paper
lays the table out, mean ± std over seeds, beside the paper's published numbers.

    python -m gio_ada_jax.experiments --table 2 --config configs/vkitti_to_kitti.py \\
        --workdir runs/t2 --seeds 0,1,2 [--print_commands] [--config.field=value ...]

Tables: 1 (Virtual KITTI -> KITTI) and 4 (SYNTHIA -> Cityscapes) are the final model's ablation
(non-adapted, input level, output level, GIO-Ada) per class (Table 4's other 7 rows are other
papers' methods, not run here: docs/experiments.md); 2 the input levels (output "na");
3 the output levels (input "na"), as mIoU. A run is its variant and seed,
WORKDIR/runs/INPUT_OUTPUT_seedS, so tables that share a row (Table 2's "na" is Table 1's
non-adapted row) share its runs. Writes WORKDIR/tableN.md, tableN.json and tableN.png (a
chart: per-class IoU bars for each row, error bars over seeds, the paper's mIoU marked).

With --print_commands nothing runs: one `train.py ... && evaluate.py ...` line per run is
printed, for a cluster's job array (docs/experiments.md); rerunning without it afterwards
reuses the finished runs and writes the table.
"""

import dataclasses
import json
import os
import shlex
import sys
import time
from typing import Any, Sequence

from absl import flags, logging
from ml_collections import config_flags

from gio_ada_jax import cli, config_checks, files, trainer, variants
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.data import pipeline, prepare
from gio_ada_jax.data.labels import SYNTHIA_CITYSCAPES_16, VKITTI_KITTI_10, LabelSpace
from gio_ada_jax.errors import Preempted, UserError
from gio_ada_jax.eval import charts, evaluate, reports


@dataclasses.dataclass(frozen=True)
class Row:
  """One row (Tables 1, 4) or column (Tables 2, 3) of a paper table: the variant it trains,
  the paper's label, and the published IoU in percent (per class then mIoU (then mIoU*) for
  Tables 1 and 4; mIoU alone for Tables 2 and 3)."""

  variant: str  # "INPUT,OUTPUT"
  label: str
  paper: tuple[float, ...] = ()  # empty: not a row of the paper (the demo's oracle)
  trains_on_target_labels: bool = False  # the oracle: the target's labelled split as source

  @property
  def key(self) -> str:
    """The run folder's name stem: "+sd,joint" -> "+sd_joint" (an oracle's ends
    "_target_labels")."""
    return self.variant.replace(",", "_") + ("_target_labels" if self.trains_on_target_labels
                                             else "")

  @property
  def name(self) -> str:
    """The row's name in reports and tables: "GIO-Ada (+sd,joint)"."""
    labels = ", target labels" if self.trains_on_target_labels else ""
    return f"{self.label} ({self.variant}{labels})"


@dataclasses.dataclass(frozen=True)
class Table:
  """A table of the paper: its rows, the benchmark its published numbers are from, and
  whether it has a column per class (Tables 1, 4) or one mIoU per variant (Tables 2, 3)."""

  number: int
  caption: str
  benchmark: str
  label_space: LabelSpace
  rows: tuple[Row, ...]
  per_class: bool


# The published numbers, as printed in the paper (CVPR 2019).
TABLES = {
    1: Table(1, "Virtual KITTI -> KITTI: the adaptation levels, per class",
             "Virtual KITTI -> KITTI", VKITTI_KITTI_10, (
                 Row("na,na", "non-adapt",
                     (79.3, 60.5, 0.0, 0.3, 9.5, 66.8, 8.3, 85.9, 59.2, 4.8, 37.5)),
                 Row("+sd,na", "input-level adapt",
                     (83.2, 67.4, 10.8, 21.9, 24.5, 68.8, 6.5, 88.3, 77.8, 9.3, 45.9)),
                 Row("na,joint", "output-level adapt",
                     (81.1, 69.1, 7.1, 8.6, 28.3, 79.5, 43.3, 86.0, 79.3, 17.8, 50.0)),
                 Row("+sd,joint", "GIO-Ada",
                     (81.4, 71.2, 11.3, 26.6, 23.6, 82.8, 56.5, 88.4, 80.1, 12.7, 53.5)),
             ), per_class=True),
    2: Table(2, "Ablation of the input level (output level na), mIoU over 10 classes",
             "Virtual KITTI -> KITTI", VKITTI_KITTI_10, (
                 Row("na,na", "na", (37.5,)), Row("cg,na", "cg", (39.8,)),
                 Row("gd,na", "gd", (43.5,)), Row("+d,na", "+d", (44.2,)),
                 Row("+s,na", "+s", (44.7,)), Row("+sd,na", "+sd", (45.9,)),
             ), per_class=False),
    3: Table(3, "Ablation of the output level (input level na), mIoU over 10 classes",
             "Virtual KITTI -> KITTI", VKITTI_KITTI_10, (
                 Row("na,na", "na", (37.5,)), Row("na,ss", "ss", (45.9,)),
                 Row("na,depth", "depth", (43.8,)), Row("na,sep", "sep", (46.3,)),
                 Row("na,joint", "joint", (50.0,)),
             ), per_class=False),
    4: Table(4, "SYNTHIA -> Cityscapes: the adaptation levels, per class (mIoU*: without the "
             "starred wall, fence, pole)", "SYNTHIA -> Cityscapes", SYNTHIA_CITYSCAPES_16, (
                 Row("na,na", "non-adapt",
                     (9.7, 14.1, 58.5, 4.7, 0.3, 22.7, 1.9, 12.9, 70.7, 60.9, 50.2, 7.2, 32.2,
                      17.4, 1.3, 8.0, 23.3, 26.5)),
                 Row("+sd,na", "input-level adapt",
                     (77.0, 29.3, 67.9, 0.1, 0.1, 24.7, 10.7, 17.4, 79.4, 78.8, 49.2, 13.7,
                      70.3, 4.3, 5.8, 12.8, 33.8, 39.7)),
                 Row("na,joint", "output-level adapt",
                     (79.6, 29.7, 75.7, 11.4, 0.3, 25.3, 11.1, 14.8, 76.7, 76.9, 45.3, 15.9,
                      67.7, 15.8, 4.8, 13.5, 35.3, 40.6)),
                 Row("+sd,joint", "GIO-Ada",
                     (78.3, 29.2, 76.9, 11.4, 0.3, 26.5, 10.8, 17.2, 81.7, 81.9, 45.8, 15.4,
                      68.0, 15.9, 7.5, 30.4, 37.3, 43.0)),
             ), per_class=True),
}


class ExperimentError(UserError, ValueError):
  """A table that cannot be run as asked (unknown table, wrong benchmark, bad seeds)."""


def table(number: int) -> Table:
  """Table `number` of the paper (1 to 4)."""
  if number not in TABLES:
    raise ExperimentError(f"--table {number}: the paper's tables are {sorted(TABLES)} (1 and 4 "
                          "the adaptation levels per class, 2 the input levels, 3 the output "
                          "levels).")
  return TABLES[number]


def check_config_fits(chosen: Table, config) -> None:
  """An error when `config`'s classes are not the table's benchmark's (Table 4 on a 10-class
  config, Tables 1-3 on a 16-class one)."""
  if config.model.num_classes != chosen.label_space.num_classes:
    config_file = ("configs/synthia_to_cityscapes.py" if chosen.number == 4
                   else "configs/vkitti_to_kitti.py or configs/procedural.py")
    raise ExperimentError(
        f"Table {chosen.number} is {chosen.benchmark} ({chosen.label_space.num_classes} "
        f"classes), but this config has model.num_classes={config.model.num_classes}; use "
        f"{config_file}.")


def run_config(base_config, variant: str, seed: int, data_dir: str,
               trains_on_target_labels: bool = False):
  """The config of one run: `base_config` with the variant, seed and data folder (and, for
  an oracle, the target as the labelled source)."""
  config = base_config.copy_and_resolve_references()
  config.variant = str(variants.parse(variant))
  config.seed = seed
  config.data.data_dir = data_dir
  if trains_on_target_labels:
    config.data.source = config.data.target
  return config


def run_folder(workdir: str, key: str, seed: int) -> str:
  """WORKDIR/runs/KEY_seedS: one run's own workdir."""
  return os.path.join(workdir, "runs", f"{key}_seed{seed}")


def is_procedural(config) -> bool:
  """Whether both domains are the procedural benchmark's (rendered here, not downloaded)."""
  return all(name.startswith("procedural/") for name in (config.data.source,
                                                           config.data.target))


def data_folder(config, workdir: str) -> str:
  """Where the runs read their data: config.data.data_dir, or WORKDIR/data for the procedural
  benchmark left at the default folder (kept apart from other prepared data)."""
  default = config.data.data_dir in ("", "~/tensorflow_datasets")
  if is_procedural(config) and default:
    return os.path.join(workdir, "data")
  return config.data.data_dir


def ensure_procedural_data(config, data_dir: str, own_folder: bool) -> None:
  """Render the procedural domains into `data_dir` unless this config's are already there; a
  rendering of another config is replaced only in our `own_folder` (WORKDIR/data), refused by
  prepare elsewhere (a --config.data.data_dir the user gave)."""
  try:
    for name in (config.data.source, config.data.target):
      _, info = pipeline.open_split(data_dir, name, "train")
      pipeline.check_procedural_config(info, config.data.procedural)
    return
  except (pipeline.DatasetNotPrepared, ValueError):
    pass
  print(f"Rendering the procedural domains into {data_dir} ...", flush=True)
  prepare.prepare("procedural", data_dir, config, overwrite=own_folder)


def train_and_evaluate_run(config, workdir: str, name: str) -> dict[str, Any]:
  """Train one run (reusing a finished one: its export exists) and evaluate its task net on
  the target; the report. Raises Preempted when SIGTERM stopped the training."""
  if not os.path.exists(os.path.join(workdir_lib.export(workdir), workdir_lib.EXPORTED_PARAMS)):
    if trainer.train_and_evaluate(config, workdir) is None:
      raise Preempted(f"SIGTERM: {name} is checkpointed in {workdir}, not finished; rerun the "
                      "same command to resume.")
  [report] = evaluate.evaluate(config, workdir, name=name)
  return report


def markdown(chosen: Table, compared: list[dict[str, Any]], seeds: Sequence[int],
             measured_on: str, extra_rows: Sequence[Row] = ()) -> str:
  """The table in the paper's layout: the paper's published rows, then this project's (mean
  ± sample std over `seeds`, in percent), then `extra_rows` (not in the paper). Tables 1 and
  4: a row per method, a column per class and mIoU (and mIoU*); Tables 2 and 3: a column per
  variant, mIoU."""
  rows = chosen.rows + tuple(extra_rows)
  by_name = {row["name"]: row for row in compared}
  ours = [by_name[row.name] for row in rows]
  cell = reports.mean_std_cell
  if chosen.per_class:
    classes = list(chosen.label_space.class_names)
    summary = [("mIoU", "miou")] + ([("mIoU*", "miou13")]
                                    if chosen.label_space.starred_classes else [])
    header = ["Method", "runs"] + classes + [h for h, _ in summary]
    body = [[f"paper: {row.label}", "–"] + [f"{v:.1f}" for v in row.paper] for row in chosen.rows]
    body += [[f"here: {row.name}", str(r["runs"])] + [cell(r["iou"][c], r["runs"]) for c in classes]
             + [cell(r[key], r["runs"]) for _, key in summary] for row, r in zip(rows, ours)]
  else:
    header = [""] + [row.label for row in rows]
    body = [[f"paper ({chosen.benchmark})"]
            + [f"{row.paper[0]:.1f}" if row.paper else "–" for row in rows],
            [f"here ({measured_on}), mean ± std"] + [cell(r["miou"], r["runs"]) for r in ours]]
  seeds_text = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})"
  return (f"Table {chosen.number}. {chosen.caption}. Paper: {chosen.benchmark}, as published. "
          f"Here: {measured_on}, IoU (%) mean ± sample std over {seeds_text}.\n\n"
          + reports.markdown_rows(header, body))


# Fields the command sets for each run itself: a --config.FIELD=VALUE for one would be ignored.
SET_PER_RUN = {"variant": "the table sets each row's variant", "seed": "give --seeds",
               "data.data_dir": None}


def check_overrides(overrides: dict[str, Any]) -> None:
  """An error naming a --config.FIELD the command would overwrite for every run."""
  for field, why in SET_PER_RUN.items():
    if field in overrides and why is not None:
      raise ExperimentError(f"--config.{field}={overrides[field]}: the command sets it for "
                            f"every run ({why}); drop it.")


def _override_args(overrides: dict[str, Any]) -> list[str]:
  return [f"--config.{field}={value}" for field, value in overrides.items()
          if field not in SET_PER_RUN]


def prepare_command(config_file: str, overrides: dict[str, Any], data_dir: str) -> str:
  """The line that renders the procedural data the runs of --print_commands read."""
  return shlex.join(["python", "-m", "gio_ada_jax.data.prepare", "--dataset", "procedural",
                     f"--config={config_file}"] + _override_args(overrides)
                    + ["--data_dir", data_dir])


def commands(chosen: Table, config_file: str, overrides: dict[str, Any], workdir: str,
             data_dir: str, seeds: Sequence[int]) -> list[str]:
  """One shell line per run: `python train.py ... && python evaluate.py ...` with the run's
  variant, seed, folder and data, and the user's --config.FIELD=VALUE overrides."""
  lines = []
  for seed in seeds:
    for row in chosen.rows:
      config_args = [f"--config={config_file}:{row.variant}", f"--config.seed={seed}",
                     f"--config.data.data_dir={data_dir}"] + _override_args(overrides)
      run = ["--workdir", run_folder(workdir, row.key, seed)]
      lines.append(shlex.join(["python", "train.py"] + config_args + run) + " && "
                   + shlex.join(["python", "evaluate.py"] + config_args + run))
  return lines


@dataclasses.dataclass(frozen=True)
class TableRun:
  """What `run` made: the Markdown table, its path, the data folder, and each row's run
  folders by row key (one per seed, in seed order)."""

  text: str
  path: str
  data_dir: str
  run_folders: dict[str, list[str]]


def run(chosen: Table, base_config, workdir: str, seeds: Sequence[int],
        extra_rows: Sequence[Row] = (), stem: str = "") -> TableRun:
  """Train (or reuse) and evaluate every row x seed of `chosen` (and `extra_rows`), and write
  WORKDIR/STEM.{md,json} (STEM: tableN)."""
  check_config_fits(chosen, base_config)
  start = time.time()
  data_dir = data_folder(base_config, workdir)
  if is_procedural(base_config):
    ensure_procedural_data(base_config, data_dir,
                           own_folder=data_dir == os.path.join(workdir, "data"))
  rows = chosen.rows + tuple(extra_rows)
  found, folders = [], {}
  for seed in seeds:
    for row in rows:
      print(f"\n[{len(found) + 1}/{len(rows) * len(seeds)}] {row.name}, seed {seed} "
            f"({time.time() - start:.0f} s so far)", flush=True)
      folder = run_folder(workdir, row.key, seed)
      config = run_config(base_config, row.variant, seed, data_dir,
                          row.trains_on_target_labels)
      found.append(train_and_evaluate_run(config, folder, row.name))
      folders.setdefault(row.key, []).append(folder)
  compared = reports.compare(found)
  measured_on = f"{base_config.data.source} -> {base_config.data.target}"
  text = markdown(chosen, compared, seeds, measured_on, extra_rows)
  path = os.path.join(workdir, f"{stem or f'table{chosen.number}'}.md")
  files.atomic_write(path, text + "\n")
  charts.write_iou_bars(
      path[:-len(".md")] + ".png", compared, list(chosen.label_space.class_names),
      f"Table {chosen.number} here: {measured_on}, IoU (%) over seeds {list(seeds)}",
      {row.name: row.paper[chosen.label_space.num_classes if chosen.per_class else 0]
       for row in chosen.rows})
  files.atomic_write(path[:-len(".md")] + ".json", json.dumps(
      reports.json_ready({"table": chosen.number, "seeds": list(seeds), "rows": compared,
                          "paper": {row.name: row.paper for row in rows if row.paper},
                          "seconds": time.time() - start}), indent=1) + "\n")
  print(f"\n{text}\n\n{time.time() - start:.0f} s in all; written to {path}", flush=True)
  return TableRun(text, path, data_dir, folders)


def parse_seeds(values: Sequence[str]) -> list[int]:
  """--seeds as integers (at least one, no repeats)."""
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    seeds = []
  if not seeds or len(set(seeds)) != len(seeds):
    raise ExperimentError(f"--seeds={','.join(values)}: give distinct integers, e.g. "
                          "--seeds 0,1,2")
  return seeds


def check_run_configs(chosen: Table, config, seeds: Sequence[int],
                      extra_rows: Sequence[Row] = ()) -> None:
  """A ConfigError naming the field when any row x seed's config cannot run (a seed out of
  range, say), before anything is rendered or trained."""
  for seed in seeds:
    for row in chosen.rows + tuple(extra_rows):
      config_checks.check_config(run_config(config, row.variant, seed, config.data.data_dir,
                                            row.trains_on_target_labels))


def main_exit_code(number: int, config, config_file: str, overrides: dict[str, Any],
                   workdir: str, seed_values: Sequence[str], print_commands: bool) -> int:
  """What `python -m gio_ada_jax.experiments` does; 0, or a UserError that cli.run prints with
  its exit status (2 a usage or config error, 75 when SIGTERM stopped a run: Preempted)."""
  chosen, seeds = table(number), parse_seeds(seed_values)
  check_run_configs(chosen, config, seeds)  # not "the runs are reused": nothing ran yet
  try:
    check_overrides(overrides)
    check_config_fits(chosen, config)
    if not workdir.strip():
      raise ExperimentError("--workdir is empty; give the folder that holds the table's runs.")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise ExperimentError(f"--workdir {workdir} is a file; give the folder that holds (or "
                            "will hold) the table's runs.")
    if print_commands:
      data_dir = data_folder(config, workdir)
      if is_procedural(config):
        print("Render the data before the jobs run: "
              f"{prepare_command(config_file, overrides, data_dir)}", file=sys.stderr)
      print("\n".join(commands(chosen, config_file, overrides, workdir, data_dir, seeds)))
      return 0
    run(chosen, config, workdir, seeds)
  except config_checks.ConfigError as e:  # e.g. a finished run of another config: reused
    print(f"experiments: {e} (The runs of {workdir} are reused; give another --workdir to "
          "train with this config.)", file=sys.stderr)
    return e.exit_code
  return 0


def _main() -> None:
  """The command line (flags are defined here, not at import: the demo imports this module
  and defines its own --config)."""
  config_flag = config_flags.DEFINE_config_file(
      "config", None, "The benchmark's config file (its variant is set per row).")
  table_flag = flags.DEFINE_integer("table", None, "The paper's table: 1, 2, 3 or 4.")
  workdir_flag = flags.DEFINE_string("workdir", None, "Holds runs/, data/ (procedural) and "
                                     "tableN.{md,json}.")
  seeds_flag = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each row trains once each.")
  print_flag = flags.DEFINE_bool("print_commands", False, "Print one train.py && evaluate.py "
                                 "line per run (for a job array) instead of running them.")
  flags.mark_flags_as_required(["config", "table", "workdir"])

  def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    flag = flags.FLAGS["config"]
    config_file = config_flags.get_config_filename(flag).split(":")[0]
    sys.exit(main_exit_code(table_flag.value, config_flag.value, config_file,
                            config_flags.get_override_values(flag), workdir_flag.value,
                            seeds_flag.value, print_flag.value))

  cli.run(main, "experiments")


if __name__ == "__main__":
  _main()
