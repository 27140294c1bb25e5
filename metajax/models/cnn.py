"""A small convolutional classifier: AutoML's `cnn` family for image data.

  [3x3 conv (`features[i]`), ReLU, 2x2 average pool while the map is >= 4 pixels] per layer,
  then flatten, dense `hidden` + ReLU, dropout, dense `num_outputs`.

`conv_impl`: 'xla' (nn.Conv + nn.avg_pool, the default), 'im2col' (metajax.models.layers.Conv +
reshape-mean pooling: same parameter tree and values, and much faster derivatives under a
per-task vmap on CPU, as in hyperparameter meta-learning) or 'auto' (im2col on CPU).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from metajax.models import layers
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
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    he = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # ReLU layers
    impl = ("im2col" if jax.default_backend() == "cpu" else "xla") if self.conv_impl == "auto" \
        else self.conv_impl
    if impl not in layers.CONV_IMPLS:
      raise ValueError(f"conv_impl {impl!r}: expected 'auto' or one of {layers.CONV_IMPLS}")
    for f in self.features:
      if impl == "xla":
        x = nn.relu(nn.Conv(f, (3, 3), padding="SAME", kernel_init=he)(x))
      else:
        x = nn.relu(layers.Conv(f, (3, 3), impl=impl, kernel_init=he)(x))
      if x.shape[1] >= 4:  # small maps stop shrinking, so any depth fits any image
        x = nn.avg_pool(x, (2, 2), (2, 2)) if impl == "xla" else _avg_pool_2x2(x)
    x = nn.relu(nn.Dense(self.hidden, kernel_init=he)(x.reshape(x.shape[0], -1)))
    x = dropout(self, x, self.dropout, train)
    return nn.Dense(self.num_outputs,
                    kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))(x)


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
  """`nn.avg_pool(x, (2, 2), (2, 2))` as reshape + mean (odd trailing rows/columns dropped):
  no reduce_window, whose derivatives are slow under per-task vmap on CPU."""
  n, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))
