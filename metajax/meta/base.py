"""What every few-shot algorithm provides.

An algorithm is a frozen (hashable) dataclass holding its static config, the
model and the outer optimizer, with pure methods over `metajax.state.TrainState`:

  init(key, tasks)                     -> TrainState
  train_step(state, tasks, key)        -> (TrainState, metrics: dict of scalars)
  eval_step(state, tasks, key)         -> dict of per-task arrays, [B] or [B, S]
                                          ([B, S]: a curve over S, e.g. inner steps)
  predict(state, sx, sy, qx)           -> one task's query outputs [Q, C]

Experiments jit them once over the device mesh (tasks sharded along `data`).
"""

from __future__ import annotations

from typing import Protocol

import jax

from metajax.data.episodes import Tasks
from metajax.state import TrainState


class MetaLearner(Protocol):
  def init(self, key: jax.Array, tasks: Tasks) -> TrainState: ...
  def train_step(self, state: TrainState, tasks: Tasks, key: jax.Array
                 ) -> tuple[TrainState, dict]: ...
  def eval_step(self, state: TrainState, tasks: Tasks, key: jax.Array) -> dict: ...
  def predict(self, state: TrainState, sx: jax.Array, sy: jax.Array,
              qx: jax.Array) -> jax.Array: ...
