"""Few-shot meta-learning: algorithms by name, each `build(config, task_kind) -> learner`.

Use them on your own Linen model directly (`ProtoNet(model, optax.adam(1e-3))`,
see `metajax.meta.maml`), or through the trainer `metajax.meta.train`.
"""

from metajax.meta.base import MetaLearner, MetaState
from metajax.registry import Registry

ALGORITHMS = Registry("algorithm")
ALGORITHMS.register("protonet", "metajax.meta.protonet:build")
for _name in ("maml", "fomaml", "anil", "lslr", "metasgd"):
  ALGORITHMS.register(_name, "metajax.meta.maml:build")

__all__ = ["ALGORITHMS", "MetaLearner", "MetaState"]
