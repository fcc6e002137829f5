"""`evaluate.py compare` (eval/reports.py): it finds every kind of report and refuses depth
metrics of different depth ranges."""

import json

import numpy as np
import pytest

from gio_ada_jax.eval import reports
from tests.conftest import run_side_by_side


# ---------------------------------------------------------------------- compare's reports


def _write_report(workdir, stem: str, miou: float, resolution: str = "label"):
  step = int(stem.split("_")[1]) if stem.startswith("step_") else None
  metrics = {"iou": {"road": miou, "sky": miou}, "miou": miou, "pixel_accuracy": 0.5,
             "mean_accuracy": 0.5, "num_images": 4}
  report = reports.make_report(
      name="+sd,joint", variant="+sd,joint", checkpoint=stem, step=step, dataset="d",
      split="validation", class_names=["road", "sky"], resolution=resolution, metrics=metrics,
      confusion=np.eye(2), seconds=1.0)
  reports.write_report(str(workdir / "eval"), stem, report)


def test_compare_refuses_depth_metrics_of_different_depth_ranges():
  """eval.depth_min_m / depth_max_m change abs_rel and the rest; reports used to leave the range
  out, so compare put a capped run's depth metrics beside an uncapped one's."""
  metrics = {"iou": {"road": 0.5}, "miou": 0.5, "num_images": 4}

  def report(name, depth_range_m):
    return reports.make_report(
        name=name, variant="+sd,joint", checkpoint="checkpoints/6", step=6, dataset="d",
        split="validation", class_names=["road"], resolution="label", metrics=metrics,
        confusion=np.eye(1), seconds=1.0, depth_range_m=depth_range_m)

  uncapped, capped = report("a", (1e-3, 0.0)), report("b", (1e-3, 80.0))
  assert capped["depth_range_m"] == [1e-3, 80.0]
  with pytest.raises(ValueError) as raised:
    reports.compare([uncapped, capped])
  assert str(raised.value) == (
      "reports whose depth metrics score different depth ranges cannot be compared: a "
      "(checkpoints/6): [0.001, 0.0] m, b (checkpoints/6): [0.001, 80.0] m. Evaluate them "
      "again with the same --config.eval.depth_min_m and --config.eval.depth_max_m.")
  older = dict(uncapped, depth_range_m=None)  # written before the range was recorded
  assert len(reports.compare([uncapped, report("b", (1e-3, 0.0)), older])) == 2


def test_compare_finds_the_export_report_and_says_which_report_each_row_used(tmp_path):
  """A finished run evaluated after its checkpoints were removed has only eval/export.json."""
  export_only, with_both, torch_only, empty = (tmp_path / n for n in ("a", "b", "c", "d"))
  _write_report(export_only, "export", 0.5)
  _write_report(with_both, "step_3", 0.1)  # evaluated during training
  _write_report(with_both, "export", 0.3)  # the final network, evaluated later
  _write_report(with_both, "step_6_input", 0.9)  # another protocol: never mixed in
  _write_report(torch_only, "torch_adaptsegnet", 0.2)
  empty.mkdir()
  reports.update_curve(str(with_both / "eval"), json.loads(
      (with_both / "eval" / "step_3.json").read_text()))  # curve.json is not a report
  assert reports.choose_report(str(export_only)).kind == "export"
  assert reports.choose_report(str(with_both)).path == str(with_both / "eval" / "export.json")
  assert reports.choose_report(str(with_both), step=3).step == 3
  assert reports.choose_report(str(torch_only)).kind == "torch"
  _write_report(torch_only, "torch_other", 0.2)
  with pytest.raises(FileNotFoundError, match="several PyTorch checkpoints.*torch_other.json"):
    reports.choose_report(str(torch_only))

  a_number = tmp_path / "five.json"
  a_number.write_text("5\n")
  results = run_side_by_side({"compare": ["evaluate.py", "compare", str(export_only), str(with_both),
                                  "--output_dir", str(tmp_path / "out")],
                      "empty": ["evaluate.py", "compare", str(export_only), str(empty)],
                      "twice": ["evaluate.py", "compare", str(with_both), str(export_only),
                                str(with_both / "eval" / "export.json")],
                      "a number": ["evaluate.py", "compare", str(export_only), str(a_number)],
                      "into a file": ["evaluate.py", "compare", str(export_only),
                                      "--output_dir", str(a_number)],
                      "not creatable": ["evaluate.py", "compare", str(export_only),
                                        "--output_dir", "/proc/gio_ada_jax_test/out"]})
  status, out, err = results["compare"]
  assert status == 0, err[-3000:]
  assert (f"- +sd,joint: {export_only} -> {export_only}/eval/export.json (the export: the "
          "finished run's final network)\n") in out
  assert (f"- +sd,joint: {with_both} -> {with_both}/eval/export.json (the export: the finished "
          "run's final network); it also has step_3.json, step_6_input.json") in out
  assert "| +sd,joint | 2 | 40.0 ± 14.1 | 40.0 ± 14.1 | 40.0 ± 14.1 |" in out
  assert "Reports compared:" in (tmp_path / "out" / "compare.md").read_text()
  status, _, err = results["empty"]
  assert status == 2 and err == (
      f"evaluate.py: {empty}: no evaluation report in {empty}/eval; run `python evaluate.py "
      f"--config ... --workdir {empty}` first (it writes a report of the latest checkpoint, or "
      "of the export when the checkpoints are gone).\n")
  status, out, err = results["twice"]
  assert status == 2 and err == (
      f"evaluate.py: compare: {with_both} and {with_both}/eval/export.json are the same report, "
      f"{with_both}/eval/export.json; give each run once (its mean ± std over runs would count "
      "it twice).\n") and not out
  for name, message in [
      ("a number", f"{a_number}: not an evaluation report (it holds a JSON int, not an object)."),
      ("into a file", f"--output_dir {a_number} is a file, not a folder; give a folder (a new "
                      "one is created)."),
      ("not creatable", "--output_dir /proc/gio_ada_jax_test/out: cannot create that folder "
                        "(No such file or directory); give one this user can write.")]:
    status, out, err = results[name]
    assert (status, err) == (2, f"evaluate.py: {message}\n"), (name, err[-2000:])
  assert a_number.read_text() == "5\n"
