"""A small convolutional classifier: AutoML's `cnn` family for image data.

  [3x3 conv (`features[i]`), ReLU, 2x2 average pool while the map is >= 4 pixels] per layer,
  then flatten, dense `hidden` + ReLU, dropout, dense `num_outputs`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from metajax.models.mlp import dropout


class CNN(nn.Module):
  """x: [B, H, W, C] float -> [B, num_outputs] logits.

  dropout: rate before the output layer when `train` (a float or a traced scalar; needs
    rngs={'dropout': key}).
  """
  num_outputs: int = 10
  features: Sequence[int] = (32, 32)
  hidden: int = 64
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    he = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # ReLU layers
    for f in self.features:
      x = nn.relu(nn.Conv(f, (3, 3), padding="SAME", kernel_init=he)(x))
      if x.shape[1] >= 4:  # small maps stop shrinking, so any depth fits any image
        x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Dense(self.hidden, kernel_init=he)(x.reshape(x.shape[0], -1)))
    x = dropout(self, x, self.dropout, train)
    return nn.Dense(self.num_outputs,
                    kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))(x)
