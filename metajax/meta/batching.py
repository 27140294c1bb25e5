"""How the tasks of a meta-batch are batched inside one jitted step (`task_batching`).

  'vmap'  every task at once: the forward and backward passes of the whole meta-batch
          are single batched ops;
  'map'   `lax.map`, one task after another, differentiated through the loop (its
          backward reads per-task residuals stacked by the forward loop);
  'scan'  `lax.scan` over chunks of `task_chunk` vmapped tasks, each chunk's gradient
          taken inside the loop body and summed in the carry (`mean_over_chunks`): no
          residual crosses an iteration, so a chunk's activations stay in cache and peak
          memory is one chunk's (conv4 MAML on a 2-core CPU: 1.3-1.6x 'vmap''s speed at a
          twentieth of its memory; BUILD_NOTES.md). A meta-batch sharded over d devices
          wants `task_chunk` a multiple of d: the chunk axis is the sharded one.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from metajax.errors import ConfigError

TASK_BATCHING = ("vmap", "map", "scan")


def over_tasks(fn: Callable, tasks, batching: str):
  """fn(*task) for every task of `tasks` (a tuple of [B, ...] arrays), stacked on axis 0.
  'scan' vmaps: it changes only how gradients are taken (`mean_over_chunks`)."""
  if batching == "map":
    return jax.lax.map(lambda t: fn(*t), tuple(tasks))
  return jax.vmap(fn)(*tasks)


def resolve_chunk(task_chunk: int) -> int:
  """A config's `task_chunk`: 0 means one task per device (`jax.device_count()`)."""
  return task_chunk or jax.device_count()


def check_chunk(chunk: int, meta_batch: int) -> None:
  """ConfigError unless `chunk` tasks divide a meta-batch of `meta_batch` tasks."""
  if meta_batch % chunk:
    raise ConfigError("learner.task_chunk", chunk,
                      f"it does not divide the meta-batch of {meta_batch} tasks",
                      "a divisor of the meta-batch")


def mean_over_chunks(fn: Callable, tasks, chunk: int, zeros):
  """Mean over chunks of `fn(chunk_tasks)` (a pytree shaped like `zeros`), in a `lax.scan`.

  tasks [B, ...] -> [B / chunk, chunk, ...]: the scan runs over the first axis, `fn` sees
  `chunk` tasks (the axis a mesh shards when B is split into blocks). ConfigError unless
  `chunk` divides B.
  """
  b = jax.tree.leaves(tasks)[0].shape[0]
  check_chunk(chunk, b)
  chunks = jax.tree.map(lambda a: a.reshape(chunk, b // chunk, *a.shape[1:]).swapaxes(0, 1), tasks)
  body = lambda total, c: (jax.tree.map(jnp.add, total, fn(c)), None)
  total, _ = jax.lax.scan(body, zeros, chunks)
  return jax.tree.map(lambda a: a / (b // chunk), total)
