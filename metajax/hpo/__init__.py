"""Hyperparameter meta-learning: per-layer learning-rate schedules learned across datasets.

  tasks     the task distribution (class / row / feature subsets of datasets, padded to fixed
            shapes, split by dataset into meta-train and meta-test)
  inner     the inner run and `scale_by_layer_rates`, the per-layer, per-segment optax transform
  meta      `MetaLearner`: tbptt and pes hypergradients in one jitted, sharded meta-step
  transfer  the learned rates zero-shot on a held-out dataset vs default and random search
  learned   `learned_rates.json`: `save_learned_rates`, `load_learned_rates(workdir)`
  spec      static config (frozen dataclasses) and its checks

The experiment driver is `metajax.experiments.hp_metalearn` (configs/hp_metalearn.py).
"""

from metajax.hpo.learned import FamilyRates, LearnedRates, load_learned_rates, save_learned_rates

__all__ = ["FamilyRates", "LearnedRates", "load_learned_rates", "save_learned_rates"]
