"""A ReLU MLP: the MAML sinusoid regressor (40-40), a tabular baseline and AutoML's `mlp` family.

Also `dropout`, the dropout every AutoML family uses: its rate may be a traced array, so
population members with different rates share one compiled program
(`flax.linen.Dropout` branches on `rate == 0` in Python and cannot take one).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def dropout(module: nn.Module, x: jax.Array, rate, train: bool) -> jax.Array:
  """Inverted dropout of x (any shape) at `rate` (a float or a traced scalar), rng 'dropout'.

  A Python rate of 0 (or eval mode) is the identity and draws no rng, so models without
  dropout need no 'dropout' rng; a traced rate always draws one.
  """
  if not train or (isinstance(rate, (int, float)) and rate == 0):
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class MLP(nn.Module):
  """x: [B, ...] (flattened to [B, D]) -> [B, num_outputs] (or the last hidden layer if
  num_outputs is None).

  dropout: rate after every hidden layer when `train` (a float, or a traced scalar inside a
    vmapped population; needs rngs={'dropout': key}).
  init_scale: fan-in variance scale of the hidden kernels (1: LeCun, Flax's default;
    2: He, for ReLU stacks). The output layer is always LeCun.
  """
  num_outputs: int | None = 1
  hidden: Sequence[int] = (40, 40)
  dropout: float = 0.0
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "truncated_normal")
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, kernel_init=init)(x))
      x = dropout(self, x, self.dropout, train)
    if self.num_outputs is not None:
      x = nn.Dense(self.num_outputs)(x)
    return x
