"""Few-shot meta-learning: algorithms by name (`learner.name`), each with a
`build(cfg, model_fn, optimizer, ways, task) -> learner` that reads its own sub-config.

Use the learners on your own Linen model directly (`ProtoNet(model, optax.adam(1e-3))`,
`MAML(model, optimizer, MAMLConfig(...), num_ways=5)`, see `metajax.meta.maml`), evaluate
them with `metajax.meta.evaluate`, or train them with the experiment driver
`metajax.experiments.fewshot`; `metajax.load_trained(workdir)` gives a trained one back.
"""

from metajax.meta.base import MetaLearner
from metajax.meta.maml import VARIANTS
from metajax.registry import Registry

ALGORITHMS = Registry("learner.name")
ALGORITHMS.register("protonet", "metajax.meta.protonet:build")
for _name in VARIANTS:
  ALGORITHMS.register(_name, "metajax.meta.maml:build")

__all__ = ["ALGORITHMS", "MetaLearner"]
