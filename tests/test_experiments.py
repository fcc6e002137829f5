"""`python -m gio_ada_jax.experiments`: the paper's tables as typed out, their layout beside the
published numbers, --print_commands (whose lines run), and a table trained, then reused."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import config_checks, experiments, variants  # noqa: E402
from gio_ada_jax import trainer  # noqa: E402
from tests import reference_tables  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


# ----------------------------------------------------------------------- the tables as typed


def test_every_table_has_the_papers_rows_in_its_order():
  rows = {n: [(r.variant, r.label) for r in t.rows] for n, t in experiments.TABLES.items()}
  levels = [("na,na", "non-adapt"), ("+sd,na", "input-level adapt"),
            ("na,joint", "output-level adapt"), ("+sd,joint", "GIO-Ada")]
  assert rows[1] == rows[4] == levels
  assert rows[2] == [(f"{level},na", level) for level in ("na", "cg", "gd", "+d", "+s", "+sd")]
  assert rows[3] == [(f"na,{level}", level) for level in ("na", "ss", "depth", "sep", "joint")]
  for t in experiments.TABLES.values():  # every row is a variant the code trains
    for row in t.rows:
      assert str(variants.parse(row.variant)) == row.variant


@pytest.mark.parametrize("number", [1, 4])
def test_published_per_class_numbers_average_to_the_published_means(number):
  """A typo in a typed-out cell shows as a mean that is not the paper's (to its rounding)."""
  t = experiments.TABLES[number]
  classes = (reference_tables.VKITTI_KITTI_10_NAMES if number == 1
             else reference_tables.SYNTHIA_CITYSCAPES_16_NAMES)
  assert tuple(t.label_space.class_names) == tuple(classes)
  for row in t.rows:
    per_class = row.paper[:len(classes)]
    assert len(row.paper) == len(classes) + (2 if number == 4 else 1), row.label
    assert sum(per_class) / len(classes) == pytest.approx(row.paper[len(classes)], abs=0.051)
    if number == 4:  # mIoU*: without wall, fence and pole
      starred = [v for i, v in enumerate(per_class) if i not in (3, 4, 5)]
      assert sum(starred) / 13 == pytest.approx(row.paper[-1], abs=0.051), row.label


def test_the_ablation_tables_agree_with_table_1_where_they_share_a_row():
  """Tables 2 and 3's na, Table 2's +sd and Table 3's joint are Table 1's rows."""
  miou = {n: {r.variant: r.paper[-1] if n != 1 else r.paper[10] for r in t.rows}
          for n, t in experiments.TABLES.items() if n < 4}
  for variant in ("na,na", "+sd,na"):
    assert miou[2][variant] == miou[1][variant]
  for variant in ("na,na", "na,joint"):
    assert miou[3][variant] == miou[1][variant]


def test_an_unknown_table_or_a_config_of_another_benchmark_is_an_error():
  with pytest.raises(experiments.ExperimentError, match=r"--table 5: the paper's tables are "
                     r"\[1, 2, 3, 4\]"):
    experiments.table(5)
  config = tiny_training_config("/nowhere", 1)  # 10 classes
  with pytest.raises(experiments.ExperimentError,
                     match=r"Table 4 is SYNTHIA -> Cityscapes \(16 classes\), but this config "
                           r"has model.num_classes=10; use configs/synthia_to_cityscapes.py"):
    experiments.check_config_fits(experiments.TABLES[4], config)
  for bad in (["0", "x"], ["0", "0"], []):
    with pytest.raises(experiments.ExperimentError, match="give distinct integers"):
      experiments.parse_seeds(bad)


# ----------------------------------------------------------------------------- the layout


def _report(name: str, miou: float, classes) -> dict:
  return {"name": name, "classes": list(classes), "dataset": "procedural/target",
          "split": "validation", "resolution": "label", "checkpoint": "checkpoints/1",
          "metrics": {"miou": miou, "iou": {c: miou for c in classes}}}


def test_tables_2_and_3_are_laid_out_as_the_paper_with_its_numbers_above_ours():
  t = experiments.TABLES[3]
  classes = t.label_space.class_names
  found = [_report(row.name, 0.1 * (i + 1) + 0.01 * seed, classes)
           for seed in (0, 1) for i, row in enumerate(t.rows)]
  text = experiments.markdown(t, experiments.reports.compare(found), [0, 1], "A -> B")
  lines = text.splitlines()
  assert lines[0].startswith("Table 3. Ablation of the output level")
  assert "IoU (%) mean ± sample std over 2 seeds (0, 1)" in lines[0]
  assert lines[2:] == [
      "|  | na | ss | depth | sep | joint |",
      "|---|---|---|---|---|---|",
      "| paper (Virtual KITTI -> KITTI) | 37.5 | 45.9 | 43.8 | 46.3 | 50.0 |",
      "| here (A -> B), mean ± std | 10.5 ± 0.7 | 20.5 ± 0.7 | 30.5 ± 0.7 | 40.5 ± 0.7 | "
      "50.5 ± 0.7 |"]


def test_table_1_has_a_row_per_method_and_a_column_per_class_paper_first():
  t = experiments.TABLES[1]
  classes = t.label_space.class_names
  found = [_report(row.name, 0.25, classes) for row in t.rows]
  lines = experiments.markdown(t, experiments.reports.compare(found), [3], "A -> B").splitlines()
  assert lines[2] == "| Method | runs | " + " | ".join(classes) + " | mIoU |"
  assert lines[4] == ("| paper: non-adapt | – | 79.3 | 60.5 | 0.0 | 0.3 | 9.5 | 66.8 | 8.3 | "
                      "85.9 | 59.2 | 4.8 | 37.5 |")
  assert lines[8] == "| here: non-adapt (na,na) | 1 | " + " | ".join(["25.0"] * 11) + " |"
  assert [line.split(" | ")[0] for line in lines[4:]] == (
      [f"| paper: {row.label}" for row in t.rows]
      + [f"| here: {row.label} ({row.variant})" for row in t.rows])


# ------------------------------------------------------------------------- print_commands


def _experiments(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "gio_ada_jax.experiments", *args], cwd=REPO,
                        capture_output=True, text=True, check=False, timeout=timeout,
                        env=SUBPROCESS_ENV)


def test_print_commands_prints_one_runnable_line_per_run(procedural_data_dir, tmp_path):
  workdir = tmp_path / "t3"
  result = _experiments("--table", "3", "--config", "configs/test.py", "--workdir",
                        str(workdir), "--seeds", "0,1", "--print_commands",
                        f"--config.data.data_dir={procedural_data_dir}",
                        "--config.train.num_steps=1", "--config.train.checkpoint_every=1")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert len(lines) == 10  # 5 rows x 2 seeds
  expected_runs = [f"{workdir}/runs/{row.key}_seed{seed}" for seed in (0, 1)
                   for row in experiments.TABLES[3].rows]
  for line, run in zip(lines, expected_runs):
    train, evaluate = line.split(" && ")
    variant = os.path.basename(run).rsplit("_seed", 1)[0].replace("_", ",")
    seed = run[-1]
    for command, script in ((train, "train.py"), (evaluate, "evaluate.py")):
      assert command.startswith(f"python {script} --config=configs/test.py:{variant} "
                                f"--config.seed={seed} "), command
      assert f"--config.data.data_dir={procedural_data_dir}" in command
      assert "--config.train.num_steps=1" in command and command.endswith(f"--workdir {run}")
  assert not workdir.exists()  # nothing ran
  assert result.stderr.strip().endswith(
      "Render the data before the jobs run: python -m gio_ada_jax.data.prepare --dataset "
      f"procedural --config=configs/test.py --config.train.num_steps=1 "
      f"--config.train.checkpoint_every=1 --data_dir {procedural_data_dir}")
  # One printed line, as a job array would run it: it trains and evaluates that run.
  python = os.path.dirname(sys.executable)
  line = lines[6].replace("python ", f"{python}/python ")  # na,ss seed 1
  done = subprocess.run(line, shell=True, cwd=REPO, capture_output=True, text=True,
                        check=False, timeout=600, env=SUBPROCESS_ENV)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (workdir / "runs" / "na_ss_seed1" / "eval" / "step_1.json").exists()


def test_print_commands_with_a_bad_table_or_seed_exits_2_naming_it(tmp_path):
  result = _experiments("--table", "7", "--config", "configs/test.py", "--workdir",
                        str(tmp_path), "--print_commands")
  assert result.returncode == 2 and "experiments: --table 7: the paper's tables" in result.stderr
  assert "Traceback" not in result.stderr
  result = _experiments("--table", "1", "--config", "configs/test.py", "--workdir",
                        str(tmp_path), "--seeds", "0,a", "--print_commands")
  assert result.returncode == 2 and "--seeds=0,a: give distinct integers" in result.stderr
  result = _experiments("--table", "1", "--config", "configs/test.py", "--workdir",
                        str(tmp_path), "--print_commands", "--config.seed=4")
  assert result.returncode == 2 and ("experiments: --config.seed=4: the command sets it for "
                                     "every run (give --seeds); drop it.") in result.stderr
  a_file = tmp_path / "a_file"
  a_file.write_text("not a folder")
  result = _experiments("--table", "3", "--config", "configs/test.py", "--workdir", str(a_file))
  assert result.returncode == 2 and f"experiments: --workdir {a_file} is a file" in result.stderr
  assert "Traceback" not in result.stderr and a_file.read_text() == "not a folder"


# --------------------------------------------------------------------- a table, trained


def test_a_table_trains_every_run_then_reuses_them(procedural_data_dir, tmp_path, capsys,
                                                   monkeypatch):
  config = tiny_training_config(procedural_data_dir, 1)
  config.train.checkpoint_every = 1
  t = experiments.TABLES[3]
  text = experiments.run(t, config, str(tmp_path), [0]).text
  for row in t.rows:
    assert (tmp_path / "runs" / f"{row.key}_seed0" / "export").is_dir()
  assert (tmp_path / "table3.md").read_text().strip() == text
  assert "[5/5] joint (na,joint), seed 0" in capsys.readouterr().out

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(trainer, "train_and_evaluate", no_training)
  assert experiments.run(t, config, str(tmp_path), [0]).text == text  # reused, evaluated again


def test_a_seed_that_cannot_run_is_refused_before_anything_is_rendered_or_trained(tmp_path):
  """It used to be refused when its first run came up, after the other seeds' runs had
  trained (and then as "the runs are reused")."""
  from configs import test  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "t3"
  with pytest.raises(config_checks.ConfigError, match=r"^the config cannot run: seed=2147483648: "
                                                      r"must be a whole number from 0 to 2\*\*31"):
    experiments.main_exit_code(3, test.get_config(), "configs/test.py", {}, str(workdir),
                               ["0", str(2**31)], print_commands=False)
  assert not workdir.exists()
