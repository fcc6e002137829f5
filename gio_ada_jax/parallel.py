"""How a step's state and batches are laid out over the devices (config.train.parallelism).

"pmap" (the default): the state has one copy per local device along a leading axis, each device
takes its own slice of the batch ([devices, per_device, ...]) and the step's collectives
(pmean, psum) run over the axis AXIS_NAME. Each image's activations live on one device.

"mesh": one jax.jit over a `jax.sharding.Mesh` with the axes ("data", "spatial"). The state is
one replicated global array per leaf; every batch is one global array of the whole batch,
sharded over "data" on its batch axis and over "spatial" on the image height. The step is the
one-device step (axis_name=None) on the global batch, and XLA partitions it: the convolutions
exchange halo rows between the devices of a spatial group, and the instance-norm, loss and
gradient reductions become all-reduces. Its mathematics is that of one device on the whole
batch, which the pmap step also equals (tests/test_train_step.py, tests/test_mesh.py).

Both give the training loop and evaluation the same few operations (`Layout`). Checkpoints hold
the unreplicated state either way, so a run moves between the modes on resume.

In mesh mode each spatial group lies within one process (train.mesh_spatial divides the local
device count): a process then holds whole images, reads its own shard of the data as under pmap,
and feeds local_device_count / mesh_spatial "data" rows.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from gio_ada_jax.errors import ConfigError
from gio_ada_jax.distributed import local_values, put_sharded, replicate, unreplicate

PMAP, MESH = "pmap", "mesh"
AXIS_NAME = "data"  # pmap's axis, and the mesh's batch axis
MESH_AXES = ("data", "spatial")
P = jax.sharding.PartitionSpec


def _host_local_block(x: jax.Array) -> np.ndarray:
  """This process's part of a global array as one host array: the box its addressable shards
  cover, filled from them (shards repeated over another mesh axis are read once)."""
  shards = x.addressable_shards
  indices = [shard.index for shard in shards]
  starts = [min((index[d].start or 0) for index in indices) for d in range(x.ndim)]
  stops = [max(x.shape[d] if index[d].stop is None else index[d].stop for index in indices)
           for d in range(x.ndim)]
  block = np.empty([stop - start for start, stop in zip(starts, stops)], x.dtype)
  for shard, index in zip(shards, indices):
    where = tuple(slice((s.start or 0) - start, (x.shape[d] if s.stop is None else s.stop) - start)
                  for d, (s, start) in enumerate(zip(index, starts)))
    block[where] = np.asarray(shard.data)
  return block


@functools.lru_cache(maxsize=None)
def _psum_over(devices: tuple | None) -> Callable:
  """A pmap summing a replicated tree over `devices` (default every process's)."""
  return jax.pmap(lambda tree: jax.lax.psum(tree, AXIS_NAME), axis_name=AXIS_NAME,
                  devices=devices)


class Layout:
  """The operations the loop and evaluation need, whatever the parallelism."""

  mode: str
  local_rows: int  # batch slots fed per process: [local_rows, per_row, ...] from the pipeline
  rows: int  # batch slots over all processes: data.global_batch = rows * per_row

  def place_state(self, tree):
    """A host or single-device tree (the state, parameters, accumulators) as the step takes it."""
    raise NotImplementedError

  def host_state(self, placed):
    """The placed tree as one single-device copy (what checkpoints, exports and pictures read)."""
    raise NotImplementedError

  def checkpoint_template(self, state):
    """What a checkpoint restores into: its arrays' shardings are the restored ones."""
    raise NotImplementedError

  def place_batch(self, host_batch: dict[str, np.ndarray]):
    """This process's batch [local_rows, per_row, ...] (the pipeline's shape) on the devices."""
    raise NotImplementedError

  def compile_step(self, step: Callable, *, sharded_outputs: bool = False) -> Callable:
    """`step(state, batch, axis_name=...)` compiled for this layout: (state, batch) -> (state,
    outputs), the state donated. With `sharded_outputs` the second output is per example (kept with its batch
    slots, read with `local_rows_of`); otherwise it is one global value (metrics)."""
    raise NotImplementedError

  def local_rows_of(self, x: jax.Array) -> np.ndarray:
    """This process's examples of a per-example output, [local_rows, per_row, ...] on the host."""
    raise NotImplementedError

  def to_host(self, tree) -> Any:
    """A global value the step returned (metrics) on the host, as numpy."""
    raise NotImplementedError

  def sum_to_host(self, tree) -> Any:
    """Per-device partial sums a step returned (evaluation's counts), summed over every device
    of every process, on the host."""
    raise NotImplementedError

  def first_row(self, batch) -> Any:
    """The examples of this process's first batch slot of a placed batch ([per_row, ...]: one
    device's under pmap), on the host (for pictures)."""
    return jax.tree.map(lambda x: self.local_rows_of(x)[0], batch)


@dataclasses.dataclass(frozen=True)
class PmapLayout(Layout):
  """pmap over `devices` (default every process's): one batch slice per local device."""

  devices: tuple | None = None
  mode: str = PMAP

  @property
  def _all(self) -> list:
    return list(jax.devices() if self.devices is None else self.devices)

  @property
  def _local(self) -> list:
    return [d for d in self._all if d.process_index == jax.process_index()]

  @property
  def local_rows(self) -> int:
    return len(self._local)

  @property
  def rows(self) -> int:
    return len(self._all)

  def place_state(self, tree):
    return replicate(tree, self._local)

  def host_state(self, placed):
    return unreplicate(placed)

  def checkpoint_template(self, state):
    return state

  def place_batch(self, host_batch):
    return put_sharded(host_batch, self._local)

  def compile_step(self, step, *, sharded_outputs=False):
    del sharded_outputs  # pmap outputs are per device either way
    return jax.pmap(functools.partial(step, axis_name=AXIS_NAME), axis_name=AXIS_NAME,
                    devices=self.devices, donate_argnums=(0,))

  def local_rows_of(self, x):
    return local_values(x)

  def to_host(self, tree):
    return jax.device_get(unreplicate(tree))

  def sum_to_host(self, tree):
    return self.to_host(_psum_over(self.devices)(tree))


@dataclasses.dataclass(frozen=True)
class MeshLayout(Layout):
  """jit over `mesh` (axes MESH_AXES): state replicated, batches sharded (data, spatial)."""

  mesh: jax.sharding.Mesh
  mode: str = MESH

  @property
  def spatial(self) -> int:
    return self.mesh.shape["spatial"]

  @property
  def rows(self) -> int:
    return self.mesh.shape["data"]

  @property
  def local_rows(self) -> int:
    return len(self.mesh.local_devices) // self.spatial

  @property
  def replicated(self) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(self.mesh, P())

  def batch_sharding(self, shape: tuple[int, ...]) -> jax.sharding.NamedSharding:
    """(data, spatial) for an image-like array whose height splits evenly, else data only
    (per-example scalars; labels kept at a label resolution the spatial axis does not divide,
    which XLA then redistributes)."""
    if len(shape) >= 3 and shape[1] % self.spatial == 0:
      return jax.sharding.NamedSharding(self.mesh, P("data", "spatial"))
    return jax.sharding.NamedSharding(self.mesh, P("data"))

  def place_state(self, tree):
    sharding = self.replicated

    def place(x):
      if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
      host = np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)
      return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)

  def host_state(self, placed):
    # The first device's buffers themselves, not a copy: read (save, evaluate, export) before
    # the next step, which donates them.
    return jax.tree.map(lambda x: x.addressable_data(0), placed)

  def checkpoint_template(self, state):
    return self.place_state(state)

  def place_batch(self, host_batch):
    def place(x):
      local = np.reshape(x, (-1,) + x.shape[2:])  # [local_rows, per_row, ...] -> [local batch]
      return jax.make_array_from_process_local_data(self.batch_sharding(local.shape), local)

    return jax.tree.map(place, host_batch)

  def compile_step(self, step, *, sharded_outputs=False):
    per_example = jax.sharding.NamedSharding(self.mesh, P("data"))
    return jax.jit(functools.partial(step, axis_name=None),
                   out_shardings=(self.replicated,
                                  per_example if sharded_outputs else self.replicated),
                   donate_argnums=(0,))

  def local_rows_of(self, x):
    block = _host_local_block(x)
    return block.reshape((self.local_rows, -1) + block.shape[1:])

  def to_host(self, tree):
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

  def sum_to_host(self, tree):
    return self.to_host(tree)  # the step summed over the global batch already


def mesh_shape(train_config, num_devices: int, local_devices: int) -> tuple[int, int]:
  """(data, spatial) of config.train's mesh over `num_devices`, or a ConfigError naming the
  field and a shape that fits."""
  data, spatial = int(train_config.mesh_data), int(train_config.mesh_spatial)
  if spatial < 1 or local_devices % spatial:
    raise ConfigError(
        f"train.mesh_spatial={spatial}: the spatial axis splits each image over devices of one "
        f"process, so it must divide this process's {local_devices} devices (e.g. "
        f"--config.train.mesh_spatial={local_devices}).")
  if data == -1:
    data = num_devices // spatial
  if data < 1 or data * spatial != num_devices:
    raise ConfigError(
        f"train.mesh_data={train_config.mesh_data} x train.mesh_spatial={spatial} devices is "
        f"not the {num_devices} devices there are; set --config.train.mesh_data=-1 (all the "
        "rest) or a shape whose product is the device count.")
  return data, spatial


def make_mesh(data: int, spatial: int, devices=None) -> jax.sharding.Mesh:
  """The ("data", "spatial") mesh over `devices` (default all), process by process so that each
  process's devices hold whole consecutive "data" rows (its own examples)."""
  devices = sorted(jax.devices() if devices is None else devices,
                   key=lambda d: (d.process_index, d.id))
  return jax.sharding.Mesh(np.asarray(devices, dtype=object).reshape(data, spatial), MESH_AXES)


def layout_from_config(train_config, devices=None) -> Layout:
  """The Layout config.train.parallelism asks for, over `devices` (default every process's)."""
  mode = train_config.parallelism
  if mode == PMAP:
    return PmapLayout(None if devices is None else tuple(devices))
  devices = list(jax.devices() if devices is None else devices)
  local = [d for d in devices if d.process_index == jax.process_index()]
  data, spatial = mesh_shape(train_config, len(devices), len(local))
  return MeshLayout(make_mesh(data, spatial, devices))


def check_fits(layout: Layout, height: int, global_batch: int | None = None) -> None:
  """A ConfigError unless a mesh's spatial axis splits `height` (data.height) rows and its
  "data" axis `global_batch` (data.global_batch; None: not checked) images evenly (pmap
  checks its own split where the pipeline batches: pipeline.per_device_batch)."""
  if not isinstance(layout, MeshLayout):
    return
  if height % layout.spatial:
    raise ConfigError(
        f"data.height={height} does not split evenly over train.mesh_spatial={layout.spatial} "
        f"devices; set data.height to a multiple of {layout.spatial} or change the mesh.")
  if global_batch is not None and (global_batch <= 0 or global_batch % layout.rows):
    raise ConfigError(
        f"data.global_batch={global_batch} does not split evenly over the mesh's "
        f"{layout.rows} data rows ({layout.rows} x {layout.spatial}: train.mesh_data x "
        f"train.mesh_spatial); set it to a multiple of {layout.rows}, or give the spatial axis "
        "more devices (--config.train.mesh_spatial).")
