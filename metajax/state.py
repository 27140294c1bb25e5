"""The one train state of every learner: a pytree that is checkpointed, sharded and vmapped."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
  """What a run carries from step to step.

  params: what the optimizer updates (model weights; for LSLR / Meta-SGD also log inner
    learning rates).
  model_state: the model's other collections, e.g. batch-norm running statistics ({} if none).
  opt_state: the `metajax.optim.make_optimizer` state, hyperparameters included.
  The optimizer itself is not stored: the state stays plain data, and a population of
  states shares one optimizer.
  """
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, model_state=None) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               model_state={} if model_state is None else model_state,
               opt_state=tx.init(params))

  def apply_gradients(self, grads, tx: optax.GradientTransformation, **changes) -> "TrainState":
    """One optimizer step on `grads`; `changes` replace other fields (e.g. model_state)."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, **changes)
