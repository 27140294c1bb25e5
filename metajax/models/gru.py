"""A GRU text classifier: AutoML's `gru` family for token ids.

  embedding (`vocab_size` x `units`) -> dropout -> GRU over the tokens -> mean of the hidden
  states over non-padding tokens -> dropout -> dense `num_outputs`.

Token id 0 is padding: it neither updates the hidden state nor counts in the mean.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.models.mlp import _embedded, dropout


class GRU(nn.Module):
  """ids: [B, L] int (0 = padding) -> [B, num_outputs] logits.

  Gates r, z, n from x W_x + b and h W_h (3 * units columns each, in that order);
  n = tanh(x_n + r * h_n), h' = (1 - z) n + z h.
  dropout: rate on the embeddings and on the pooled state when `train` (float or traced).
  active_units: None (all), or an int scalar (traced per population member): only the first
    `active_units` embedding dimensions and hidden units live. Their weights are drawn at the
    smaller network's fan-in and every other weight starts at 0; an inactive unit then stays 0
    (its gates read only zeros, so h' = h / 2 from h = 0) and gets zero gradients, so the
    network is GRU(units=active_units) zero-padded (tests/test_automl_compile.py).
  """
  num_outputs: int = 2
  vocab_size: int = 2000
  units: int = 64
  dropout: float = 0.0
  active_units: Any = None

  @nn.compact
  def __call__(self, ids: jax.Array, train: bool = True) -> jax.Array:
    u = self.units
    keep = None if self.active_units is None else (jnp.arange(u) < self.active_units).astype(
        jnp.float32)
    gates = None if keep is None else jnp.tile(keep, 3)  # columns r | z | n
    emb = self.param("emb", _embedded(nn.initializers.normal(0.1), None, keep),
                     (self.vocab_size, u))
    fan_in = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    wx = self.param("wx", _embedded(fan_in, keep, gates), (u, 3 * u))
    wh = self.param("wh", _embedded(fan_in, keep, gates), (u, 3 * u))
    b = self.param("b", nn.initializers.zeros, (3 * u,))
    mask = (ids > 0).astype(jnp.float32)                          # [B, L]
    e = dropout(self, emb[ids], self.dropout, train)               # [B, L, U]
    xs = jnp.einsum("blu,uv->lbv", e, wx) + b                      # [L, B, 3U], time major

    def cell(h, inp):
      gx, m = inp
      gh = h @ wh
      r = jax.nn.sigmoid(gx[:, :u] + gh[:, :u])
      z = jax.nn.sigmoid(gx[:, u:2 * u] + gh[:, u:2 * u])
      n = jnp.tanh(gx[:, 2 * u:] + r * gh[:, 2 * u:])
      h = jnp.where(m[:, None] > 0, (1 - z) * n + z * h, h)
      return h, h * m[:, None]

    _, hs = jax.lax.scan(cell, jnp.zeros((ids.shape[0], u), e.dtype), (xs, mask.T))
    pooled = hs.sum(0) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
    pooled = dropout(self, pooled, self.dropout, train)
    out_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    return nn.Dense(self.num_outputs, kernel_init=_embedded(out_init, keep, None))(pooled)
