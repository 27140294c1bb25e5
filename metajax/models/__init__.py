"""Models by name: `make(name, num_outputs, **kwargs)` -> a Flax Linen module.

Few-shot models are Linen modules so that meta-learning stays functional:
`model.apply({'params': p, 'batch_stats': s}, x, train=...)` over plain pytrees,
which `jax.grad`, `vmap` and `lax.scan` take directly.
"""

from __future__ import annotations

from metajax.models.conv4 import Conv4
from metajax.models.mlp import MLP
from metajax.registry import Registry

MODELS = Registry("model")
MODELS.register("conv4", Conv4)
MODELS.register("mlp", MLP)


def make(name: str, num_outputs: int | None, **kwargs):
  """The model `name` with `num_outputs` outputs (None: an embedding, no head)."""
  return MODELS.get(name)(num_outputs=num_outputs, **kwargs)


__all__ = ["Conv4", "MLP", "MODELS", "make"]
