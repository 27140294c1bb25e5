"""The conv4 backbone of Prototypical Networks and MAML (Vinyals et al. 2016).

4 x [3x3 conv (`filters`), batch norm, ReLU, 2x2 max-pool]; 28x28 inputs give a
`filters`-dim embedding. With `num_outputs` a linear head follows (MAML).

`conv_impl` / `pool_impl` pick how convolutions and pools are computed (see
`metajax.models.layers`); every choice has the same parameter tree and the same
values and derivatives (tests/test_conv_impl.py), only speed and memory differ.
The default 'auto' takes im2col + tap max-pool on CPU, where they make
second-order MAML ~20x faster than XLA's convolutions (BUILD_NOTES.md),
and XLA's own convolution and reduce_window elsewhere (not measured on GPU).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from metajax.models import layers


class Conv4(nn.Module):
  """x: [B, H, W, C] float -> [B, num_outputs] logits, or [B, D] embedding if num_outputs is None.

  Batch norm uses batch statistics when `train` (and updates `batch_stats`),
  running averages otherwise.
  conv_impl: 'xla' (nn.Conv), 'im2col' (layers.conv2d) or 'auto' (im2col on CPU, else xla).
  pool_impl: 'xla' (nn.max_pool, reduce_window), 'taps' (layers.max_pool_2x2) or
    'auto' (taps on CPU, else xla).
  """
  num_outputs: int | None = None
  filters: int = 64
  depth: int = 4
  conv_impl: str = "auto"
  pool_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    cpu = jax.default_backend() == "cpu"
    conv_impl = ("im2col" if cpu else "xla") if self.conv_impl == "auto" else self.conv_impl
    pool_impl = ("taps" if cpu else "xla") if self.pool_impl == "auto" else self.pool_impl
    if conv_impl not in layers.CONV_IMPLS:
      raise ValueError(f"conv_impl {conv_impl!r}: expected 'auto' or one of {layers.CONV_IMPLS}")
    for i in range(self.depth):
      if conv_impl == "xla":
        x = nn.Conv(self.filters, (3, 3), padding="SAME", name=f"Conv_{i}")(x)
      else:
        x = layers.Conv(self.filters, (3, 3), impl=conv_impl, name=f"Conv_{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       name=f"BatchNorm_{i}")(x)
      x = nn.relu(x)
      if pool_impl == "taps":
        x = layers.max_pool_2x2(x)
      elif pool_impl == "xla":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        raise ValueError(f"pool_impl {pool_impl!r}: expected 'auto', 'xla' or 'taps'")
    x = x.reshape(x.shape[0], -1)
    if self.num_outputs is not None:
      x = nn.Dense(self.num_outputs, name="Dense_0")(x)
    return x
