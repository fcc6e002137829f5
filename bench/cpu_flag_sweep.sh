#!/usr/bin/env bash
# The JAX training step on the CPU under each XLA CPU back-end option, against PyTorch eager
# in the same process (bench/train_step.py). Extra arguments go to bench.train_step, e.g.
#   bash bench/cpu_flag_sweep.sh --height 256 --width 512 --iters 5
# XLA_FLAGS settings tried (jaxlib's own flags; see BENCHMARKS.md for what each did here):
set -u
PYTHON=${PYTHON:-.venv/bin/python}
settings=(
  ""  # XLA's defaults (Eigen convolutions, XNNPACK/YNNPACK dots)
  "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"
  "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
  "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"
  "--xla_cpu_enable_fast_math=true"
)
for flags in "${settings[@]}"; do
  echo "=== XLA_FLAGS='${flags}'"
  XLA_FLAGS="${flags}" JAX_PLATFORMS=cpu "${PYTHON}" -m bench.train_step "$@" 2>&1 \
    | grep -v -E "oneDNN custom operations|^I0000|^W0000|OpenCV" | tail -8
done
