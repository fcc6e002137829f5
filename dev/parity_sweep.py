"""Step parity over every variant row and many seeds, as `parity --step` checks it: the evidence
that its tolerances judge the implementation, not one machine's rounding (docs/development.md).

    python dev/parity_sweep.py                          # every row, seeds 0-9; table on stdout
    python dev/parity_sweep.py --seeds 0,1 --rows cg +sd,joint-bce-patch
    python dev/parity_sweep.py --output sweep.md --results_dir sweep/   # resumable

Rows: every GIO-Ada row of tests/test_step_parity.py (Tables 2 and 3, the lsgan and fc rows)
and the CycleGAN step ("cg": upstream's defaults; "cg-bce": no identity, no pool, BCE), on the
tiny networks at 32x48. Each (row, seed) runs parity.check_step / check_cyclegan_step, what the
command runs: one float32 step, then 3 float64 steps from the same weights. The table gives,
per row and precision, how many seeds passed and the worst margin: the smallest
tolerance / error over the seeds and the lines that precision decides (a margin of 10 means the
worst error was a tenth of its tolerance).

--results_dir keeps each (row, seed)'s report as it finishes (ROW_seedN.json) with its
fingerprint (ROW_seedN.npz: JAX's float32 metrics of step 1, its losses and gradient norms,
its parameters after it, and PyTorch's losses); a rerun with the same folder runs only the
pairs it lacks. `--compare_fingerprints A B` (two such folders; nothing else runs) prints how
far two runs' fingerprints differ: the proof that a second XLA or PyTorch CPU code path
(XLA_FLAGS, ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) rounds differently. JAX's persistent
compilation cache (a fresh folder for the run) compiles each row once for all its seeds.
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import test as test_config  # noqa: E402
from gio_ada_jax.interop import parity  # noqa: E402
from tests.test_step_parity import HEIGHT, NUM_STEPS, ROWS, WIDTH, row_config  # noqa: E402

CYCLEGAN_ROWS = {"cg": (0.5, 3, "lsgan"), "cg-bce": (0.0, 0, "bce")}


def row_names() -> list[str]:
  return [f"{v}-{g}-{k}" for v, g, k in ROWS] + list(CYCLEGAN_ROWS)


def cyclegan_config(name: str):
  config = test_config.get_config()
  cg = config.cyclegan
  cg.lambda_identity, cg.pool_size, cg.gan_loss = CYCLEGAN_ROWS[name]
  return config


def margin(check: parity.Check) -> float:
  """tolerance / error: > 1 passes; inf where the error is 0, 0 where it is NaN."""
  if np.isnan(check.error):
    return 0.0
  return np.inf if check.error == 0 else check.tolerance / check.error


def run_row(name: str, seed: int) -> parity.StepReport:
  """What `parity --step` (`--cyclegan_step` for the cg rows) checks for this row and seed."""
  if name in CYCLEGAN_ROWS:
    return parity.check_cyclegan_step(cyclegan_config(name), HEIGHT, WIDTH, seed, NUM_STEPS)
  variant, gan_loss, d_out_kind = ROWS[row_names().index(name)]
  return parity.check_step(row_config(variant, gan_loss, d_out_kind), HEIGHT, WIDTH, seed,
                           NUM_STEPS)


def fingerprint(name: str, seed: int) -> dict[str, np.ndarray]:
  """JAX's float32 metrics of one step (losses, gradient norms) and parameters after it (and,
  for the GIO-Ada rows, PyTorch's losses): values that a change of rounding changes."""
  if name in CYCLEGAN_ROWS:
    run = parity.cyclegan_jax_steps(cyclegan_config(name), HEIGHT, WIDTH, seed)
    torch_losses = {}
  else:
    variant, gan_loss, d_out_kind = ROWS[row_names().index(name)]
    run = parity.jax_steps(row_config(variant, gan_loss, d_out_kind), HEIGHT, WIDTH, seed)
    torch_losses = parity.torch_steps(run)[2][0]
  return {"jax_losses": np.array([run.metrics[0][k] for k in sorted(run.metrics[0])]),
          "torch_losses": np.array([torch_losses[k] for k in sorted(torch_losses)]),
          "jax_params": np.concatenate([np.ravel(a) for a in jax.tree.leaves(run.params)])}


def load_fingerprints(results_dir: str) -> dict[str, np.ndarray]:
  """Every fingerprint in a --results_dir, keyed "ROW_seedN/KIND"."""
  prints = {}
  for path in sorted(glob.glob(os.path.join(results_dir, "*.npz"))):
    pair = os.path.basename(path)[:-len(".npz")]
    prints.update({f"{pair}/{k}": v for k, v in np.load(path).items()})
  return prints


def compare_fingerprints(first: str, second: str) -> str:
  """How far two runs' fingerprints differ: per kind, how many (row, seed) pairs differ at all
  and the largest difference relative to the values' largest."""
  ours, theirs = load_fingerprints(first), load_fingerprints(second)
  lines = [f"{first} against {second}:",
           "| values | (row, seed) pairs that differ | largest relative difference |",
           "|---|---|---|"]
  labels = {"jax_losses": "JAX's metrics (losses, gradient norms)",
            "torch_losses": "PyTorch's losses", "jax_params": "JAX's parameters after the step"}
  for kind, label in labels.items():
    keys = [k for k in ours if k.endswith(f"/{kind}") and k in theirs and ours[k].size]
    differ = [k for k in keys if not np.array_equal(ours[k], theirs[k])]
    largest = max((float(np.max(np.abs(ours[k] - theirs[k]))
                         / max(float(np.max(np.abs(theirs[k]))), 1e-30)) for k in keys),
                  default=0.0)
    lines.append(f"| {label} | {len(differ)} of {len(keys)} | {largest:.1e} |")
  return "\n".join(lines)


def pair_file(results_dir: str, name: str, seed: int, suffix: str) -> str:
  return os.path.join(results_dir, f"{name}_seed{seed}.{suffix}")


def save_pair(results_dir: str, name: str, seed: int, report: parity.StepReport,
              prints: dict[str, np.ndarray]) -> None:
  """Writes a pair's fingerprint, then its report (renamed into place last: a pair counts as
  done only once both are whole)."""
  np.savez(pair_file(results_dir, name, seed, "npz"), **prints)
  path = pair_file(results_dir, name, seed, "json")
  with open(path + ".tmp", "w") as f:
    json.dump({"checks": [[c.precision, c.name, c.error, c.tolerance] for c in report.checks],
               "count_errors": report.count_errors}, f)
  os.replace(path + ".tmp", path)


def load_pair(results_dir: str, name: str, seed: int) -> parity.StepReport | None:
  path = pair_file(results_dir, name, seed, "json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    saved = json.load(f)
  return parity.StepReport(checks=[parity.Check(*c) for c in saved["checks"]],
                           count_errors=saved["count_errors"], errors={})


def kind(check: parity.Check) -> str:
  """What a line compares: its precision and "loss", "params", "moments" or "pool"."""
  if "params" in check.name:
    what = "params (N lr)"
  elif check.name.startswith("pool"):
    what = "pool"
  elif "/mu" in check.name or "/nu" in check.name:
    what = "moments"
  else:
    what = "loss"
  return f"{check.precision} {what}"


def largest_errors(results: dict[str, dict[int, parity.StepReport]]) -> str:
  """The Markdown table of the largest error of each kind of line over every row and seed."""
  worst = {}
  for name, reports in results.items():
    for seed, report in reports.items():
      for check in report.checks:
        key = kind(check)
        if key not in worst or not check.error <= worst[key][0]:
          worst[key] = (check.error, check.tolerance, f"{name}, seed {seed}: {check.name}")
  lines = ["| lines | largest error | tolerance | at |", "|---|---|---|---|"]
  lines += [f"| {key} | {err:.2e} | {tol:.1e} | {at} |"
            for key, (err, tol, at) in sorted(worst.items())]
  return "\n".join(lines)


def summary(results: dict[str, dict[int, parity.StepReport]]) -> str:
  """The Markdown table: per row and precision, seeds passed and the worst margin (with the
  line and seed it came from)."""
  lines = ["| row | precision | seeds passed | worst margin (tolerance / error) | at |",
           "|---|---|---|---|---|"]
  for name, reports in results.items():
    for dtype in parity.DTYPES:
      passed = sum(all(c.ok for c in r.checks if c.precision == dtype) and not any(
          e.startswith(dtype) for e in r.count_errors) for r in reports.values())
      worst = min(((margin(c), c.name, seed) for seed, r in reports.items()
                   for c in r.checks if c.precision == dtype), default=(np.inf, "-", "-"))
      lines.append(f"| {name} | {dtype} | {passed} of {len(reports)} | {worst[0]:.3g} | "
                   f"{worst[1]}, seed {worst[2]} |")
  return "\n".join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0-9", help="'0-9' or '0,3,5'")
  parser.add_argument("--rows", nargs="+", default=None, help="row names (default all)")
  parser.add_argument("--output", default=None, help="also write the table to this file")
  parser.add_argument("--results_dir", default=None,
                      help="keep each pair's report and fingerprint here; rerun what is missing")
  parser.add_argument("--compare_fingerprints", nargs=2, default=None, metavar="RESULTS_DIR",
                      help="compare two runs' --results_dir fingerprints, run nothing")
  args = parser.parse_args()
  if args.compare_fingerprints:
    print(compare_fingerprints(*args.compare_fingerprints))
    return 0
  seeds = (list(range(int(args.seeds.split("-")[0]), int(args.seeds.split("-")[1]) + 1))
           if "-" in args.seeds else [int(s) for s in args.seeds.split(",")])
  names = args.rows or row_names()
  unknown = sorted(set(names) - set(row_names()))
  if unknown:
    parser.error(f"unknown rows {unknown}; choose from {row_names()}")

  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="parity_sweep_"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  jax.config.update("jax_default_matmul_precision", "highest")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
        f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '')!r} "
        f"jax {jax.__version__}, seeds {seeds}", flush=True)
  if args.results_dir:
    os.makedirs(args.results_dir, exist_ok=True)
  results, started = {}, time.time()
  for name in names:
    results[name] = {}
    for seed in seeds:
      saved = load_pair(args.results_dir, name, seed) if args.results_dir else None
      report = results[name][seed] = saved or run_row(name, seed)
      if args.results_dir and saved is None:
        save_pair(args.results_dir, name, seed, report, fingerprint(name, seed))
      failed = [f"{c.precision} {c.name} {c.error:.3e}" for c in report.failures()]
      print(f"{name} seed {seed}: {'PASS' if report.passed else 'FAIL'} "
            f"{failed + report.count_errors if not report.passed else ''} "
            f"({'saved' if saved else f'{time.time() - started:.0f} s'})", flush=True)
  table = summary(results) + "\n\n" + largest_errors(results)
  print(table)
  if args.output:
    with open(args.output, "w") as f:
      f.write(table + "\n")
  return 0 if all(r.passed for reports in results.values() for r in reports.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
