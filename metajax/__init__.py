"""metajax: a JAX-native library for learning to learn.

Few-shot meta-learning (`metajax.meta`), AutoML over vmapped populations
(`metajax.automl`) and a multimodal transformer (`metajax.multimodal`), on one shared
layer: `optim` (one optax factory), `state` (one TrainState), `models` and `data`
(registries), `parallel` (mesh), `checkpoint`, `runlog` and `saved`. Experiment drivers
live in `metajax.experiments`.
"""

__version__ = "0.2.0"


def load_trained(workdir: str):
  """The trained model of a finished run (see `metajax.saved`)."""
  from metajax.saved import load_trained as load
  return load(workdir)
