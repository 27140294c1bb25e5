"""Orbax checkpoints of a state pytree in `<workdir>/checkpoints`.

Training opens a manager that writes (`manager`) and resumes from the latest step
(`restore_or`). Reading a trained run (`restore`) writes nothing, and a missing or
mismatched checkpoint is an error, never a silently fresh model.

Across processes: every process calls `save` and `restore_or` (Orbax writes each array's
shards from the process that holds them and commits the step once all have, so a process
killed mid-save leaves no half step). A restore lays the arrays out as the `like` state's
shardings on the current mesh, so a checkpoint written by 2 processes restores in 1 and the
reverse; leaves without a sharding (`jax.eval_shape` output) are replicated over
`parallel.make_mesh()`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from metajax.errors import ConfigError

DIR = "checkpoints"


def manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A writing CheckpointManager over `<workdir>/checkpoints` (async saves, atomic steps).
  Every process opens it; `workdir` must be one shared directory."""
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, DIR)),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def _abstract(like: Any) -> Any:
  """ShapeDtypeStructs of `like`, each with its sharding (replicated over the global mesh
  where `like` has none)."""
  repl = None

  def leaf(x):
    nonlocal repl
    if isinstance(getattr(x, "sharding", None), jax.sharding.Sharding):
      return ocp.utils.to_shape_dtype_struct(x)
    if repl is None:
      from metajax import parallel
      repl = parallel.replicated(parallel.make_mesh())
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl)
  return jax.tree.map(leaf, like)


def _restore(mngr: ocp.CheckpointManager, step: int, like: Any, workdir: str) -> Any:
  """Checkpoint `step` laid out as `like`; ConfigError naming the workdir when its arrays do
  not fit `like` (a checkpoint of another model)."""
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(_abstract(like)))
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError("workdir", workdir,
                      f"its checkpoint at step {step} does not fit this model "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                      "the workdir of a run of the same model config, or a new workdir") from None


def restore_or(mngr: ocp.CheckpointManager, state: Any) -> tuple[Any, int | None]:
  """(latest checkpointed state, its step), or (`state`, None) in a fresh workdir.

  `state` gives the structure, dtypes and shardings to restore into.
  """
  step = mngr.latest_step()
  if step is None:
    return state, None
  return _restore(mngr, step, state, os.path.dirname(str(mngr.directory))), step


def resume(workdir: str, state: Any, label: str) -> tuple[ocp.CheckpointManager, Any, int]:
  """(writing manager, state, start step) for a training loop: the latest checkpoint of
  `workdir` restored into `state`'s structure (start 0 in a fresh workdir), said when resumed."""
  from metajax import runlog
  mngr = manager(workdir)
  state, restored = restore_or(mngr, state)
  start = int(restored or 0)
  if restored is not None:
    runlog.say(f"metajax: {label}: resumed from step {start} in {workdir}")
  return mngr, state, start


def save(mngr: ocp.CheckpointManager, step: int, state: Any, force: bool = False) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), force=force)


def latest_step(workdir: str) -> int | None:
  """The latest checkpointed step in `workdir`, None if it has none; creates nothing."""
  path = os.path.join(workdir, DIR)
  if not os.path.isdir(path):
    return None
  steps = [int(d) for d in os.listdir(path) if d.isdigit()]
  return max(steps) if steps else None


def restore(workdir: str, like: Any, step: int | None = None) -> tuple[Any, int]:
  """(state, step) of checkpoint `step` (default: the latest) of `workdir`, read-only.

  `like`: a state (or its `jax.eval_shape`) of the model the run trained. ConfigError when
  the workdir holds no checkpoint or its arrays do not fit `like`.
  """
  step = latest_step(workdir) if step is None else step
  if step is None:
    raise ConfigError("workdir", workdir, "holds no checkpoint",
                      "the workdir of a run that trained at least one checkpoint interval")
  options = ocp.CheckpointManagerOptions(create=False, read_only=True)
  with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, DIR)), options=options) as mngr:
    return _restore(mngr, step, like, workdir), step
