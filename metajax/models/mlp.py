"""A ReLU MLP: the MAML sinusoid regressor (40-40) and a tabular baseline."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
  """x: [B, D] -> [B, num_outputs] (or the last hidden layer if num_outputs is None)."""
  num_outputs: int | None = 1
  hidden: Sequence[int] = (40, 40)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    del train
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    if self.num_outputs is not None:
      x = nn.Dense(self.num_outputs)(x)
    return x
