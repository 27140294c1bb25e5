"""Models by name: one registry of Flax Linen modules for every learner.

`make(name, **kwargs)` builds a module; `from_config(config.model)` reads the name and
its arguments from one sub-config. Every model is `module.apply(variables, x, train=...)`
over plain pytrees, so the same network serves as a ProtoNet/MAML backbone (inner loops
over its params), an AutoML family (members vmapped over their params and hyperparameters)
or a multimodal tower. Classifiers take `num_outputs` (None: the embedding, no head).
"""

from __future__ import annotations

from typing import Any, Mapping

from metajax.errors import ConfigError
from metajax.models.conv4 import Conv4
from metajax.models.mlp import MLP
from metajax.registry import Registry

MODELS = Registry("model.name")
MODELS.register("conv4", Conv4)
MODELS.register("mlp", MLP)
MODELS.register("cnn", "metajax.models.cnn:CNN")
MODELS.register("gru", "metajax.models.gru:GRU")
MODELS.register("multimodal_transformer", "metajax.multimodal.model:make_multimodal")


def make(name: str, **kwargs: Any):
  """The model registered as `name`, built with `kwargs`; ConfigError names a bad argument."""
  cls = MODELS.get(name)
  fields = getattr(cls, "__dataclass_fields__", {})
  unknown = sorted(k for k in kwargs if fields and k not in fields)
  if unknown:
    valid = sorted(k for k in fields if k not in ("parent", "name"))
    raise ConfigError(f"model.{unknown[0]}", kwargs[unknown[0]], f"{name} has no such argument",
                      ", ".join(valid))
  return cls(**kwargs)


def from_config(cfg: Mapping[str, Any], **overrides: Any):
  """`make(cfg['name'], **rest of cfg, **overrides)`: a model from its own sub-config."""
  kwargs = {k: v for k, v in dict(cfg).items() if k != "name"}
  return make(cfg["name"], **{**kwargs, **overrides})


def spec(cfg: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
  """JSON-ready {'name', **kwargs} of a model, as `saved.write_card` records it."""
  out = {**dict(cfg), **overrides}
  return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


__all__ = ["Conv4", "MLP", "MODELS", "from_config", "make", "spec"]
