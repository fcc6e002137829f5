"""Damaged checkpoints: a latest checkpoint that does not restore (a
truncated file, flipped bytes, an empty _METADATA, a missing item) is named with the reason and
set aside, never deleted, and training resumes from the previous one; evaluation falls back the
same way and leaves it in place; an explicitly requested damaged step, and a workdir none of
whose checkpoints restores, are clear errors; a workdir with an export but no complete
checkpoint evaluates the export.

Each test damages a copy of the session's trained run (checkpoints 3 and 6, the export).
"""

import json
import os
import shutil
import subprocess
import sys

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import config_checks, models, variants  # noqa: E402
from gio_ada_jax.eval import evaluate  # noqa: E402
from gio_ada_jax.train import checkpoint, loop, run_config  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402

SUBPROCESS_ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}


def _largest_array_file(folder) -> str:
  """The biggest of the state item's data files (orbax's OCDBT chunks under .../d/)."""
  files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(folder, "state"))
           if os.path.basename(root) == "d" for name in names]
  return max(files, key=os.path.getsize)


def _truncate(folder) -> None:
  path = _largest_array_file(folder)
  os.truncate(path, os.path.getsize(path) // 2)


def _read_state_item(folder):
  """The state item's arrays as orbax alone reads them (no checksums); raises what orbax
  raises."""
  return jax.tree.leaves(ocp.PyTreeCheckpointer().restore(os.path.join(folder, "state")))


def _flip_bytes(folder) -> None:
  """One byte inverted in the largest data file where orbax reads the checkpoint back, with no
  error, as other values: the damage only the checksums can see.

  The chunks are zstd-compressed and their order in the file varies between runs, so a flip at
  a fixed offset may land in a block whose decoding fails (an orbax error, another test's case);
  the offsets are tried in turn until one reads back silently wrong.
  """
  path = _largest_array_file(folder)
  size = os.path.getsize(path)
  original = _read_state_item(folder)
  with open(path, "r+b") as f:
    for offset in (size * k // 32 for k in range(8, 32)):
      f.seek(offset)
      byte = f.read(1)[0]
      f.seek(offset)
      f.write(bytes([byte ^ 0xFF]))
      f.flush()
      try:
        values = _read_state_item(folder)
      except Exception:  # pylint: disable=broad-except  (orbax saw this one: try the next)
        values = original
      if any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(values, original)):
        return
      f.seek(offset)
      f.write(bytes([byte]))
  raise AssertionError(f"no byte of {path} reads back silently wrong when flipped")


def _empty_metadata(folder) -> None:
  open(os.path.join(folder, "state", "_METADATA"), "w").close()


def _without_data_item(folder) -> None:
  shutil.rmtree(os.path.join(folder, "data"))


def _without_state_item(folder) -> None:
  shutil.rmtree(os.path.join(folder, "state"))


# damage -> the start of the reason the message gives
DAMAGES = {
    "truncated file": (_truncate, "ValueError: "),
    "flipped bytes": (_flip_bytes, "checksum mismatch, damaged files: "),
    "empty _METADATA": (_empty_metadata, "JSONDecodeError: Expecting value"),
    "missing data item": (_without_data_item, 'KeyError: Item "data" was not found'),
    "missing state item": (_without_state_item, 'KeyError: Item "state" was not found'),
}


def _files(folder) -> dict[str, int]:
  """Every file under `folder` by relative path, with its size."""
  return {os.path.relpath(os.path.join(root, name), folder):
          os.path.getsize(os.path.join(root, name))
          for root, _, names in os.walk(folder) for name in names}


@pytest.fixture
def workdir(trained_run, tmp_path):
  """A copy of the trained run's workdir (checkpoints 3 and 6, export)."""
  path = tmp_path / "work"
  shutil.copytree(trained_run[1], path)
  return path


@pytest.fixture
def built_and_config(procedural_data_dir):
  config = tiny_training_config(procedural_data_dir, 6)
  return models.build_models(config.model, variants.FINAL), config


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_training_resumes_from_the_previous_checkpoint_and_sets_the_damaged_one_aside(
    damage, trained_run, workdir, capsys):
  corrupt, reason = DAMAGES[damage]
  bad = workdir / "checkpoints" / "6"
  corrupt(bad)
  files = _files(bad)
  checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None)
  try:
    restored = loop.resume(checkpointer, trained_run[0], str(workdir))
    assert restored.step == int(restored.state.step) == 3
    assert restored.data == {"source": {"next_index": 3}, "target": {"next_index": 3},
                           "global_batch": 4, "process_count": 1}
    assert checkpointer.all_steps() == [3]
    # The resumed run writes step 6 again: no collision with the damaged one.
    checkpointer.save(6, restored.state, restored.data)
    checkpointer.wait()
    assert checkpointer.all_steps() == [3, 6]
  finally:
    checkpointer.close()
  aside = workdir / "checkpoints_unrestorable" / "6"
  out = capsys.readouterr().out
  assert f"Skipped checkpoint {bad}: it cannot be restored ({reason}" in out, out
  assert f"moved it to {aside} (kept, not deleted)." in out, out
  assert f"Resumed from step 3 in {workdir}.\n" in out, out
  assert _files(aside) == files  # moved whole, nothing deleted


def test_a_step_damaged_twice_is_set_aside_twice(trained_run, workdir, capsys):
  checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None)
  try:
    for _ in range(2):
      _flip_bytes(workdir / "checkpoints" / "6")
      restored = loop.resume(checkpointer, trained_run[0], str(workdir))
      checkpointer.save(6, restored.state, restored.data)
      checkpointer.wait()
  finally:
    checkpointer.close()
  aside = workdir / "checkpoints_unrestorable"
  assert sorted(p.name for p in aside.iterdir()) == ["6", "6.2"]
  assert f"moved it to {aside / '6.2'} (kept, not deleted)." in capsys.readouterr().out


def test_a_checkpoint_without_checksums_is_refused_saying_what_to_do(trained_run, workdir):
  """A checkpoint without the checksums item (damaged, or written by an earlier version) is not
  restored unverified: it is refused with what to do, and the older one resumes."""
  step_folder = workdir / "checkpoints" / "6"
  shutil.rmtree(step_folder / checkpoint.CHECKSUMS_ITEM)
  metadata = json.loads((step_folder / "_CHECKPOINT_METADATA").read_text())
  del metadata["item_handlers"][checkpoint.CHECKSUMS_ITEM]
  (step_folder / "_CHECKPOINT_METADATA").write_text(json.dumps(metadata))
  checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None)
  try:
    with pytest.raises(checkpoint.UnrestorableCheckpoint,
                       match=rf"{step_folder}: has no checksums item, so its values cannot be "
                       r"verified: it is damaged, or an earlier version of gio_ada_jax wrote "
                       r"it \(train again, or resume with the version that wrote it\)"):
      checkpointer.restore(trained_run[0], 6)
    restored, skipped = checkpointer.restore_newest(trained_run[0])
  finally:
    checkpointer.close()
  assert restored.step == 3 and [s.step for s in skipped] == [6]


@flax.struct.dataclass
class _StateWithRng:
  """GioAdaState as an earlier version saved it: with an RNG that no step used."""

  step: jax.Array
  params: dict
  opt_states: dict
  rng: jax.Array


def test_a_checkpoint_of_an_earlier_state_layout_is_refused(trained_run, tmp_path):
  """A state saved with fields this version's GioAdaState lacks (an earlier version's unused
  RNG) does not restore, even with valid checksums; with no other checkpoint, the refusal says
  how to start again."""
  final = trained_run[0]
  data = {"source": {"next_index": 6}, "target": {"next_index": 6}, "global_batch": 4,
          "process_count": 1}
  checkpointer = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=None)
  try:
    checkpointer.save(6, _StateWithRng(final.step, final.params, final.opt_states,
                                       jax.random.key(7)), data)
    checkpointer.wait()
    with pytest.raises(checkpoint.UnrestorableCheckpoint) as refused:
      loop.resume(checkpointer, final, str(tmp_path))
  finally:
    checkpointer.close()
  message = str(refused.value)
  assert message.startswith(f"{tmp_path / 'checkpoints'}: no checkpoint can be restored: step 6 (")
  assert message.endswith("or an earlier version of gio_ada_jax wrote them (resume with that "
                          "version); otherwise their files are damaged. To train again from "
                          "step 0, move the folder aside."), message


def test_train_py_stops_with_exit_2_when_no_checkpoint_restores(workdir, procedural_data_dir):
  """Never a silent restart from step 0, and nothing moved."""
  for step in (3, 6):
    _empty_metadata(workdir / "checkpoints" / str(step))
  before = _files(workdir / "checkpoints")
  result = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/test.py", "--workdir", str(workdir),
       f"--config.data.data_dir={procedural_data_dir}"],
      capture_output=True, text=True, check=False, timeout=600, env=SUBPROCESS_ENV)
  assert result.returncode == 2, result.stderr[-3000:]
  assert (f"train.py: {workdir / 'checkpoints'}: no checkpoint can be restored: steps 6, 3 "
          "(JSONDecodeError: Expecting value") in result.stderr, result.stderr[-3000:]
  assert "Nothing was moved or deleted" in result.stderr
  assert "Traceback" not in result.stderr and "step 1/6" not in result.stdout
  assert _files(workdir / "checkpoints") == before
  assert not (workdir / "checkpoints_unrestorable").exists()


def test_evaluation_falls_back_and_leaves_the_damaged_checkpoint_in_place(
    workdir, built_and_config, capsys):
  built, config = built_and_config
  bad = workdir / "checkpoints" / "6"
  _flip_bytes(bad)
  files = _files(bad)
  [weights] = evaluate.checkpoint_weights(built, config, str(workdir))
  assert (weights.step, weights.checkpoint) == (3, "checkpoints/3")
  out = capsys.readouterr().out
  assert (f"Skipped checkpoint {bad}: it cannot be restored (checksum mismatch, damaged files: "
          in out and "; left in place.\n" in out), out
  assert [w.step for w in evaluate.checkpoint_weights(built, config, str(workdir),
                                                       all_steps=True)] == [3]
  assert f"Skipped checkpoint {bad}" in capsys.readouterr().out
  with pytest.raises(checkpoint.UnrestorableCheckpoint,
                     match=rf"--step 6: {bad} cannot be restored \(checksum mismatch.*The "
                     r"newest kept step that restores is 3 \(--step 3; kept: \[3, 6\]\)"):
    next(evaluate.checkpoint_weights(built, config, str(workdir), step=6))
  assert _files(bad) == files
  assert not (workdir / "checkpoints_unrestorable").exists()


def test_evaluate_py_names_a_damaged_step_and_exits_2(workdir, procedural_data_dir):
  bad = workdir / "checkpoints" / "6"
  _without_state_item(bad)
  result = subprocess.run(
      [sys.executable, "evaluate.py", "--config", "configs/test.py", "--workdir", str(workdir),
       f"--config.data.data_dir={procedural_data_dir}", "--step", "6"],
      capture_output=True, text=True, check=False, timeout=600, env=SUBPROCESS_ENV)
  assert result.returncode == 2, result.stderr[-3000:]
  assert (f'evaluate.py: --step 6: {bad} cannot be restored (KeyError: Item "state" was not '
          "found") in result.stderr, result.stderr[-3000:]
  assert "The newest kept step that restores is 3 (--step 3" in result.stderr
  assert "Traceback" not in result.stderr


def test_no_restorable_checkpoint_is_an_evaluation_error_naming_the_export(
    workdir, built_and_config):
  built, config = built_and_config
  for step in (3, 6):
    _truncate(workdir / "checkpoints" / str(step))
  # The two reasons read alike (and the steps are named together) when their first 200
  # characters are the same: that depends on the temporary path's length and on which array
  # orbax happens to read first.
  with pytest.raises(checkpoint.UnrestorableCheckpoint,
                     match=r"no checkpoint can be restored: (steps 6, 3 \(ValueError: |step 6 "
                     r"\(ValueError: .*step 3 \(ValueError: ).*The export .*task_net.msgpack is "
                     r"not used instead"):
    next(evaluate.checkpoint_weights(built, config, str(workdir)))


def test_an_export_without_a_complete_checkpoint_is_evaluated(
    trained_run, built_and_config, tmp_path, capsys):
  built, config = built_and_config
  workdir = tmp_path / "work"
  shutil.copytree(os.path.join(trained_run[1], "export"), workdir / "export")
  shutil.copy(os.path.join(trained_run[1], run_config.RECORD), workdir / run_config.RECORD)
  unfinished = workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1796025401"  # a killed save
  unfinished.mkdir(parents=True)
  [report] = evaluate.evaluate(config, str(workdir), progress=False)
  assert report["checkpoint"] == "export/task_net.msgpack" and report["step"] is None
  assert (f"{workdir / 'checkpoints'} holds no complete checkpoint; using the export "
          f"{workdir / 'export' / 'task_net.msgpack'}.") in capsys.readouterr().out
  assert unfinished.is_dir()  # not cleaned up: it was not written by evaluate
  with pytest.raises(FileNotFoundError, match=r"no complete checkpoint in .*checkpoints, so "
                     r"--step has no checkpoint to read; its export .* is evaluated without"):
    next(evaluate.checkpoint_weights(built, config, str(workdir), step=6))


def test_another_model_config_is_named_not_taken_for_damage(workdir, built_and_config, capsys):
  """Orbax restores each array with its stored shape whatever the config asks for; the
  checkpoint reader compares them, so every step fails alike, naming the shapes. (The run's
  recorded config refuses this first; here a change allowed with --allow_config_change.)"""
  _, config = built_and_config
  config.model.width = 0.125
  built = models.build_models(config.model, variants.FINAL)
  with pytest.raises(config_checks.ConfigError, match=r"model.width \(run: 0.0625, now: 0.125\)"):
    next(evaluate.checkpoint_weights(built, config, str(workdir)))
  with pytest.raises(checkpoint.UnrestorableCheckpoint,
                     match=r"no checkpoint can be restored: steps 6, 3 \(its arrays have other "
                     r"shapes than this config's: .*\(4, 4, 3, 4\) \(config: \(4, 4, 3, 8\)\).*"
                     r"the config may not be the one the run was trained with"):
    next(evaluate.checkpoint_weights(built, config, str(workdir),
                                      allow_config_change=["model.width"]))
  assert "Skipped" not in capsys.readouterr().out


def test_a_checkpoint_deleted_while_evaluation_reads_it_is_named_not_taken_for_damage(
    workdir, built_and_config, capsys, monkeypatch):
  """A training run with train.keep_checkpoints=1 deletes its older checkpoint once the next
  is committed; an evaluation reading it meanwhile used to call it damaged or of another
  config. Here checkpoint 6 is deleted just as it is read (and checkpoint 3 stands for the
  run's other kept one): the default evaluation takes 3 and names nothing as damaged; --step 6
  says what happened."""
  built, config = built_and_config
  real_restore = checkpoint.Checkpointer._restore
  gone = workdir.parent / "deleted_6"

  def deleted_as_it_is_read(self, step, abstract, with_data):
    if step == 6 and (workdir / "checkpoints" / "6").exists():
      shutil.move(str(workdir / "checkpoints" / "6"), gone)  # the training run's deletion
    return real_restore(self, step, abstract, with_data)

  monkeypatch.setattr(checkpoint.Checkpointer, "_restore", deleted_as_it_is_read)
  [weights] = evaluate.checkpoint_weights(built, config, str(workdir))
  assert (weights.step, weights.checkpoint) == (3, "checkpoints/3")
  assert "Skipped" not in capsys.readouterr().out
  shutil.move(str(gone), workdir / "checkpoints" / "6")
  (workdir / "train.lock").write_text("{}")  # the run holds its workdir
  with pytest.raises(FileNotFoundError, match=(
      rf"--step 6: checkpoint 6 \({workdir}/checkpoints/6\) was deleted while it was read: a "
      rf"training run writing this workdir \({workdir}/train.lock is held\) keeps only its "
      r"newest train.keep_checkpoints checkpoints. Evaluate a step it keeps")):
    next(evaluate.checkpoint_weights(built, config, str(workdir), step=6))
