"""Magnitude pruning with masks held fixed through a fine-tune.

  masks = magnitude_masks(params, sparsity=0.5)          # global threshold over the weights
  params = apply_masks(params, masks)
  tx = optax.chain(keep_masked(masks), tx, keep_masked(masks))   # pruned entries stay 0

Prunable: float weights of rank >= 2 (kernels, embeddings), as `quantize` stores in int8;
biases and norm scales are kept whole. 'global' ranks every prunable entry by |w| together
(layers that matter less lose more); 'layer' prunes each leaf to `sparsity` on its own.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.errors import ConfigError

SCOPES = ("global", "layer")


def prunable(w) -> bool:
  return w.ndim >= 2 and jnp.issubdtype(w.dtype, jnp.floating)


def check_sparsity(sparsity: float, key: str = "sparsity") -> None:
  if not (isinstance(sparsity, (int, float)) and 0.0 < sparsity < 1.0):
    raise ConfigError(key, sparsity, "the fraction of prunable weights set to zero",
                      "a number strictly between 0 and 1, e.g. 0.5")


def magnitude_masks(params: Any, sparsity: float, scope: str = "global") -> Any:
  """A pytree like `params` of float32 0/1 masks: the `sparsity` fraction of prunable
  entries with the smallest |w| are 0 (ties at the threshold are pruned too); every
  entry of a leaf that is not prunable is 1."""
  check_sparsity(sparsity)
  if scope not in SCOPES:
    raise ConfigError("scope", scope, "unknown pruning scope", ", ".join(map(repr, SCOPES)))
  leaves = [np.abs(np.asarray(w, np.float32)) for w in jax.tree.leaves(params) if prunable(w)]
  if not leaves:
    raise ConfigError("params", "no weight of rank >= 2", "nothing to prune",
                      "a model with dense, conv or embedding weights")

  def threshold(values: np.ndarray) -> float:
    k = int(np.floor(sparsity * values.size))
    return -np.inf if k == 0 else float(np.partition(values, k - 1)[k - 1])

  cut = threshold(np.concatenate([w.ravel() for w in leaves])) if scope == "global" else None

  def mask(w):
    if not prunable(w):
      return jnp.ones_like(w, jnp.float32)  # float: multiplies updates without a cast
    a = np.abs(np.asarray(w, np.float32))
    return jnp.asarray(a > (cut if cut is not None else threshold(a.ravel())), jnp.float32)

  return jax.tree.map(mask, params)


def apply_masks(params: Any, masks: Any) -> Any:
  return jax.tree.map(lambda w, m: (w * m).astype(w.dtype), params, masks)


def keep_masked(masks: Any) -> optax.GradientTransformation:
  """An optax transform that zeroes the updates of masked entries. Chained before and after
  the optimizer: no gradient of a pruned weight reaches the moments or the clipping norm,
  and no update (weight decay, momentum) moves it off zero."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: (u * m).astype(u.dtype), updates, masks), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sparsity_of(params: Any) -> float:
  """Fraction of the prunable entries of `params` that are exactly zero."""
  leaves = [np.asarray(w) for w in jax.tree.leaves(params) if prunable(w)]
  return float(sum((w == 0).sum() for w in leaves) / max(1, sum(w.size for w in leaves)))


def count_nonzero(params: Any) -> int:
  return int(sum(np.count_nonzero(np.asarray(w)) for w in jax.tree.leaves(params)))
