"""A ReLU MLP: the MAML sinusoid regressor (40-40), a tabular baseline and AutoML's `mlp` family.

Also `dropout`, the dropout every AutoML family uses: its rate may be a traced array, so
population members with different rates share one compiled program
(`flax.linen.Dropout` branches on `rate == 0` in Python and cannot take one).

Masked widths and depths: with `active_layers` / `active_units` set (traced per-member
scalars), an MLP of the largest shape computes exactly the smaller one embedded in it, so
one compiled program serves every (layers, units) of a search space (see `MLP`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

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
  active_layers, active_units: None (every layer and unit), or int scalars (traced per
    population member) with equal `hidden` widths: only the first `active_units` units of the
    first `active_layers` layers act; later layers pass their input through. Inactive
    weights are initialised to zero and the kept ones with the smaller network's fan-in, and
    every inactive unit outputs 0, so parameters, outputs and gradients are those of
    MLP(hidden=(active_units,) * active_layers) zero-padded (tests/test_automl_compile.py).
  """
  num_outputs: int | None = 1
  hidden: Sequence[int] = (40, 40)
  dropout: float = 0.0
  init_scale: float = 1.0
  active_layers: Any = None
  active_units: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "truncated_normal")
    if self.active_layers is not None or self.active_units is not None:
      return self._masked(x, init, train)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, kernel_init=init)(x))
      x = dropout(self, x, self.dropout, train)
    if self.num_outputs is not None:
      x = nn.Dense(self.num_outputs)(x)
    return x

  def _masked(self, x: jax.Array, init: Callable, train: bool) -> jax.Array:
    width = self.hidden[0]
    if any(w != width for w in self.hidden):
      raise ValueError(f"masked widths need equal hidden widths, got {tuple(self.hidden)}")
    units = width if self.active_units is None else self.active_units
    layers = len(self.hidden) if self.active_layers is None else self.active_layers
    keep = (jnp.arange(width) < units).astype(x.dtype)            # [U]
    for i in range(len(self.hidden)):
      rows = None if i == 0 else keep  # the first layer reads every input feature
      cols = keep * (i < layers)  # an inactive layer's weights are all 0
      h = nn.Dense(width, kernel_init=_embedded(init, rows, cols))(x)
      h = dropout(self, nn.relu(h) * keep, self.dropout, train)
      x = h if i == 0 else jnp.where(i < layers, h, x)  # inactive layers pass x through
    if self.num_outputs is not None:
      lecun = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
      x = nn.Dense(self.num_outputs, kernel_init=_embedded(lecun, keep, None))(x)
    return x


def _embedded(init: Callable, rows, cols) -> Callable:
  """A fan-in initialiser for a kernel [D, F] whose live part is rows x cols (0/1 masks [D],
  [F], None: all): drawn at the live fan-in's scale, zero elsewhere."""

  if rows is None and cols is None:
    return init

  def fn(key, shape, dtype=jnp.float32):
    w = init(key, shape, dtype)
    if rows is not None:
      w = w * jnp.sqrt(shape[0] / jnp.sum(rows)) * rows[:, None]  # variance ~ 1 / live fan-in
    return w if cols is None else w * cols[None, :]

  return fn
