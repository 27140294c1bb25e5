"""Orbax checkpoints of a state pytree in `<workdir>/checkpoints`, resumed automatically."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A CheckpointManager over `<workdir>/checkpoints` (async saves, atomic directories)."""
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def restore_or(mngr: ocp.CheckpointManager, state: Any) -> tuple[Any, int | None]:
  """(latest checkpointed state, its step) or (`state`, None) when there is none.

  `state` gives the structure, dtypes and shardings to restore into.
  """
  step = mngr.latest_step()
  if step is None:
    return state, None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  return restored, step


def save(mngr: ocp.CheckpointManager, step: int, state: Any, force: bool = False) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), force=force)
