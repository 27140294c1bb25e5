"""Device mesh, shardings and per-host input: the same code on one CPU and on a pod.

One mesh axis, `data`, over every device of every process (after
`metajax.distributed.initialize`, `jax.devices()` is global). Meta-batches, populations and
data batches are sharded along it; parameters are replicated.

Input is per host: a process only ever transfers the rows its own devices hold. A driver that
can read rows independently asks `process_rows(n, mesh)` for its slice of the global batch,
builds only those rows and assembles the global array with `host_local_batch`
(`jax.make_array_from_process_local_data`). `shard_batch` takes a host array every process
already has (a population's seeds, a small evaluation batch) and sends each device its rows.
A driver that can also read its examples independently holds only `process_shard(n)` of
the dataset and samples its rows from there (the data sets' `per_host` options).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from metajax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D `data` mesh over `num_devices` (default: all global devices, of every process).

  Axis type Auto: XLA propagates shardings from the inputs (classic GSPMD),
  so model code needs no sharding annotations.
  """
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_divides(key: str, value: int, mesh: Mesh | None = None, what: str = "rows") -> None:
  """ConfigError unless `value` splits evenly over the mesh's devices (hence its processes)."""
  n = mesh.size if mesh is not None else jax.device_count()
  procs = len({d.process_index for d in mesh.devices.flat}) if mesh is not None else \
      jax.process_count()
  if value % n:
    where = f"{n} devices" + (f" in {procs} processes" if procs > 1 else "")
    raise ConfigError(key, value, f"{what} are split over {where}", f"a multiple of {n}")


def process_rows(global_rows: int, mesh: Mesh) -> slice:
  """The contiguous rows [start, stop) of a `global_rows` batch split over `data` that this
  process's devices hold: the only rows this process needs to build."""
  indices = batch_sharding(mesh).addressable_devices_indices_map((global_rows,)).values()
  starts = sorted(i[0].indices(global_rows)[:2] for i in indices)
  if any(a[1] != b[0] for a, b in zip(starts, starts[1:])):
    raise ValueError(f"this process's devices hold non-contiguous rows {starts}")
  return slice(starts[0][0], starts[-1][1])


def process_shard(n: int, index: int | None = None, count: int | None = None,
                  key: str = "data") -> range:
  """This process's contiguous share [start, stop) of `n` examples dealt to `count` processes
  (default: `jax.process_index()` of `jax.process_count()`). The first n % count shares hold
  one example more, as `tfds.even_splits` deals a split: shares are disjoint, cover range(n)
  and differ in size by at most 1. ConfigError (as config `key`) when a share would be empty.
  """
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  if not 0 <= index < count:
    raise ValueError(f"process index {index} is not in 0..{count - 1}")
  if n < count:
    raise ConfigError(key, n, f"{n} examples leave some of {count} processes an empty shard",
                      f">= {count} (one per process)")
  size, extra = divmod(n, count)
  start = index * size + min(index, extra)
  return range(start, start + size + (index < extra))


def host_local_batch(tree, mesh: Mesh, global_rows: int | None = None):
  """Global arrays split over `data` from this process's rows only (`process_rows`): every
  leaf [rows_here, ...] becomes [global_rows, ...] (default: rows_here x processes, as when
  leaves of different lengths are each split evenly)."""
  sharding = batch_sharding(mesh)
  shape = lambda x: None if global_rows is None else (global_rows,) + np.shape(x)[1:]
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), shape(x)), tree)


def _from_host(x, sharding: NamedSharding):
  """`x` (the same full array on every process) laid out as `sharding`; each process copies
  only the slices its own devices hold."""
  if isinstance(x, jax.Array):  # already on devices (a key, a jitted output): reshard
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_batch(tree, mesh: Mesh):
  """Every leaf of a host pytree (the same on every process) split over `data` along its
  leading axis; each device receives only its rows."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: _from_host(x, sharding), tree)


def replicate(tree, mesh: Mesh):
  """Every leaf copied to every device of the mesh."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: _from_host(x, sharding), tree)


def to_host(tree):
  """Numpy copies of every leaf on every process. An array split over several processes is
  gathered (`multihost_utils.process_allgather`); `jax.device_get` cannot read it."""
  from jax.experimental import multihost_utils

  def leaf(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(leaf, tree)


def is_main_process() -> bool:
  """Only process 0 writes files (metrics, reports); every process checkpoints."""
  return jax.process_index() == 0


def sync_processes(name: str) -> None:
  """A barrier of every process (a no-op in one): after process 0 writes a file the others
  read (config.json, model.json), each waits here, so none reads before it exists."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
