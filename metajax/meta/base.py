"""What every few-shot algorithm provides to the trainer.

An algorithm is a frozen (hashable) dataclass holding its static config, the
model and the outer optimizer, with three pure methods:

  init(key, tasks)               -> MetaState
  train_step(state, tasks, key)  -> (MetaState, metrics: dict of scalars)
  eval_step(state, tasks, key)   -> dict of per-task arrays, [B] or [B, S]
                                    ([B, S]: a curve over S, e.g. inner steps)

The trainer jits them once over the device mesh (tasks sharded along `data`).
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
from flax import struct

from metajax.data.episodes import Tasks


@struct.dataclass
class MetaState:
  """Everything a meta-training run carries from step to step (and checkpoints).

  params: meta-parameters the outer optimizer updates (model weights and, for
    LSLR / Meta-SGD, log inner learning rates).
  model_state: non-learned model collections, e.g. batch-norm running stats ({} if none).
  """
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any


class MetaLearner(Protocol):
  def init(self, key: jax.Array, tasks: Tasks) -> MetaState: ...
  def train_step(self, state: MetaState, tasks: Tasks, key: jax.Array) -> tuple[MetaState, dict]: ...
  def eval_step(self, state: MetaState, tasks: Tasks, key: jax.Array) -> dict: ...
