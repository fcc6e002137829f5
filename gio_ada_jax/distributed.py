"""Multi-process start-up: join the other processes of a TPU pod slice or a GPU/CPU cluster.

Call `initialize` before anything touches a device. With the three values given it connects to
that coordinator; in a cluster that `jax.distributed.initialize()` configures by itself (Cloud
TPU VMs, SLURM with several tasks, Open MPI's mpirun, an indexed Kubernetes Job) it lets JAX
find them; on a single host it does nothing. Afterwards pmap spans every process's devices and
its collectives (the step's pmean) reduce over all of them; each process feeds its own
[local_devices, per_device, ...] batch and gets back its local devices' outputs.
"""

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

FLAG_NAMES = ("--coordinator_address", "--num_processes", "--process_id")
# What JAX's SLURM detection reads; srun sets them in every task of a job step.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")


def _int_env(name: str) -> int:
  try:
    return int(os.environ.get(name, "1"))
  except ValueError:
    return 1


def _running_on_cloud_tpu_vm() -> bool:
  # Set when jax is imported on a TPU VM; private, so a missing attribute means "not known".
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def detected_cluster() -> str | None:
  """The multi-process environment jax.distributed.initialize() would configure, if any."""
  if _running_on_cloud_tpu_vm():
    return "Cloud TPU"  # on one host JAX's detection yields a group of one process
  if all(var in os.environ for var in _SLURM_VARS) and _int_env("SLURM_NTASKS") > 1:
    return "SLURM"
  if "OMPI_MCA_orte_hnp_uri" in os.environ and _int_env("OMPI_COMM_WORLD_SIZE") > 1:
    return "Open MPI"
  # JAX's Kubernetes bootstrap needs an indexed Job (it reads JOB_COMPLETION_INDEX).
  if "KUBERNETES_SERVICE_HOST" in os.environ and "JOB_COMPLETION_INDEX" in os.environ:
    return "Kubernetes"
  return None


def _uses_cpu() -> bool:
  platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
  return not platforms or "cpu" in platforms.lower().split(",")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Join the process group given by the three values, or the detected cluster's, or none."""
  values = dict(zip(FLAG_NAMES, (coordinator_address, num_processes, process_id)))
  given = [flag for flag, value in values.items() if value is not None]
  if given and len(given) < len(FLAG_NAMES):
    missing = [flag for flag in FLAG_NAMES if flag not in given]
    raise ValueError(
        f"{', '.join(FLAG_NAMES)} go together, but only {', '.join(given)} "
        f"{'is' if len(given) == 1 else 'are'} set; also set {', '.join(missing)} (or none "
        "of them on a single host or in a cluster that JAX configures itself).")
  cluster = None if given else detected_cluster()
  if not given and cluster is None:
    return  # a single host: nothing to join
  if jax.distributed.is_initialized():
    return
  if _uses_cpu():
    # Cross-process collectives on CPU devices need an implementation; set before the
    # CPU backend exists (initialize must run before any computation anyway).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if given:
    logging.info("Joining %d processes at %s as process %d.", num_processes,
                 coordinator_address, process_id)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    logging.info("Joining the %s cluster's processes.", cluster)
    jax.distributed.initialize()
  logging.info("Process %d of %d: %d local devices, %d in all.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
  """Whether this process logs and writes the single-writer outputs (process 0)."""
  return jax.process_index() == 0


def _leading_axis_sharding(devices) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("data",)),
                                    jax.sharding.PartitionSpec("data"))


def replicate(tree, devices=None):
  """One copy per device (default: the local ones) along a new leading axis, as pmap expects."""
  devices = jax.local_devices() if devices is None else list(devices)
  sharding = _leading_axis_sharding(devices)
  return jax.tree.map(
      lambda x: jax.device_put(jnp.broadcast_to(x, (len(devices),) + jnp.shape(x)), sharding),
      tree)


def put_sharded(tree, devices=None):
  """Host arrays [devices, ...] onto the devices, slice i on device i, as pmap takes them."""
  devices = jax.local_devices() if devices is None else list(devices)
  return jax.device_put(tree, _leading_axis_sharding(devices))


def unreplicate(tree):
  """The first local device's copy of each replicated leaf (pmap outputs are all equal).

  Reads that device's shard instead of indexing the [devices, ...] array: `x[0]` is a
  computation over all local devices, and with several processes on CPU (gloo collectives)
  hundreds of them dispatched back to back (one per leaf of the state) deadlocked under
  JAX 0.10. The shard costs no computation and works the same with one process.
  """
  return jax.tree.map(lambda x: x.addressable_data(0)[0], tree)


def local_values(x: jax.Array) -> np.ndarray:
  """This process's slices of a pmap output [devices, ...] as one host array, in device order.

  With several processes a pmap output spans devices this process cannot read, so it cannot
  be fetched whole; its addressable shards are this process's devices' slices.
  """
  def position(shard) -> int:
    first = shard.index[0]
    return (first.start or 0) if isinstance(first, slice) else int(first)

  shards = sorted(x.addressable_shards, key=position)
  return np.concatenate([np.asarray(shard.data) for shard in shards])


def prefetch_to_devices(batches, size: int, transform=lambda batch: batch, devices=None):
  """Yields (device batch, iterator state after it), copying up to `size` batches ahead.

  `batches` is a host iterator with `get_state()` (the grain/UnpairedIterator contract);
  `transform` maps each host batch before the copy. The state saved with a checkpoint must be
  the one right after the last batch the step consumed, not after the prefetched ones, so each
  batch travels with the state read right after it. The copies are asynchronous: while the
  device runs step n, batches n+1..n+size are already on their way.
  """
  queue = collections.deque()

  def enqueue() -> None:
    host_batch = transform(next(batches))
    queue.append((put_sharded(host_batch, devices), batches.get_state()))

  for _ in range(max(size, 1)):
    enqueue()
  while True:
    item = queue.popleft()
    enqueue()
    yield item
