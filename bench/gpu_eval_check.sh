#!/usr/bin/env bash
# The evaluation issue's accelerator checks: evaluation-step throughput at the benchmark configs' sizes
# (fp32 / bf16 at batch 1, bf16 at batch 4) with the device counts checked against numpy.
# Usage (repo root; ml-collections and cityscapesscripts importable): bash bench/gpu_eval_check.sh
set -u
export PYTHONUNBUFFERED=1
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run() { python3 -m bench.evaluate "$@" 2>&1 | grep -v "^[IW]1[0-9]"; }
for dtype in float32 bfloat16; do
  run --benchmark cityscapes --dtype "$dtype" --check
  run --benchmark kitti --dtype "$dtype" --depth --check
done
run --benchmark cityscapes --dtype bfloat16 --batch 4
