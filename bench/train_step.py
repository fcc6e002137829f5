"""The full GIO-Ada training step in JAX and in the PyTorch reference, timed side by side.

    python -m bench.train_step --height 256 --width 512 [--batch 1] [--dtype bfloat16]
        [--torch_compile] [--frameworks jax,torch] [--iters 10] [--config.model.width=0.25]

One step = all four networks forward and backward, every loss of equation 5 and the four Adam
updates (`train_step.make_p_train_step`, the trainer's pmapped step, on one device, and
`torch_ref.GioAdaTorchStep` with the same weights, batch, variant and dtype). After warm-up the
two frameworks alternate step by step, so both see the same machine state. Prints per
framework the median and 10-90th percentile of ms/step, images/s (source + target), the
JAX/PyTorch time ratio, XLA's FLOP count of one step (from the HLO before backend compilation:
XLA:GPU's cost analysis does not count cuDNN convolutions), achieved TFLOP/s (the same FLOP
count for both), MFU against the GPU's dense peak, and peak memory (device allocator on GPU;
on CPU XLA's planned buffers for JAX, none for PyTorch).

bf16 means bf16 compute with float32 parameters: `model.dtype=bfloat16` in JAX,
`torch.autocast(bfloat16)` in PyTorch. XLA flags (e.g. CPU convolution back ends) go in
XLA_FLAGS; see BENCHMARKS.md for the ones measured.
"""

import os
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gio_ada_jax import models, variants
from gio_ada_jax.distributed import put_sharded, replicate
from gio_ada_jax.interop import parity
from gio_ada_jax.train import step as train_step
from gio_ada_jax.train import state as state_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py",
                                          "Config (variant with :INPUT,OUTPUT).")
_HEIGHT = flags.DEFINE_integer("height", 256, "Training crop height.")
_WIDTH = flags.DEFINE_integer("width", 512, "Training crop width.")
_BATCH = flags.DEFINE_integer("batch", 1, "Source images (and as many target images) per step.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed steps per framework.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per framework after compilation.")
_FRAMEWORKS = flags.DEFINE_list("frameworks", ["jax", "torch"], "Which steps to time.")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", False,
                                   "torch.compile every PyTorch network (default mode).")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0,
                                      "torch.set_num_threads (0: PyTorch's default).")

# Dense peak TFLOP/s (no sparsity) per device kind, for MFU: fp32 is the non-tensor-core rate;
# JAX's and PyTorch's default fp32 convolutions on these GPUs use TF32 tensor cores, so an fp32
# MFU against it can exceed 100% and is printed against TF32's peak instead.
PEAK_TFLOPS = {
    "H100": {"float32": 494.7, "bfloat16": 989.4},  # SXM, TF32 dense / BF16 dense
    "H200": {"float32": 494.7, "bfloat16": 989.4},
    "A100": {"float32": 156.0, "bfloat16": 312.0},
}


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  """The dense peak of a GPU by its device_kind string, or None when unknown (CPU)."""
  for name, peaks in PEAK_TFLOPS.items():
    if name in device_kind:
      return peaks[dtype]
  return None


def step_config(config, dtype: str):
  """The benchmark's config: the given one with the compute dtype set (params stay fp32)."""
  config = config.copy_and_resolve_references()
  config.model.dtype = dtype
  config.model.param_dtype = "float32"
  return config


class JaxStep:
  """The trainer's pmapped step on the first local device, its state and one fixed batch."""

  def __init__(self, config, batch: dict[str, np.ndarray]):
    variant = variants.from_config(config)
    built = models.build_models(config.model, variant)
    state = state_lib.create_state(built, variant, config, jax.random.key(0), _HEIGHT.value,
                                   _WIDTH.value)
    self.initial_params = jax.tree.map(np.asarray, state.params)
    devices = jax.local_devices()[:1]
    p_step = train_step.make_p_train_step(built, state_lib.make_optimizers(config.train),
                                          config.train, variant, devices)
    self._state = replicate(state, devices)
    self._batch = put_sharded({k: v[None] for k, v in batch.items()}, devices)
    lowered = p_step.lower(self._state, self._batch)
    # FLOPs of one step from the HLO before backend compilation (see the module docstring).
    self.flops = float((lowered.cost_analysis() or {}).get("flops", float("nan")))
    compiled = lowered.compile()
    self._step = compiled  # compiled once, for the analyses and the timed calls alike
    memory = compiled.memory_analysis()
    self.planned_bytes = None
    if memory is not None:
      self.planned_bytes = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
                            + memory.output_size_in_bytes - memory.alias_size_in_bytes)

  def __call__(self) -> None:
    self._state, metrics = self._step(self._state, self._batch)
    jax.block_until_ready(metrics)

  def peak_bytes(self) -> float | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use") or self.planned_bytes


class TorchStep:
  """torch_ref.GioAdaTorchStep from the same weights, on CUDA when there is one."""

  def __init__(self, config, batch: dict[str, np.ndarray], params, compile_networks: bool):
    import torch  # pylint: disable=g-import-not-at-top
    self._torch = torch
    if _TORCH_THREADS.value:
      torch.set_num_threads(_TORCH_THREADS.value)
    self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    networks = parity.torch_networks(config, params)
    networks = {name: self._to_device(net, compile_networks) for name, net in networks.items()}
    self._step = parity.torch_reference_step(config, networks)
    self._batch = parity.torch_batch(batch, self.device)
    self._autocast_dtype = torch.bfloat16 if config.model.dtype == "bfloat16" else None

  def _to_device(self, network, compile_networks: bool):
    if network is None:
      return None
    if isinstance(network, dict):
      return {k: self._to_device(v, compile_networks) for k, v in network.items()}
    network = network.to(self.device)
    return self._torch.compile(network) if compile_networks else network

  def __call__(self) -> None:
    torch = self._torch
    if self._autocast_dtype is None:
      self._step.step(self._batch)  # returns Python floats: synchronises
    else:
      with torch.autocast(self.device.type, dtype=self._autocast_dtype):
        self._step.step(self._batch)
    if self.device.type == "cuda":
      torch.cuda.synchronize()

  def peak_bytes(self) -> float | None:
    if self.device.type == "cuda":
      return float(self._torch.cuda.max_memory_allocated())
    return None


def summary(name: str, ms: np.ndarray, images_per_step: int, flops: float,
            peak: float | None, mfu_peak: float | None) -> dict:
  """The printed figures of one framework's timings."""
  median = float(np.median(ms))
  tflops = flops / median / 1e9
  return {"name": name, "ms": median, "p10": float(np.percentile(ms, 10)),
          "p90": float(np.percentile(ms, 90)), "images_per_s": images_per_step / median * 1e3,
          "tflops": tflops, "mfu": tflops / mfu_peak if mfu_peak else None,
          "peak_gib": peak / 2**30 if peak else None}


def format_rows(rows: list[dict], flops: float) -> str:
  """The result table, one line per framework, then the ratios."""
  lines = [f"XLA FLOPs per step: {flops / 1e9:.4g} GFLOP",
           f"{'framework':<16} {'ms median':>10} {'p10-p90':>17} {'img/s':>8} "
           f"{'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}"]
  for r in rows:
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
    peak = f"{r['peak_gib']:.3f}" if r["peak_gib"] is not None else "n/a"
    lines.append(f"{r['name']:<16} {r['ms']:>10.1f} {r['p10']:>8.1f}-{r['p90']:<8.1f} "
                 f"{r['images_per_s']:>8.2f} {r['tflops']:>8.3f} {mfu:>6} {peak:>9}")
  if len(rows) == 2:
    lines.append(f"JAX / PyTorch time: {rows[0]['ms'] / rows[1]['ms']:.2f} "
                 f"(JAX is {rows[1]['ms'] / rows[0]['ms']:.2f}x PyTorch's throughput)")
  return "\n".join(lines)


def main(argv):
  del argv
  config = step_config(_CONFIG.value, _DTYPE.value)
  variant = variants.from_config(config)
  batch = parity.step_batch(config.model.num_classes, _HEIGHT.value, _WIDTH.value,
                            batch_size=_BATCH.value)
  device = jax.local_devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{_BATCH.value}+{_BATCH.value} images of {_HEIGHT.value}x{_WIDTH.value}, "
        f"{_DTYPE.value}, width x{config.model.width}, variant {variant}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  steps, names = [], []
  jax_step = JaxStep(config, batch)
  if "jax" in _FRAMEWORKS.value:
    steps.append(jax_step)
    names.append("jax")
  if "torch" in _FRAMEWORKS.value:
    import torch  # pylint: disable=g-import-not-at-top
    steps.append(TorchStep(config, batch, jax_step.initial_params, _TORCH_COMPILE.value))
    names.append("torch" + (" compiled" if _TORCH_COMPILE.value else " eager"))
    print(f"torch {torch.__version__} on {steps[-1].device}, "
          f"{torch.get_num_threads()} threads", flush=True)
  for step in steps:  # compilation and warm-up
    for _ in range(1 + _WARMUP.value):
      step()
  times = [[] for _ in steps]
  for _ in range(_ITERS.value):  # alternate, so both see the same machine state
    for step, timed in zip(steps, times):
      start = time.perf_counter()
      step()
      timed.append((time.perf_counter() - start) * 1e3)
  mfu_peak = peak_tflops(device.device_kind, _DTYPE.value)
  rows = [summary(name, np.asarray(t), 2 * _BATCH.value, jax_step.flops, step.peak_bytes(),
                  mfu_peak) for name, step, t in zip(names, steps, times)]
  print(format_rows(rows, jax_step.flops))
  if jax.default_backend() == "cpu":
    print("peak GiB on CPU: XLA's planned buffers of the JAX step; n/a for PyTorch.")


if __name__ == "__main__":
  sys.exit(app.run(main))
