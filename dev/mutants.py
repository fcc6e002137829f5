"""Seeded one-line bugs, each run against the tests that concern it (`make mutants`).

    python dev/mutants.py                      # every mutant; a Markdown table on stdout
    python dev/mutants.py --only swap_betas    # some of them (comma-separated names)
    python dev/mutants.py --list               # names, classes and files, nothing run
    python dev/mutants.py --output FILE.md     # also write the table to FILE.md

Each mutant replaces one exact piece of text (it must occur exactly once in its file, or the
run stops and names it) in a copy of the tracked files, then runs its tests there with
`make test`'s environment. Each distinct test selection first runs once without any mutant and
must pass. "killed" means a test then failed; "survived" means every test passed, which is a
gap in the suite unless docs/development.md explains it. The repository itself is never
modified. tests/test_mutants.py checks that every mutant still applies.
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_ENV = {
    "XLA_FLAGS": ("--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0 "
                  "--xla_cpu_use_fusion_emitters=false"),
    "JAX_PLATFORMS": "cpu",
}


@dataclasses.dataclass(frozen=True)
class Mutant:
  name: str
  kind: str  # which class of bug (the classes of docs/development.md, or an earlier seeded bug)
  path: str  # file under the repository root
  find: str  # exact text, present once
  replace: str
  tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


OPTIMISER = "optimiser after step 1"
TABLE = "class table"
BRANCH = "config branch"
DEPTH = "evaluation depth path"
PARALLEL = "data parallel"
STREAMS = "domain streams"
WEAK = "weak assertion"
EARLIER = "seeded earlier"

# The final model's and the least-squares 'sep' row's 3-step parity (tests/test_step_parity.py).
STEP_PARITY = ("tests/test_step_parity.py::test_steps_match_pytorch[+sd,joint-bce-patch]",
               "tests/test_step_parity.py::test_steps_match_pytorch[+d,sep-lsgan-patch]")
LABELS = ("tests/test_labels.py", "tests/test_builders.py", "tests/test_formats.py")
DEPTH_TESTS = ("tests/test_metrics.py", "tests/test_evaluate.py")
STREAMS_TESTS = ("tests/test_domain_streams.py", "tests/test_pipeline.py")

MUTANTS = (
    # 1. The optimiser after step 1: Adam's first update is ~lr * sign(g) whatever the betas.
    Mutant("swap_betas", OPTIMISER, "gio_ada_jax/train/state.py",
           'getattr(train_config, f"{name}_betas")',
           'getattr(train_config, {"generator": "d_img_betas", "d_img": "generator_betas", '
           '"task_net": "d_out_betas", "d_out": "task_net_betas"}[name])', STEP_PARITY),
    Mutant("beta2_of_d_out", OPTIMISER, "gio_ada_jax/train/state.py",
           'return {name: optax.adam(lr, *getattr(train_config, f"{name}_betas"),',
           'return {name: optax.adam(lr, *(getattr(train_config, f"{name}_betas") if name != '
           '"d_out" else (0.9, 0.999)),', STEP_PARITY),
    Mutant("learning_rate_1.5x_task_net", OPTIMISER, "gio_ada_jax/train/state.py",
           "return {name: optax.adam(lr,",
           "return {name: optax.adam(lr * (1.5 if name == 'task_net' else 1.0),", STEP_PARITY),
    Mutant("adam_eps_ignored", OPTIMISER, "gio_ada_jax/train/state.py",
           "eps=train_config.adam_eps", "eps=1e-3", STEP_PARITY),
    Mutant("d_out_loss_2x", OPTIMISER, "gio_ada_jax/train/step.py",
           "loss_d_out += 0.5 * (gan(", "loss_d_out += 1.0 * (gan(", STEP_PARITY),
    Mutant("d_img_loss_2x", OPTIMISER, "gio_ada_jax/train/step.py",
           "loss_d_img = 0.5 * (gan(", "loss_d_img = 1.0 * (gan(", STEP_PARITY),
    Mutant("lambda_depth_for_input", OPTIMISER, "gio_ada_jax/train/step.py",
           "+ objective.lambda_input * terms[\"loss_g_input_adv\"]",
           "+ objective.lambda_depth * terms[\"loss_g_input_adv\"]",
           STEP_PARITY + ("tests/test_step_parity.py::"
                          "test_steps_match_pytorch_with_distinct_loss_weights",)),
    Mutant("lambda_output_10x", OPTIMISER, "gio_ada_jax/train/step.py",
           "+ objective.lambda_output * terms[\"loss_g_output_adv\"])",
           "+ 10 * objective.lambda_output * terms[\"loss_g_output_adv\"])", STEP_PARITY),
    Mutant("cyclegan_identity_weight", OPTIMISER, "gio_ada_jax/cyclegan/model.py",
           "+ lam * lam_idt * (identity_s + identity_t))", "+ lam_idt * (identity_s + identity_t))",
           ("tests/test_cyclegan.py", "-k", "matches_pytorch or match_pytorch")),
    # 2. Class tables.
    Mutant("vkitti_van_is_truck", TABLE, "gio_ada_jax/data/labels.py",
           '"Car": 8, "Van": 8,', '"Car": 8, "Van": 9,', LABELS),
    Mutant("vkitti_pole_traffic_light_swapped", TABLE, "gio_ada_jax/data/labels.py",
           '"Pole": 2, "TrafficLight": 3,', '"Pole": 3, "TrafficLight": 2,', LABELS),
    Mutant("car_truck_colours_swapped", TABLE, "gio_ada_jax/data/labels.py",
           "(0, 0, 142), (0, 0, 70)),", "(0, 0, 70), (0, 0, 142)),", LABELS),
    Mutant("synthia_road_sidewalk_swapped", TABLE, "gio_ada_jax/data/labels.py",
           "_SYNTHIA_ID_TO_16 = {3: 0, 4: 1,", "_SYNTHIA_ID_TO_16 = {3: 1, 4: 0,", LABELS),
    Mutant("miou13_keeps_pole", TABLE, "gio_ada_jax/data/labels.py",
           "MIOU13_CLASSES = (0, 1, 2, 6,", "MIOU13_CLASSES = (0, 1, 2, 5,", LABELS),
    Mutant("vkitti_10_train_ids", TABLE, "gio_ada_jax/data/labels.py",
           "VKITTI_KITTI_10_TRAIN_IDS = (0, 2, 5, 6, 7, 8, 9, 10, 13, 14)",
           "VKITTI_KITTI_10_TRAIN_IDS = (0, 2, 5, 6, 7, 8, 9, 10, 14, 13)", LABELS),
    # 3. Config branches.
    Mutant("poly_power_ignored", BRANCH, "gio_ada_jax/train/state.py",
           "0.0, train_config.poly_power,", "0.0, 1.0,",
           ("tests/test_train_step.py", "-k", "schedule")),
    Mutant("random_flip_ignored", BRANCH, "gio_ada_jax/data/pipeline.py",
           "if rng is not None and spec.random_flip and rng.random() < 0.5:",
           "if rng is not None and rng.random() < 0.5:",
           ("tests/test_pipeline.py", "tests/test_config_branches.py::"
            "test_data_mode_flip_batch_and_seed_reach_the_batches")),
    Mutant("caffe_norm_keeps_rgb", BRANCH, "gio_ada_jax/models/task_net.py",
           "  if flip:\n    images = images[..., ::-1]\n", "",
           ("tests/test_layers.py", "tests/test_parity.py::test_task_net_variants")),
    Mutant("depth_cap_ignored", BRANCH, "gio_ada_jax/eval/metrics.py",
           "cap = max_m if max_m > 0 else jnp.inf", "cap = jnp.inf", DEPTH_TESTS),
    Mutant("depth_min_ignored", BRANCH, "gio_ada_jax/eval/metrics.py",
           "valid = (mask > 0) & (true_m >= min_m) & (true_m <= cap)",
           "valid = (mask > 0) & (true_m <= cap)", DEPTH_TESTS),
    Mutant("keep_checkpoints_ignored", BRANCH, "gio_ada_jax/train/loop.py",
           "train.keep_checkpoints)", "3)",
           ("tests/test_config_branches.py::test_training_loop_paces_logs_checkpoints_pictures_"
            "prefetch",)),
    Mutant("image_every_ignored", BRANCH, "gio_ada_jax/train/loop.py",
           "step % train.image_every == 0", "step % 3 == 0",
           ("tests/test_config_branches.py::test_training_loop_paces_logs_checkpoints_pictures_"
            "prefetch",)),
    Mutant("output_adversary_always_bce", BRANCH, "gio_ada_jax/train/step.py",
           "output_adv = sum((gan(models.d_out.apply(",
           'output_adv = sum((functools.partial(losses.gan_loss, kind="bce")(models.d_out.apply(',
           ("tests/test_config_branches.py::test_losses_follow_the_weights_and_gan_loss",)),
    Mutant("sun_intensity_ignored", BRANCH, "gio_ada_jax/data/procedural.py",
           "light = look.ambient + look.sun_intensity * np.maximum(lambert, 0.0)",
           "light = look.ambient + 0.8 * np.maximum(lambert, 0.0)",
           ("tests/test_config_branches.py", "-k", "procedural_field")),
    Mutant("label_resolution_ignored", BRANCH, "gio_ada_jax/eval/evaluate.py",
           "split = pipeline.target_eval_split(config, config.eval.at_label_resolution)",
           "split = pipeline.target_eval_split(config, True)", DEPTH_TESTS),
    # 4. Evaluation's depth path.
    Mutant("depth_scales_swapped", DEPTH, "gio_ada_jax/eval/evaluate.py",
           "DepthScales(predicted_m=predicted_cm / 100, true_m=true_cm / 100,",
           "DepthScales(predicted_m=true_cm / 100, true_m=predicted_cm / 100,",
           DEPTH_TESTS),
    Mutant("depth_scale_in_cm", DEPTH, "gio_ada_jax/eval/evaluate.py",
           "true_m=true_cm / 100,", "true_m=true_cm / 10,",
           DEPTH_TESTS),
    Mutant("sq_rel_without_true_depth", DEPTH, "gio_ada_jax/eval/metrics.py",
           "mean(difference**2 / true_m),", "mean(difference**2),",
           DEPTH_TESTS),
    Mutant("delta_threshold", DEPTH, "gio_ada_jax/eval/metrics.py",
           "mean((ratio < 1.25**2).astype(jnp.float32)),",
           "mean((ratio < 1.25 * 2).astype(jnp.float32)),",
           DEPTH_TESTS),
    # 5. Data parallel.
    Mutant("no_gradient_pmean", PARALLEL, "gio_ada_jax/train/step.py",
           "    grads = jax.lax.pmean(grads, axis_name)\n", "    pass\n",
           ("tests/test_train_step.py", "-k", "device")),
    Mutant("no_metric_pmean", PARALLEL, "gio_ada_jax/train/step.py",
           "    metrics = jax.lax.pmean(metrics, axis_name)\n", "    pass\n",
           ("tests/test_train_step.py", "-k", "device")),
    Mutant("per_device_loss_mean", PARALLEL, "gio_ada_jax/train/losses.py",
           "  if axis_name is None:\n    return total / jnp.maximum(count, 1)\n",
           "  if True:\n    return total / jnp.maximum(count, 1)\n",
           ("tests/test_train_step.py", "-k", "device")),
    Mutant("cyclegan_no_gradient_pmean", PARALLEL, "gio_ada_jax/cyclegan/model.py",
           "    grads = jax.lax.pmean(grads, axis_name)\n", "    pass\n",
           ("tests/test_cyclegan.py", "-k", "pmap")),
    Mutant("mesh_height_not_split", PARALLEL, "gio_ada_jax/parallel.py",
           "    if len(shape) >= 3 and shape[1] % self.spatial == 0:\n", "    if False:\n",
           ("tests/test_mesh.py", "-k", "halos")),
    Mutant("mesh_axes_swapped", PARALLEL, "gio_ada_jax/parallel.py",
           "  data, spatial = mesh_shape(train_config, len(devices), len(local))\n",
           "  spatial, data = mesh_shape(train_config, len(devices), len(local))\n",
           ("tests/test_mesh.py", "-k", "shapes_the_mesh")),
    Mutant("mesh_restores_host_arrays", PARALLEL, "gio_ada_jax/train/checkpoint.py",
           "      if isinstance(x, jax.Array) and isinstance(x.sharding, jax.sharding.NamedSharding):\n",
           "      if False:\n", ("tests/test_mesh.py", "-k", "checkpoints")),
    # 6. The two domains' streams.
    Mutant("target_uses_source_seed", STREAMS, "gio_ada_jax/data/pipeline.py",
           "seed=config.seed * 2 + offset,", "seed=config.seed * 2,", STREAMS_TESTS),
    Mutant("target_stream_is_source", STREAMS, "gio_ada_jax/data/pipeline.py",
           'self._iterators = {"source": iter(source), "target": iter(target)}',
           'self._iterators = {"source": iter(source), "target": iter(source)}', STREAMS_TESTS),
    Mutant("resume_both_at_source_position", STREAMS, "gio_ada_jax/data/pipeline.py",
           "it.set_state(_rebatched_position(state[name],",
           'it.set_state(_rebatched_position(state["source"],', STREAMS_TESTS),
    # 7. Weak assertions.
    Mutant("generator_without_tanh", WEAK, "gio_ada_jax/models/generator.py",
           'return jnp.tanh(conv(reflect_pad(x, 3), 3, 7, name="head"))',
           'return conv(reflect_pad(x, 3), 3, 7, name="head")',
           ("tests/test_parity.py", "tests/test_torch_ref.py", "tests/test_models.py")),
    Mutant("labels_then_depth_order", WEAK, "gio_ada_jax/models/generator.py",
           "  return jnp.concatenate(parts, axis=-1)\n",
           "  return jnp.concatenate(parts[::-1], axis=-1)\n",
           ("tests/test_parity.py", "tests/test_models.py")),
    # Bugs seeded by hand before this list existed, all caught then, kept so they stay caught.
    Mutant("iou_formula", EARLIER, "gio_ada_jax/eval/metrics.py",
           "iou = diag / (rows + cols - diag)", "iou = diag / (rows + cols)",
           ("tests/test_metrics.py",)),
    Mutant("joint_flip_image_only", EARLIER, "gio_ada_jax/data/pipeline.py",
           "image, label = image[:, ::-1], label[:, ::-1]", "image = image[:, ::-1]",
           ("tests/test_pipeline.py",)),
    Mutant("cycle_weight", EARLIER, "gio_ada_jax/cyclegan/model.py",
           "total = (gan_st + gan_ts + lam * (cycle_s + cycle_t)",
           "total = (gan_st + gan_ts + (cycle_s + cycle_t)",
           ("tests/test_cyclegan.py", "-k", "matches_pytorch or match_pytorch")),
)


def check(mutant: Mutant, root: str = REPO) -> str:
  """The mutated text of `mutant.path`; ValueError unless `find` occurs exactly once."""
  with open(os.path.join(root, mutant.path)) as f:
    text = f.read()
  count = text.count(mutant.find)
  if count != 1:
    raise ValueError(f"mutant {mutant.name}: its text occurs {count} times in {mutant.path} "
                     "(it must occur once); update dev/mutants.py to the code as it is now.")
  return text.replace(mutant.find, mutant.replace)


def tracked_copy(destination: str) -> None:
  """The repository's tracked files (as they are in the work tree) under `destination`."""
  files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.split("\0")
  for name in filter(None, files):
    source = os.path.join(REPO, name)
    if os.path.isfile(source):
      os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
      shutil.copy2(source, os.path.join(destination, name))


def pytest(tests: tuple[str, ...], copy: str) -> subprocess.CompletedProcess:
  """`tests` run in `copy` with make test's environment, stopping at the first failure."""
  env = {**os.environ, **TEST_ENV, "PYTHONPATH": copy}
  return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                         *tests], cwd=copy, env=env, capture_output=True, text=True)


def outcome_of(result: subprocess.CompletedProcess, baseline: str) -> str:
  """killed (a test failed), survived (all passed), or what else happened."""
  if baseline != "passes":
    return f"not run: its tests {baseline} without the mutant"
  if result.returncode not in (0, 1):
    print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
  return {0: "survived", 1: "killed"}.get(result.returncode,
                                          f"error (pytest exit {result.returncode})")


def baselines(mutants, copy: str) -> dict[tuple[str, ...], str]:
  """Each distinct test selection run once unmutated: "passes", or why not (a mutant counts
  as killed only when its tests pass without it)."""
  verdicts = {}
  for tests in dict.fromkeys(m.tests for m in mutants):
    result = pytest(tests, copy)
    verdicts[tests] = "passes" if result.returncode == 0 else (
        f"fail (pytest exit {result.returncode})")
    print(f"baseline {' '.join(tests)}: {verdicts[tests]}", file=sys.stderr, flush=True)
  return verdicts


def run(mutant: Mutant, copy: str, baseline: str) -> tuple[str, float]:
  """(outcome, seconds) of `mutant` applied inside `copy`."""
  if baseline != "passes":
    return outcome_of(None, baseline), 0.0
  path = os.path.join(copy, mutant.path)
  with open(path) as f:
    original = f.read()
  mutated = check(mutant, copy)
  with open(path, "w") as f:
    f.write(mutated)
  start = time.monotonic()
  try:
    result = pytest(mutant.tests, copy)
  finally:
    with open(path, "w") as f:
      f.write(original)
  return outcome_of(result, baseline), time.monotonic() - start


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", default="", help="comma-separated mutant names")
  parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
  parser.add_argument("--output", default="", help="also write the table to this file")
  args = parser.parse_args()
  chosen = MUTANTS
  if args.only:
    names = args.only.split(",")
    unknown = sorted(set(names) - {m.name for m in MUTANTS})
    if unknown:
      print(f"mutants: unknown --only names {unknown}; see --list.", file=sys.stderr)
      return 2
    chosen = [m for m in MUTANTS if m.name in names]
  output_folder = os.path.dirname(os.path.abspath(args.output)) if args.output else REPO
  if not os.path.isdir(output_folder):  # say so now, not after the whole run
    print(f"mutants: --output {args.output}: the folder {output_folder} does not exist.",
          file=sys.stderr)
    return 2
  for mutant in chosen:  # every mutant must apply before anything runs
    check(mutant)
  if args.list:
    for m in chosen:
      print(f"{m.name:<32} {m.kind:<26} {m.path}")
    return 0
  lines = ["| mutant | class | file | tests | outcome | seconds |", "|---|---|---|---|---|---|"]
  with tempfile.TemporaryDirectory(prefix="mutants-") as copy:
    tracked_copy(copy)
    verdicts = baselines(chosen, copy)
    for mutant in chosen:
      outcome, seconds = run(mutant, copy, verdicts[mutant.tests])
      lines.append(f"| {mutant.name} | {mutant.kind} | {mutant.path} | "
                   f"{' '.join(mutant.tests)} | {outcome} | {seconds:.0f} |")
      print(lines[-1], flush=True)
  outcomes = [line.split(" | ")[4] for line in lines[2:]]
  summary = (f"{len(chosen)} mutants: {outcomes.count('killed')} killed, "
             f"{outcomes.count('survived')} survived, "
             f"{len(chosen) - outcomes.count('killed') - outcomes.count('survived')} not decided")
  print(summary)
  if args.output:
    with open(args.output, "w") as f:
      f.write("\n".join(lines + ["", summary, ""]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
