"""One process of tests/test_workdir_lock.py's two-process check of the workdir lock.

python tests/multihost_lock_worker.py --process_id I --num_processes N --port P
    --locked WORKDIR --free WORKDIR, from the repository root with PYTHONPATH=. and
    JAX_PLATFORMS=cpu.

Prints, one line each: "refused: MESSAGE" (or "not refused") for --locked, whose lock a live
process holds; "inside: PID" with the pid --free's lock records while the run holds it; and,
process 0 after the block, "released: True|False" (whether the lock file is gone).
"""

import argparse
import json
import os

import jax
from jax.experimental import multihost_utils

from gio_ada_jax import distributed
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.train import workdir_lock


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  for name in ("--process_id", "--num_processes", "--port"):
    parser.add_argument(name, type=int, required=True)
  parser.add_argument("--locked", required=True)
  parser.add_argument("--free", required=True)
  args = parser.parse_args()
  distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  try:
    with workdir_lock.hold(args.locked):
      print("not refused", flush=True)
  except workdir_lock.WorkdirLockError as e:
    print(f"refused: {e}", flush=True)
  with workdir_lock.hold(args.free):
    with open(workdir_lib.lock(args.free)) as f:
      print(f"inside: {json.load(f)['pid']} (this process: {os.getpid()})", flush=True)
    multihost_utils.sync_global_devices("every process has read the lock")
  if jax.process_index() == 0:
    print(f"released: {not os.path.exists(workdir_lib.lock(args.free))}", flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
