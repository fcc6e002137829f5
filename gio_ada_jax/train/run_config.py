"""The config a run was started with, recorded in WORKDIR/config.json, and the check that a
resume, an evaluation or a translation computes with the same one.

A field changes the computation unless it is listed here as free for that use: paths, host-side
pacing and logging never change what is computed; the training length is free on resume unless
the poly schedule ends there; evaluation also ignores the training-only fields. Everything
else (every field added later too) is compared, and a difference is refused, naming each field
with both values, unless the user names it in `--allow_config_change`. An allowed change is
written to WORKDIR/config_changes.json with the step it applies from, so a mixed run says so.
The record is written once the run has restored its checkpoint (or started afresh), so a change
that cannot resume is never recorded; a workdir with results but no record is refused.
"""

import datetime
import json
import os
from typing import Any, Iterable

from gio_ada_jax.errors import ConfigError
from gio_ada_jax.files import atomic_write

RECORD = "config.json"  # inside the workdir: the whole config of the run
CHANGES = "config_changes.json"  # inside the workdir: the changes allowed on purpose

# Free for every use: where files are, how the host feeds the devices, what is logged and kept.
# (data.source_data_dir is not a mere place: it points the source at a translated copy.)
_FREE_ALWAYS = (
    "data.data_dir", "data.device_prefetch", "data.read_threads",
    "data.read_buffer_batches", "model.task_net.vgg16_weights", "train.log_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.image_every", "eval.",
    # How the devices share the step: the same mathematics and data order (parallel.py).
    "train.parallelism", "train.mesh_data", "train.mesh_spatial",
    "cyclegan.translate_batch",
)
_TRAINING_LENGTH = ("train.num_steps", "train.num_epochs")
# Evaluating G_task reads neither the training settings nor the training-only data settings.
_FREE_TO_EVALUATE = _FREE_ALWAYS + _TRAINING_LENGTH + (
    "seed", "train.", "cyclegan.", "data.global_batch", "data.random_flip", "data.mode",
    "data.target_eval_split", "model.task_net.encoder_init", "data.source_data_dir",
)
# Translating with a CycleGAN's g_st reads its networks (the checkpoint holds all four) and the
# source set, not how it was trained.
_FREE_TO_TRANSLATE = _FREE_ALWAYS + _TRAINING_LENGTH + (
    "seed", "variant", "train.", "eval.", "model.num_classes", "model.generator.",
    "model.task_net.", "model.d_img.", "model.d_out.", "data.target", "data.target_eval_split",
    "data.global_batch", "data.random_flip", "data.mode", "data.height", "data.width",
    "data.sky_depth", "cyclegan.num_steps", "cyclegan.decay_from", "cyclegan.learning_rate",
    "cyclegan.betas", "cyclegan.gan_loss", "cyclegan.lambda_cycle", "cyclegan.lambda_identity",
    "cyclegan.pool_size", "data.source_data_dir",
)
USES = ("resume", "evaluate", "translate")
# The help of the --allow_config_change flag of train.py, evaluate.py and translate.
ALLOW_FLAG_HELP = ("Fields (comma-separated, as --config.FIELD spells them) that may differ on "
                   "purpose from the config recorded in the run's workdir (config.json); "
                   "without it such a difference is refused. Allowed changes are recorded in "
                   "WORKDIR/config_changes.json.")


def flat_config(config) -> dict[str, Any]:
  """{"a.b.c": value} of every leaf of `config` (a ConfigDict or its JSON dict), with tuples
  as lists, as JSON holds them."""
  tree = config if isinstance(config, dict) else json.loads(config.to_json_best_effort())
  flat = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}.")
      else:
        flat[prefix + key] = json.loads(json.dumps(value))

  walk(tree, "")
  return flat


def _free_fields(use: str, recorded: dict[str, Any]) -> tuple[str, ...]:
  if use == "evaluate":
    return _FREE_TO_EVALUATE
  if use == "translate":
    return _FREE_TO_TRANSLATE
  if recorded.get("train.lr_schedule") == "poly":
    return _FREE_ALWAYS  # the poly schedule decays to 0 at the end: the length changes it
  return _FREE_ALWAYS + _TRAINING_LENGTH


def _is_free(field: str, free: Iterable[str]) -> bool:
  return any(field == f or (f.endswith(".") and field.startswith(f)) for f in free)


def differences(recorded: dict[str, Any], current: dict[str, Any], use: str
                ) -> dict[str, tuple[Any, Any]]:
  """{field: (recorded value, current value)} of every field that differs and matters for
  `use` ("resume", "evaluate" or "translate"); fields one side lacks hold None there."""
  if use not in USES:
    raise ValueError(f"use must be one of {USES}, not {use!r}")
  free = _free_fields(use, recorded)
  missing = object()
  found = {}
  for field in sorted(set(recorded) | set(current)):
    old, new = recorded.get(field, missing), current.get(field, missing)
    if old != new and not _is_free(field, free):
      found[field] = (None if old is missing else old, None if new is missing else new)
  return found


def has_results(workdir: str) -> bool:
  """Whether the workdir holds anything a run computed: a checkpoint (its own or its 'cg'
  stage's) or the export."""
  for folder in (os.path.join(workdir, "checkpoints"),
                 os.path.join(workdir, "cyclegan", "checkpoints")):
    if os.path.isdir(folder) and any(not n.startswith(".") for n in os.listdir(folder)):
      return True
  return os.path.exists(os.path.join(workdir, "export"))


def read_record(workdir: str) -> dict[str, Any] | None:
  """The flat config recorded in `workdir`: None before a run has started there; a ConfigError
  when the workdir holds results without it (lost, or an earlier version's run)."""
  path = os.path.join(workdir, RECORD)
  if not os.path.exists(path):
    if has_results(workdir):
      raise ConfigError(
          f"{path} is missing, but {workdir} holds a run's results (checkpoints or an export), "
          "so whether this config is the run's cannot be checked. Put the file back (copy it "
          "with the checkpoints). If it is lost and you are sure of the run's config, write "
          f"that config's JSON there (ConfigDict.to_json_best_effort()) and rerun.")
    return None
  try:
    with open(path) as f:
      return flat_config(json.load(f))
  except (OSError, ValueError, AttributeError) as e:
    raise ConfigError(f"{path}: the run's recorded config cannot be read ({e}). It is written "
                      "when a run starts; restore it from a backup, or start a new workdir.") from e


def _write_json(path: str, value) -> None:
  atomic_write(path, json.dumps(value, indent=1) + "\n")  # readers never see half a record


def _flag_value(fields: Iterable[str]) -> str:
  return ",".join(fields)


def _describe(found: dict[str, tuple[Any, Any]]) -> str:
  return "; ".join(f"{field} (run: {old!r}, now: {new!r})" for field, (old, new) in found.items())


def check_allowed_fields(config, allowed: Iterable[str]) -> None:
  """Raise naming every field of `allowed` that `config` does not have (a typo would otherwise
  allow nothing and say nothing)."""
  fields = flat_config(config)
  unknown = [f for f in allowed if f not in fields]
  if unknown:
    raise ConfigError(f"--allow_config_change names {', '.join(unknown)}, which "
                      f"{'is not a field' if len(unknown) == 1 else 'are not fields'} of the "
                      "config; name fields as --config.FIELD spells them (e.g. "
                      "model.task_net.input_norm).")


def check_matches(config, workdir: str, use: str, allowed: Iterable[str] = ()
                  ) -> dict[str, tuple[Any, Any]]:
  """Raise a ConfigError naming every field of `config` that differs from the run recorded in
  `workdir` and changes what `use` computes, unless `allowed` names it; the allowed changes.
  A workdir where no run has started (no record, no results) has nothing to compare."""
  allowed = tuple(allowed)
  check_allowed_fields(config, allowed)
  recorded = read_record(workdir)
  if recorded is None:
    return {}
  current = flat_config(config)
  other_fields = sorted(set(recorded) ^ set(current))
  if other_fields:  # config_checks.check_known_fields holds `config` to this version's fields
    raise ConfigError(
        f"{os.path.join(workdir, RECORD)} does not have this version's config fields "
        f"({len(other_fields)} differ: {', '.join(other_fields[:3])}"
        f"{', ...' if len(other_fields) > 3 else ''}): an earlier version of gio_ada_jax "
        "wrote it. Use that version for this workdir, or start a new one.")
  found = differences(recorded, current, use)
  refused = {f: values for f, values in found.items() if f not in allowed}
  if refused:
    verb = {"resume": "resume", "evaluate": "evaluate", "translate": "translate with"}[use]
    raise ConfigError(
        f"{workdir} was trained with another config; refusing to {verb} it with this one. "
        f"Differing: {_describe(refused)}. Use the run's config (recorded in "
        f"{os.path.join(workdir, RECORD)}), or, to change them on purpose, add "
        f"--allow_config_change={_flag_value(list(allowed) + list(refused))}"
        + (" (a change of shape, such as model.width or the variant, cannot resume; start a "
           "new workdir instead)." if use == "resume" else "."))
  return {f: values for f, values in found.items() if f in allowed}


def check_resume(config, workdir: str, allowed: Iterable[str] = ()
                 ) -> dict[str, tuple[Any, Any]]:
  """At the start of training: when the workdir holds results, compare `config` with its
  record (check_matches, "resume"); the changes `allowed` lets through. Writes nothing."""
  allowed = tuple(allowed)
  check_allowed_fields(config, allowed)
  return check_matches(config, workdir, "resume", allowed) if has_results(workdir) else {}


def record(config, workdir: str, changes: dict[str, tuple[Any, Any]],
           from_step: int | None) -> None:
  """Write `config` as the workdir's record and append the allowed `changes` (check_resume's)
  with the step they apply from to config_changes.json. Called once the run has restored its
  checkpoint (or started afresh), so a change that cannot resume is never recorded."""
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, RECORD), json.loads(config.to_json_best_effort()))
  if not changes:
    return
  path = os.path.join(workdir, CHANGES)
  history = []
  if os.path.exists(path):
    with open(path) as f:
      history = json.load(f)
  history.append({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"), "from_step": from_step,
      "changes": {f: {"before": old, "after": new} for f, (old, new) in changes.items()}})
  _write_json(path, history)
  print(f"Config changed on purpose from step {from_step}: {_describe(changes)} "
        f"(recorded in {path}).", flush=True)
