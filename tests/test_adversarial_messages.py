"""Messages: every error says what is wrong and suggests only what the command that
prints it can do. A hostile .pth is refused without passing on torch's advice to unpickle it; a
layout mismatch names the command's own flags; `evaluate.py compare` finds every kind of report;
a prepare interrupted by a kill leaves nothing behind for long."""

import builtins
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from gio_ada_jax import models, variants  # noqa: E402
from gio_ada_jax.eval import reports  # noqa: E402
from gio_ada_jax.interop import convert  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402

SUBPROCESS_ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}
TORCH_ADVICE = ("weights_only=False", "weights_only` set to `False`", "add_safe_globals",
                "safe_globals")


def _run_all(commands: dict[str, list[str]], timeout=600) -> dict[str, tuple[int, str, str]]:
  """Run the Python commands side by side; {name: (exit status, stdout, stderr)}."""
  started = {name: subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=SUBPROCESS_ENV)
             for name, args in commands.items()}
  done = {}
  for name, process in started.items():
    out, err = process.communicate(timeout=timeout)
    done[name] = (process.returncode, out, err)
  return done


class _PrintsOnUnpickle:
  """Unpickling this calls print("PWNED"): harmless, and visible if it ever runs."""

  def __reduce__(self):
    return builtins.print, ("PWNED",)


def _hostile_pth(path) -> str:
  torch.save({"features.0.weight": torch.zeros(2), "payload": _PrintsOnUnpickle()}, str(path))
  return str(path)


def _task_net_pth(path, width: float) -> str:
  """A GIO-Ada task net state_dict of configs/test.py's networks at `width`."""
  config = tiny_training_config("unused", 1)
  config.model.width = width
  task_net = models.build_models(config.model, variants.FINAL).task_net
  image = np.zeros((1, config.data.height, config.data.width, 3), np.float32)
  params = task_net.init(jax.random.key(0), image)["params"]
  convert.save_torch_checkpoint(convert.flax_to_torch(params, "task_net"), str(path))
  return str(path)


# ------------------------------------------------------------------------ hostile .pth files


def test_a_pth_with_a_pickled_global_is_refused_without_torch_advice(tmp_path, capfd):
  path = _hostile_pth(tmp_path / "hostile.pth")
  with pytest.raises(convert.UnsafeCheckpoint) as info:
    convert.load_torch_checkpoint(path)
  message = str(info.value)
  assert message.startswith(f"{path}: refused")
  assert "references print" in message  # the global torch's reader met
  assert "torch.save(model.state_dict(), 'weights.pth')" in message
  assert not any(advice in message for advice in TORCH_ADVICE)
  assert "PWNED" not in capfd.readouterr().out


@pytest.mark.parametrize("content, says", [
    (b"", "is empty (0 bytes)"),
    (b"hello, world\n", "is not a PyTorch checkpoint: it starts with b'hello, w'"),
    ("truncated zip", "is a zip archive that torch cannot read as a checkpoint"),
    ("folder", "is a folder, not a PyTorch .pth file"),
])
def test_unreadable_pth_files_say_what_they_are(tmp_path, content, says):
  path = tmp_path / "weights.pth"
  if content == "truncated zip":
    torch.save({"w": torch.zeros(64)}, str(path))
    path.write_bytes(path.read_bytes()[:200])
  elif content == "folder":
    path.mkdir()
  else:
    path.write_bytes(content)
  with pytest.raises(convert.ConversionError) as info:
    convert.load_torch_checkpoint(str(path))
  assert str(info.value).startswith(f"{path}: {says}")
  assert not isinstance(info.value, convert.UnsafeCheckpoint)


def test_evaluate_py_refuses_a_hostile_pth_and_names_its_own_flags_on_a_mismatch(tmp_path):
  """evaluate.py --torch_checkpoint: a hostile file and one of another width each exit 2 with
  one message and no traceback; the hostile one without torch's advice, the other suggesting
  evaluate.py's flags and the config's fields, never the Python API's keywords. (With
  --images_dir, which needs no prepared data, the file is read by the same evaluate.torch_weights
  as for an evaluation.)"""
  hostile = _hostile_pth(tmp_path / "hostile.pth")
  other_width = _task_net_pth(tmp_path / "task_net.pth", width=0.125)
  images = tmp_path / "images"
  images.mkdir()
  Image.new("RGB", (48, 32)).save(images / "a.png")
  evaluate = ["evaluate.py", "--config", "configs/test.py", "--workdir", str(tmp_path / "work"),
              "--images_dir", str(images), "--torch_checkpoint"]
  results = _run_all({"hostile": evaluate + [hostile], "mismatch": evaluate + [other_width]})
  for name, (status, out, err) in results.items():
    assert status == 2 and "Traceback" not in err, (name, err[-3000:])
    assert "PWNED" not in out + err
  err = results["hostile"][2]
  assert f"evaluate.py: {hostile}: refused" in err
  assert not any(advice in err for advice in TORCH_ADVICE)
  err = results["mismatch"][2]
  assert f"--torch_checkpoint {other_width} (with --torch_layout=task_net" in err
  assert "expected (3, 3, 3, 4)" in err  # the first conv: the file has 8 channels (width 0.125)
  assert ("Check --torch_layout (task_net, deeplab_vgg) and the config's model fields "
          "(model.num_classes, model.width") in err
  assert "allow_missing" not in err and "allow_unexpected" not in err


def test_translate_and_parity_refuse_a_hostile_pth_and_name_their_own_flags(tmp_path):
  """What translate --torch_generator and parity --checkpoint print (both exit 2 on any
  ConversionError)."""
  from gio_ada_jax.interop import parity  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  hostile = _hostile_pth(tmp_path / "hostile.pth")
  task_net = _task_net_pth(tmp_path / "task_net.pth", width=0.0625)
  config = tiny_training_config("unused", 1)
  with pytest.raises(convert.UnsafeCheckpoint, match="refused"):
    translate.generator_from_torch(config, hostile)
  with pytest.raises(convert.ConversionError) as info:
    translate.generator_from_torch(config, task_net)
  message = str(info.value)
  assert message.startswith(f"--torch_generator {task_net} (with cyclegan.ngf=64, "
                            "cyclegan.num_blocks=2, model.width=0.0625) does not fit")
  assert "\n  ... and 54 more\n" in message  # 20 missing keys, 46 unexpected: 12 listed
  assert "Check the config's cyclegan.ngf, cyclegan.num_blocks and model.width" in message
  assert "allow_" not in message

  config.model.num_classes = 5
  with pytest.raises(convert.LayoutMismatch) as info:
    parity.check_network("task_net", config.model, 32, 48, checkpoint=task_net)
  assert "allow_" not in str(info.value)  # the library's message suggests no keyword either
  message = str(parity.with_cli_advice(info.value, "task_net", task_net))
  assert message.startswith(f"--checkpoint {task_net} does not fit 'task_net'")
  assert "expected (3, 3, 64, 5)" in message and "Check --network=task_net" in message


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

  results = _run_all({"compare": ["evaluate.py", "compare", str(export_only), str(with_both),
                                  "--output_dir", str(tmp_path / "out")],
                      "empty": ["evaluate.py", "compare", str(export_only), str(empty)]})
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


# --------------------------------------------------------- what an interrupted prepare leaves


def test_the_next_prepare_removes_only_the_unfinished_copy_a_killed_one_left(
    procedural_data_dir, tmp_path, capsys):
  """A prepare killed by SIGKILL leaves TFDS's incomplete.* folder (named here by TFDS's own
  function); the next prepare of that dataset version removes it, and nothing else."""
  from configs import test  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import pipeline, prepare  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.utils import file_utils  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / "data"
  shutil.copytree(procedural_data_dir, data_dir)  # complete: prepare writes nothing new
  version = pipeline.dataset_dir(str(data_dir), "procedural/source")
  # pylint: disable-next=protected-access
  left = pathlib.Path(file_utils._get_incomplete_dir(str(version)))
  (left / "procedural-train.array_record-00000-of-00001").parent.mkdir(parents=True)
  (left / "procedural-train.array_record-00000-of-00001").write_bytes(b"half")
  kept = [version.parent / "incomplete.ABC123_1.0.0",  # another version's: not ours to judge
          version.parent / "incomplete.notes", version.parent / "my_data",
          data_dir / "procedural" / f"incomplete.ABC123_{version.name}"]  # not beside it
  for path in kept:
    path.mkdir()
  a_file = version.parent / f"incomplete.XYZ789_{version.name}"
  a_file.write_text("a file, not TFDS's folder")
  a_link = version.parent / f"incomplete.LINK00_{version.name}"
  a_link.symlink_to(kept[2], target_is_directory=True)
  (version / "dataset_info.json").rename(tmp_path / "dataset_info.json")  # as if not prepared
  with pytest.raises(pipeline.DatasetNotPrepared,
                     match=f"no dataset_info.json; an interrupted prepare left {left.name}"):
    pipeline.open_split(str(data_dir), "procedural/source", "train")
  (tmp_path / "dataset_info.json").rename(version / "dataset_info.json")
  prepare.prepare("procedural", str(data_dir), test.get_config(), num_workers=1)
  assert not left.exists()
  assert f"Removed {left}: an unfinished copy of {version}" in capsys.readouterr().out
  assert all(p.is_dir() for p in kept) and a_file.is_file() and a_link.is_symlink()
  pipeline.open_split(str(data_dir), "procedural/source", "train")  # still complete


def test_sigterm_stops_prepare_after_tfds_removed_its_unfinished_copy(tmp_path):
  data_dir = tmp_path / "data"
  process = subprocess.Popen(
      [sys.executable, "-m", "gio_ada_jax.data.prepare", "--dataset", "procedural", "--config",
       "configs/test.py", "--data_dir", str(data_dir), "--num_workers", "1",
       "--config.data.procedural.num_train=5000"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SUBPROCESS_ENV)
  source = data_dir / "procedural" / "source"
  deadline = time.monotonic() + 300
  while not list(source.glob("incomplete.*")) and process.poll() is None:
    assert time.monotonic() < deadline, "prepare never started writing"
    time.sleep(0.1)
  time.sleep(1)  # rendering the 5000 examples, not starting (tqdm's own start is not clean)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 75, err[-3000:]  # as every command stopped by SIGTERM
  assert err.endswith("prepare: stopped by SIGTERM before the data being written was complete "
                      "(exit status 75); rerun the same command to resume.\n")
  assert "Traceback" not in err
  assert sorted(p.name for p in source.iterdir()) == []  # neither a copy nor its temporary


# ------------------------------------------- advice only about what the reader can change


def test_a_cg_runs_taken_translation_folder_names_what_train_py_can_change(
    procedural_data_dir, tmp_path):
  """translate_source's refusals, raised inside train.py's 'cg' stage, name no translate flag
  (--output_dir, --overwrite) but the config field or workdir that decides the folder."""
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import stage  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "work"
  output_dir = translate.translated_data_dir(str(workdir))
  config = tiny_training_config(procedural_data_dir, 1)
  config.data.source_data_dir = output_dir  # the translated copy of an earlier 'cg' run
  shutil.copytree(procedural_data_dir, output_dir)
  provenance = translate.checkpoint_provenance(translate.cyclegan_workdir(str(workdir)), 4,
                                               {"kernel": np.zeros(2)}, False)
  with pytest.raises(translate.TranslationError) as info:
    stage._translate_for_cg(  # pylint: disable=protected-access
        config, None, output_dir, provenance)
  assert str(info.value) == (
      f"{output_dir} is the data root of the source itself: the translated copy of "
      f"procedural/source would take the place of the prepared one; it needs a folder of its "
      f"own, e.g. {output_dir}/translated. A 'cg' run writes its translated source into "
      f"{output_dir}; data.source_data_dir names that folder: unset it (a 'cg' run translates "
      "data.source itself).")
  config.data.source_data_dir = ""
  shutil.rmtree(pathlib.Path(output_dir) / "procedural")
  (pathlib.Path(output_dir) / "kitti_semantics").mkdir()
  with pytest.raises(translate.TranslationError) as info:
    stage._translate_for_cg(  # pylint: disable=protected-access
        config, None, output_dir, provenance)
  assert str(info.value) == (
      f"{output_dir} holds other data (kitti_semantics); translated copies go into a folder of "
      f"their own. A 'cg' run writes its translated source into {output_dir}; move what is "
      "there elsewhere, or train in another --workdir.")


def test_a_source_data_dir_without_the_source_names_the_field_and_both_ways_to_fill_it(
    procedural_data_dir, tmp_path):
  from gio_ada_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = tiny_training_config(procedural_data_dir, 1)
  config.data.source_data_dir = str(tmp_path / "translated")
  with pytest.raises(pipeline.DatasetNotPrepared) as info:
    pipeline.train_iterator(config, local_devices=1)
  message = str(info.value)
  assert message.startswith(f"data.source_data_dir='{tmp_path}/translated' holds no "
                            "'procedural/source' of data version")
  assert f"gio_ada_jax.cyclegan.translate --config ... --output_dir {tmp_path}/translated" in message
  assert "set data.source_data_dir='' to read data.source from data.data_dir" in message

  config.data.source_data_dir = ""
  config.data.procedural.num_train = 9  # another rendering than the prepared one
  with pytest.raises(pipeline.DatasetUnusable) as info:  # train.py: exit 2, one line
    pipeline.train_iterator(config, local_devices=1)
  assert str(info.value).startswith(f"{procedural_data_dir}/procedural/source/")
  assert ("re-run `python -m gio_ada_jax.data.prepare --dataset procedural --overwrite "
          f"--data_dir {procedural_data_dir}` with this config") in str(info.value)


def test_a_sigterm_whose_exception_python_dropped_or_deferred_still_stops_the_writer():
  """Python drops what a signal handler raises inside a __del__ or a gc callback (TensorFlow
  has those); the writers' check between examples raises it again. Around starting worker
  processes it is raised once they all are started."""
  from gio_ada_jax.data import interrupts  # pylint: disable=g-import-not-at-top

  class SignalsOnDelete:
    def __del__(self):
      os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here; its exception is dropped

  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(interrupts.Terminated):
    with interrupts.terminated_on_sigterm():
      obj = SignalsOnDelete()
      del obj  # survives: only "Exception ignored in ... __del__" on stderr
      with pytest.raises(interrupts.Terminated):
        interrupts.check_terminated()  # what builders' _record does between examples
      with interrupts.sigterm_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        started = True  # not interrupted inside
      pytest.fail("sigterm_deferred did not raise at its end")
  assert started
  assert signal.getsignal(signal.SIGTERM) == before  # restored
  interrupts.check_terminated()  # nothing pending after the writer stopped
