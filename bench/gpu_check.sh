#!/usr/bin/env bash
# One accelerator session's checks: versions, full-size parity on the GPU (JAX) against the
# PyTorch reference (CPU), forward timings at the benchmark configs' sizes, then the test suite.
# Usage (repo root, with ml-collections importable): bash bench/gpu_check.sh [OUT_DIR]
set -u
out=${1:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -c "import jax, flax, optax, orbax.checkpoint, torch, numpy; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m gio_ada_jax.interop.parity --network all --height 375 --width 1242 2>&1 | grep -v "^I1" | tee "$out/parity.txt"
for size in "512 1024" "375 1242"; do
  set -- $size
  for dtype in float32 bfloat16; do
    python3 -m bench.forward --height "$1" --width "$2" --dtype "$dtype" 2>&1 | tee -a "$out/forward.txt"
  done
done
timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -15 | tee "$out/pytest.txt"
