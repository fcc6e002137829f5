"""Evaluation reports: tables in the paper's layout (Tables 1 and 4), JSON, curves, comparisons.

A report is a JSON-ready dict (see `make_report`). Tables give IoU in percent with one decimal,
one column per class in the benchmark's order, then mIoU (and mIoU* for the 16 classes).
`compare` groups reports by run name (by default the variant "INPUT,OUTPUT") and gives mean ±
sample standard deviation over the runs of each group: seeds of one variant, or ablations.
"""

import dataclasses
import glob
import json
import math
import os
import re
from typing import Any, Iterable

import numpy as np

from gio_ada_jax import workdir
from gio_ada_jax.errors import InputError, MissingInput
from gio_ada_jax.files import atomic_write
from gio_ada_jax.eval.metrics import DEPTH_METRICS

_STEP_REPORT = re.compile(r"step_(\d+)")  # a checkpoint report's stem (report_stem)
MISSING = "–"  # a NaN cell: the class appears in neither ground truth nor prediction


def make_report(*, name: str, variant: str, checkpoint: str, step: int | None, dataset: str,
                split: str, class_names: Iterable[str], resolution: str,
                metrics: dict[str, Any], confusion: np.ndarray, seconds: float,
                depth_range_m: tuple[float, float] | None = None) -> dict[str, Any]:
  """One evaluation as a JSON-ready dict (NaN as None); `depth_range_m`: the true depths
  scored (eval.depth_min_m, eval.depth_max_m), None without depth metrics."""
  return json_ready({
      "name": name, "variant": variant, "checkpoint": checkpoint, "step": step,
      "dataset": dataset, "split": split, "classes": list(class_names),
      "resolution": resolution,
      "depth_range_m": None if depth_range_m is None else list(depth_range_m),
      "metrics": metrics,
      "confusion_matrix": np.asarray(confusion).tolist(),
      "images_per_s": metrics.get("num_images", 0) / seconds if seconds > 0 else None,
  })


def json_ready(value):
  """`value` with tuples as lists, numpy scalars as Python numbers and NaN/inf as None."""
  if isinstance(value, dict):
    return {k: json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return None if not math.isfinite(float(value)) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def _value(x) -> float:
  return math.nan if x is None else float(x)


def percent(x) -> str:
  """A fraction as a table cell: percent with one decimal, MISSING for NaN/None."""
  x = _value(x)
  return MISSING if math.isnan(x) else f"{100 * x:.1f}"


def _summary_columns(report: dict[str, Any]) -> list[tuple[str, str]]:
  """(header, metrics key) of the columns after the classes: mIoU, and mIoU* when present."""
  columns = [("mIoU", "miou")]
  if "miou13" in report["metrics"]:
    columns.append(("mIoU*", "miou13"))
  return columns


def markdown_rows(header: list[str], rows: list[list[str]]) -> str:
  """A Markdown table of `header` and `rows` (cells as given)."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def markdown_table(reports: list[dict[str, Any]]) -> str:
  """Per-class IoU and mIoU, one row per report (paper Tables 1 and 4)."""
  first = reports[0]
  columns = _summary_columns(first)
  header = ["Method"] + first["classes"] + [c for c, _ in columns]
  rows = [[_row_label(r)] + [percent(r["metrics"]["iou"][c]) for c in first["classes"]]
          + [percent(r["metrics"][k]) for _, k in columns] for r in reports]
  return markdown_rows(header, rows)


def _row_label(report: dict[str, Any]) -> str:
  where = f"step {report['step']}" if report["step"] is not None else report["checkpoint"]
  return f"{report['name']} ({where})"


def depth_table(reports: list[dict[str, Any]]) -> str | None:
  """Depth errors, one row per report that has them; None if none has."""
  with_depth = [r for r in reports if r["metrics"].get("depth")]
  if not with_depth:
    return None
  rows = [[_row_label(r)] + [_depth_cell(r["metrics"]["depth"][m]) for m in DEPTH_METRICS]
          for r in with_depth]
  return markdown_rows(["Method"] + list(DEPTH_METRICS), rows)


def _depth_cell(x) -> str:
  x = _value(x)
  return MISSING if math.isnan(x) else f"{x:.3f}"


def report_markdown(report: dict[str, Any]) -> str:
  """A report as Markdown: the IoU table, accuracies, depth errors."""
  metrics = report["metrics"]
  parts = [f"# {report['name']}: {report['dataset']} {report['split']}",
           f"Checkpoint: {report['checkpoint']}. {metrics['num_images']} images scored at "
           f"{report['resolution']} resolution.", "",
           markdown_table([report]), "",
           f"Pixel accuracy {percent(metrics['pixel_accuracy'])}, mean class accuracy "
           f"{percent(metrics['mean_accuracy'])}. IoU in percent; {MISSING}: the class is in "
           "neither the ground truth nor the prediction (left out of the mean)."]
  depth = depth_table([report])
  if depth:
    parts += ["", f"Depth ({metrics['depth']['num_images']} images with ground truth, "
              "metres, per-image means):", "", depth]
  return "\n".join(parts) + "\n"


def write_report(directory: str, stem: str, report: dict[str, Any]) -> tuple[str, str]:
  """Write `stem`.json and `stem`.md into `directory`; their paths."""
  json_path = os.path.join(directory, stem + ".json")
  md_path = os.path.join(directory, stem + ".md")
  atomic_write(json_path, json.dumps(report, indent=1) + "\n")
  atomic_write(md_path, report_markdown(report))
  return json_path, md_path


def curve_point(report: dict[str, Any]) -> dict[str, Any]:
  """The scalars of a report that go into the training curve."""
  metrics = report["metrics"]
  point = {"step": report["step"], "miou": metrics["miou"],
           "pixel_accuracy": metrics["pixel_accuracy"]}
  if "miou13" in metrics:
    point["miou13"] = metrics["miou13"]
  for name, value in (metrics.get("depth") or {}).items():
    if name != "num_images":
      point[f"depth_{name}"] = value
  return point


def report_stem(step: int | None, source: str, resolution: str) -> str:
  """File name (without suffix) of a report: step_N, export or torch_NAME; `_input` added
  when scored at the input size, so the two protocols never overwrite each other."""
  stem = f"step_{step}" if step is not None else source
  return stem if resolution == "label" else f"{stem}_input"


def curve_name(resolution: str) -> str:
  """curve.json (label resolution, the default protocol) or curve_input.json."""
  return "curve.json" if resolution == "label" else "curve_input.json"


def update_curve(directory: str, report: dict[str, Any]) -> str:
  """Add (or replace) the report's step in its curve file; the file's path."""
  path = os.path.join(directory, curve_name(report["resolution"]))
  points = {}
  if os.path.exists(path):
    try:
      with open(path) as f:
        points = {p["step"]: p for p in json.load(f)}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
      raise InputError(f"{path}: not a readable curve ({e}); delete it to start a new one.") \
          from None
  points[report["step"]] = curve_point(report)
  text = json.dumps(sorted(points.values(), key=lambda p: p["step"]), indent=1) + "\n"
  atomic_write(path, text)
  return path


# --------------------------------------------------------------------------------- compare


@dataclasses.dataclass(frozen=True)
class FoundReport:
  """A report file of a workdir's eval folder, described by its name (report_stem)."""

  path: str
  kind: str  # "checkpoint", "export", "torch" or "file" (a report given by another name)
  step: int | None  # checkpoint reports
  resolution: str  # "label" or "input"

  def describe(self) -> str:
    what = {"checkpoint": f"checkpoint step {self.step}",
            "export": "the export: the finished run's final network",
            "torch": f"a PyTorch checkpoint ({os.path.basename(self.path)})",
            "file": "the report file given"}[self.kind]
    return what + (", scored at the input size" if self.resolution == "input" else "")


def parse_report_name(path: str) -> FoundReport | None:
  """The report that `path` is by its name (step_N, export, torch_NAME, each maybe _input), or
  None for another file (curve.json, compare.json, ...)."""
  stem, suffix = os.path.splitext(os.path.basename(path))
  if suffix != ".json":
    return None
  resolution = "input" if stem.endswith("_input") else "label"
  stem = stem.removesuffix("_input")
  if stem == "export":
    return FoundReport(path, "export", None, resolution)
  if stem.startswith("torch_"):
    return FoundReport(path, "torch", None, resolution)
  step = _STEP_REPORT.fullmatch(stem)
  return FoundReport(path, "checkpoint", int(step.group(1)), resolution) if step else None


def _eval_folder_reports(path: str) -> list[FoundReport]:
  found = sorted(glob.glob(os.path.join(workdir.evaluation(path), "*.json")))
  return [r for r in map(parse_report_name, found) if r is not None]


def workdir_reports(path: str) -> list[FoundReport]:
  """The reports in the workdir's eval folder at label resolution (the default protocol), or
  if it has none those scored at the input size."""
  found = _eval_folder_reports(path)
  return [r for r in found if r.resolution == "label"] or found


def find_report(path: str, step: int | None = None) -> str:
  """The path of `choose_report`'s report."""
  return choose_report(path, step).path


def choose_report(path: str, step: int | None = None) -> FoundReport:
  """The report of `path`: the JSON file itself, or from a workdir's eval folder the report of
  checkpoint `step`, by default the export's (the finished run's final network, later than
  any checkpoint of the run), else the latest checkpoint's, else its only PyTorch one."""
  if os.path.isfile(path):
    return parse_report_name(path) or FoundReport(path, "file", None, "label")
  if not os.path.isdir(path):
    raise MissingInput(f"{path}: neither a report JSON nor a workdir.")
  found = workdir_reports(path)
  steps = {r.step: r for r in found if r.kind == "checkpoint"}
  if step is not None:
    if step not in steps:
      raise MissingInput(f"{path}: no evaluation report of checkpoint step {step} (have "
                         f"{sorted(steps) or 'none'}); run `python evaluate.py --config "
                         f"... --workdir {path} --step {step}` first.")
    return steps[step]
  exports = [r for r in found if r.kind == "export"]
  torch_reports = [r for r in found if r.kind == "torch"]
  if exports:
    return exports[0]
  if steps:
    return steps[max(steps)]
  if len(torch_reports) == 1:
    return torch_reports[0]
  if torch_reports:
    raise MissingInput(
        f"{path}: holds reports of several PyTorch checkpoints and none of its own run "
        f"({', '.join(os.path.basename(r.path) for r in torch_reports)}); pass the report file "
        "itself.")
  raise MissingInput(
      f"{path}: no evaluation report in {workdir.evaluation(path)}; run `python evaluate.py "
      f"--config ... --workdir {path}` first (it writes a report of the latest checkpoint, or "
      "of the export when the checkpoints are gone).")


def report_choice(path: str, chosen: FoundReport) -> str:
  """One line: which report of `path` a comparison uses, and which others the workdir has."""
  if chosen.path == path:
    return f"{path} ({chosen.describe()})"
  others = [os.path.basename(r.path) for r in _eval_folder_reports(path)
            if r.path != chosen.path]
  also = (f"; it also has {', '.join(others)} (--step N picks a checkpoint's report; pass a "
          "report file to compare that one)" if others else "")
  return f"{path} -> {chosen.path} ({chosen.describe()}){also}"


def load_report(path: str) -> dict[str, Any]:
  """Read a report JSON, with an error naming the file if it is not one."""
  try:
    with open(path) as f:
      report = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise InputError(f"{path}: not a readable evaluation report ({e}).") from None
  if not isinstance(report, dict):
    raise InputError(f"{path}: not an evaluation report (it holds a JSON "
                     f"{type(report).__name__}, not an object).")
  missing = {"name", "classes", "metrics"} - set(report)
  if missing:
    raise InputError(f"{path}: not an evaluation report (no {sorted(missing)}).")
  if not (isinstance(report["classes"], list) and isinstance(report["metrics"], dict)):
    raise InputError(f"{path}: not an evaluation report (its classes are not a list or its "
                     "metrics not an object).")
  return report


def _mean_std(values: list[float]) -> tuple[float, float]:
  finite = np.asarray([v for v in values if not math.isnan(v)], np.float64)
  if finite.size == 0:
    return math.nan, math.nan
  return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0


def compare(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Group reports by name (in order of appearance); mean and std of every IoU and mean."""
  classes = reports[0]["classes"]
  for report in reports[1:]:
    for key in ("classes", "dataset", "split", "resolution"):
      if report.get(key) != reports[0].get(key):
        raise InputError(
            f"reports of different {key} cannot be compared: {reports[0].get(key)!r} "
            f"({reports[0]['name']}, {reports[0].get('checkpoint')}) and {report.get(key)!r} "
            f"({report['name']}, {report.get('checkpoint')}).")
  ranges = {tuple(r["depth_range_m"]) for r in reports if r.get("depth_range_m")}
  if len(ranges) > 1:  # reports written before the range was recorded are not checked
    raise InputError(
        "reports whose depth metrics score different depth ranges cannot be compared: "
        + ", ".join(f"{r['name']} ({r.get('checkpoint')}): {r['depth_range_m']} m" for r in reports
                    if r.get("depth_range_m"))
        + ". Evaluate them again with the same --config.eval.depth_min_m and "
        "--config.eval.depth_max_m.")
  groups: dict[str, list[dict[str, Any]]] = {}
  for report in reports:
    groups.setdefault(report["name"], []).append(report)
  keys = [k for _, k in _summary_columns(reports[0])]
  rows = []
  for name, members in groups.items():
    row = {"name": name, "runs": len(members),
           "checkpoints": [m.get("checkpoint") for m in members], "iou": {}}
    for c in classes:
      row["iou"][c] = _mean_std([_value(m["metrics"]["iou"][c]) for m in members])
    for key in keys:
      row[key] = _mean_std([_value(m["metrics"].get(key)) for m in members])
    rows.append(row)
  return rows


def mean_std_cell(pair: tuple[float, float], runs: int) -> str:
  """A (mean, std) fraction pair as a cell in percent: "m ± s", "m" for one run, MISSING."""
  mean, std = pair
  if math.isnan(mean):
    return MISSING
  # One run has no spread to show: its value alone, not a misleading "± 0.0".
  return f"{100 * mean:.1f}" if runs == 1 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def compare_markdown(rows: list[dict[str, Any]], classes: list[str],
                     with_miou13: bool) -> str:
  """The comparison as a table: mean ± std (over runs) per class and mIoU, one row a group
  (a group of one run shows its values without a spread)."""
  summary = [("mIoU", "miou")] + ([("mIoU*", "miou13")] if with_miou13 else [])
  header = ["Method", "runs"] + classes + [h for h, _ in summary]
  body = [[r["name"], str(r["runs"])]
          + [mean_std_cell(r["iou"][c], r["runs"]) for c in classes]
          + [mean_std_cell(r[k], r["runs"]) for _, k in summary] for r in rows]
  return markdown_rows(header, body)
