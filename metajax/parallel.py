"""Device mesh and shardings: the same code on one CPU and on a pod.

One mesh axis, `data`, over every device of every process. Meta-batches,
populations and data batches are sharded along it; parameters are replicated.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D `data` mesh over `num_devices` (default: all global devices).

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


def shard_batch(tree, mesh: Mesh):
  """Puts every leaf of a host pytree on the mesh, split along its leading axis."""
  return jax.device_put(tree, batch_sharding(mesh))


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))


def is_main_process() -> bool:
  """Only process 0 writes files (metrics, reports); every process checkpoints."""
  return jax.process_index() == 0
