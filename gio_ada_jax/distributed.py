"""Multi-process start-up: join the other processes of a TPU pod slice or a GPU/CPU cluster.

Call `initialize` before anything touches a device. With the three values given it connects to
that coordinator; in a cluster that `jax.distributed.initialize()` configures by itself (Cloud
TPU VMs, SLURM with several tasks, Open MPI's mpirun, an indexed Kubernetes Job) it lets JAX
find them; on a single host it does nothing. Each process says on stderr what it waits for;
when not all processes have connected within the initialization timeout it raises a
`ProcessGroupError` naming the coordinator and, where this process can know, the missing ones.
Afterwards pmap spans every process's devices and its collectives (the step's pmean) reduce
over all of them; each process feeds its own [local_devices, per_device, ...] batch and gets
back its local devices' outputs.
"""

import collections
import dataclasses
import errno
import functools
import os
import socket
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from gio_ada_jax.errors import UserError

FLAG_NAMES = ("--coordinator_address", "--num_processes", "--process_id")
TIMEOUT_FLAG = "--initialization_timeout"
DEFAULT_INITIALIZATION_TIMEOUT_S = 300  # jax.distributed.initialize's own default
# When its own initialization timeout passes, JAX ends the process with a C++ abort (a stack
# trace blaming "another task", nothing Python can catch). So JAX gets this much longer and
# our own wait ends first with a clear error; the CLIs exit right after it.
_JAX_TIMEOUT_MARGIN_S = 60
# What JAX's SLURM detection reads; srun sets them in every task of a job step.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")


class ProcessGroupError(UserError, ValueError):
  """The processes could not form their group: a start-up error (the CLIs exit with status 2)."""


@dataclasses.dataclass(frozen=True)
class ProcessFlags:
  """A CLI's multi-process flags (from `define_flags`)."""

  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder
  initialization_timeout: flags.FlagHolder

  def initialize(self) -> None:
    """`initialize` with the flags' values."""
    initialize(self.coordinator_address.value, self.num_processes.value,
               self.process_id.value, self.initialization_timeout.value)


def define_flags() -> ProcessFlags:
  """Defines the multi-process flags, the same in every CLI."""
  return ProcessFlags(
      flags.DEFINE_string(
          "coordinator_address", None,
          "Multi-process runs: host:port where process 0 serves the coordinator. Give it with "
          "--num_processes and --process_id, or none of the three on one host or in a cluster "
          "JAX configures itself (Cloud TPU pod slices, srun, mpirun)."),
      flags.DEFINE_integer("num_processes", None,
                           "Multi-process runs: how many processes in all."),
      flags.DEFINE_integer("process_id", None,
                           "Multi-process runs: this process's index, 0 to N-1."),
      flags.DEFINE_integer(
          "initialization_timeout", DEFAULT_INITIALIZATION_TIMEOUT_S,
          "Multi-process runs: seconds each process waits for all of them to connect before "
          "it stops with an error naming what is missing."))


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


def _check_values(coordinator_address: str | None, num_processes: int | None,
                  process_id: int | None, initialization_timeout: int) -> bool:
  """Whether the three values are given (all or none of them); raises on a bad value."""
  if initialization_timeout is None or initialization_timeout <= 0:
    raise ProcessGroupError(
        f"{TIMEOUT_FLAG} {initialization_timeout}: give how many seconds each process waits "
        f"for all of them to connect, more than 0 (default {DEFAULT_INITIALIZATION_TIMEOUT_S}).")
  values = dict(zip(FLAG_NAMES, (coordinator_address, num_processes, process_id)))
  given = [flag for flag, value in values.items() if value is not None]
  if not given:
    return False
  if len(given) < len(FLAG_NAMES):
    missing = [flag for flag in FLAG_NAMES if flag not in given]
    raise ProcessGroupError(
        f"{', '.join(FLAG_NAMES)} go together, but only {', '.join(given)} "
        f"{'is' if len(given) == 1 else 'are'} set; also set {', '.join(missing)} (or none "
        "of them on a single host or in a cluster that JAX configures itself).")
  host, colon, port = coordinator_address.rpartition(":")
  if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
    raise ProcessGroupError(
        f"--coordinator_address {coordinator_address!r} is not host:port; give process 0's "
        "host and a free port, the same on every process, e.g. 10.0.0.1:1234.")
  if num_processes < 1:
    raise ProcessGroupError(f"--num_processes {num_processes}: give how many processes take "
                            "part, 1 or more.")
  if not 0 <= process_id < num_processes:
    raise ProcessGroupError(
        f"--process_id {process_id} is not one of the --num_processes {num_processes} "
        f"processes; give each process its own index from 0 to {num_processes - 1}.")
  return True


def _answers(address: str) -> bool:
  """Whether something accepts TCP connections at host:port."""
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
      return True
  except OSError:
    return False


def _port_in_use(port: int) -> bool:
  """Whether a socket on this host holds the port (so process 0's coordinator cannot)."""
  with socket.socket() as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
    try:
      probe.bind(("", port))
    except OSError as e:
      return e.errno == errno.EADDRINUSE
  return False


def _processes(ids: list[int]) -> str:
  """'process 1', 'processes 1, 2, 3' or 'processes 1 to 9'."""
  if len(ids) == 1:
    return f"process {ids[0]}"
  return "processes " + (", ".join(map(str, ids)) if len(ids) < 6 else f"{ids[0]} to {ids[-1]}")


def _timeout_message(coordinator_address: str, num_processes: int, process_id: int,
                     timeout_s: int, coordinator_answers: bool) -> str:
  """What this process can tell about who is missing, and what to check."""
  me = f"process {process_id} of {num_processes}"
  late = f"not all {num_processes} processes connected within {timeout_s} s ({TIMEOUT_FLAG})"
  check = (f"Check that all {num_processes} processes were started with --coordinator_address "
           f"{coordinator_address} (the same host and port) and --num_processes "
           f"{num_processes}, each with its own --process_id, that no firewall blocks that port "
           f"between the hosts, and raise {TIMEOUT_FLAG} if some start later.")
  others = [i for i in range(1, num_processes) if i != process_id]
  if process_id == 0:
    missing = ("process 1 is missing" if num_processes == 2 else
               f"one or more of {_processes(others)} are missing (process 0 cannot tell which; "
               "each of them that runs says what it sees)")
    return f"{me} serves the coordinator at {coordinator_address}, but {late}: {missing}. {check}"
  if not coordinator_answers:
    return (f"{me}: nothing answers at the coordinator address {coordinator_address} after "
            f"{timeout_s} s ({TIMEOUT_FLAG}): process 0, which serves the coordinator, is "
            "missing (not started, or not yet), or runs on another host or port, or a firewall "
            f"blocks the port. {check}")
  maybe = (f"{_processes(others)} may be missing (this process cannot tell which), or "
           if others else "")
  return (f"{me}: the coordinator address {coordinator_address} answers, but {late}: {maybe}"
          "process 0 runs with another --num_processes, or that port belongs to another "
          f"program or run. {check}")


def _finishes_within(function, timeout_s: float) -> bool:
  """Runs `function` in a daemon thread: whether it returned within `timeout_s` (its exception
  is raised here)."""
  errors = []

  def run() -> None:
    try:
      function()
    except BaseException as e:  # pylint: disable=broad-except  (raised in the caller's thread)
      errors.append(e)

  thread = threading.Thread(target=run, name="jax.distributed.initialize", daemon=True)
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    return False
  if errors:
    raise errors[0]
  return True


def _stop_waiting() -> None:
  # Stops this process's coordinator (process 0) and client, so that their shutdown messages
  # come before our error, not after it. The wait itself goes on in its thread until the
  # process ends; the process must end, as the CLIs do, before JAX's longer timeout aborts it.
  try:
    jax.distributed.shutdown()
  except Exception:  # pylint: disable=broad-except  (best effort: an error is raised anyway)
    pass


def _say(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def _waiting_line(coordinator_address: str, num_processes: int, process_id: int,
                  timeout_s: int) -> str:
  waiting = f"waiting up to {timeout_s} s ({TIMEOUT_FLAG})"
  me = f"process {process_id} of {num_processes}"
  if process_id == 0:
    return (f"{me}: starting the coordinator at {coordinator_address} and {waiting} for all "
            f"{num_processes} processes to connect")
  return (f"{me}: connecting to the coordinator at {coordinator_address} (process 0), "
          f"{waiting} for all {num_processes} processes")


def _join(coordinator_address: str, num_processes: int, process_id: int,
          timeout_s: int) -> None:
  """jax.distributed.initialize with the three values, or a ProcessGroupError."""
  port = int(coordinator_address.rpartition(":")[2])
  # JAX raises on a port in use, but at times (JAX 0.10.2, one start in three) crashes instead
  # with a segmentation fault; asking first avoids that.
  if process_id == 0 and _port_in_use(port):
    raise ProcessGroupError(
        f"process 0 of {num_processes} cannot serve the coordinator at {coordinator_address}: "
        f"port {port} is in use on this host (another run?). Pick a free port and give the "
        "same --coordinator_address to every process.")
  _say(_waiting_line(coordinator_address, num_processes, process_id, timeout_s))
  join = functools.partial(
      jax.distributed.initialize, coordinator_address=coordinator_address,
      num_processes=num_processes, process_id=process_id,
      initialization_timeout=timeout_s + _JAX_TIMEOUT_MARGIN_S)
  try:
    finished = _finishes_within(join, timeout_s)
  except jax.errors.JaxRuntimeError as e:  # e.g. process 0 cannot listen on the port
    raise ProcessGroupError(
        f"process {process_id} of {num_processes} could not join the coordinator at "
        f"{coordinator_address}: JAX says {e}.") from e
  if not finished:
    _stop_waiting()
    answers = process_id != 0 and _answers(coordinator_address)
    raise ProcessGroupError(_timeout_message(coordinator_address, num_processes, process_id,
                                             timeout_s, answers))


def _join_cluster(cluster: str, timeout_s: int) -> None:
  """jax.distributed.initialize() as the cluster's environment configures it."""
  _say(f"joining the {cluster} cluster's processes (detected from the environment; JAX picks "
       f"the coordinator), waiting up to {timeout_s} s ({TIMEOUT_FLAG}) for all of them")
  join = functools.partial(jax.distributed.initialize,
                           initialization_timeout=timeout_s + _JAX_TIMEOUT_MARGIN_S)
  try:
    finished = _finishes_within(join, timeout_s)
  except jax.errors.JaxRuntimeError as e:
    raise ProcessGroupError(f"could not join the {cluster} cluster's processes: JAX says {e}.") \
        from e
  if not finished:
    _stop_waiting()
    raise ProcessGroupError(
        f"the {cluster} cluster's processes did not all connect within {timeout_s} s "
        f"({TIMEOUT_FLAG}); this process cannot tell which are missing. Check that every task "
        f"of the job started and can reach the first task's host (firewall), and raise "
        f"{TIMEOUT_FLAG} if some start later.")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               initialization_timeout: int = DEFAULT_INITIALIZATION_TIMEOUT_S) -> None:
  """Join the process group given by the three values, or the detected cluster's, or none.

  Each process waits up to `initialization_timeout` seconds for all of them to connect, else
  raises ProcessGroupError; the process must then end (JAX aborts it a minute later).
  """
  given = _check_values(coordinator_address, num_processes, process_id, initialization_timeout)
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
    _join(coordinator_address, num_processes, process_id, initialization_timeout)
  else:
    _join_cluster(cluster, initialization_timeout)
  _say(f"process {jax.process_index()} of {jax.process_count()}: all processes connected; "
       f"{jax.device_count()} devices in all, {jax.local_device_count()} here.")


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


def prefetch_to_devices(batches, size: int, transform=lambda batch: batch, devices=None,
                        place=None):
  """Yields (device batch, iterator state after it), copying up to `size` batches ahead.

  `batches` is a host iterator with `get_state()` (the grain/UnpairedIterator contract);
  `transform` maps each host batch before the copy, `place` copies it (default: put_sharded
  onto `devices`, as pmap takes it). The state saved with a checkpoint must be
  the one right after the last batch the step consumed, not after the prefetched ones, so each
  batch travels with the state read right after it. The copies are asynchronous: while the
  device runs step n, batches n+1..n+size are already on their way.
  """
  queue = collections.deque()

  def enqueue() -> None:
    host_batch = transform(next(batches))
    device_batch = put_sharded(host_batch, devices) if place is None else place(host_batch)
    queue.append((device_batch, batches.get_state()))

  for _ in range(max(size, 1)):
    enqueue()
  while True:
    item = queue.popleft()
    enqueue()
    yield item
