"""Experiment drivers: `config.experiment` -> `run(config, workdir) -> results`.

Each driver wires the library (models, learners, steps, evaluators) to one experiment's
data and report; nothing in `metajax/` outside this package imports it.
"""

from __future__ import annotations

from metajax.registry import Registry

EXPERIMENTS = Registry("experiment")
EXPERIMENTS.register("fewshot", "metajax.experiments.fewshot:run")
EXPERIMENTS.register("automl", "metajax.experiments.automl:run")
EXPERIMENTS.register("multimodal", "metajax.experiments.sort_of_clevr:run")
EXPERIMENTS.register("multimodal_fewshot", "metajax.experiments.sort_of_clevr_fewshot:run")
EXPERIMENTS.register("hp_metalearn", "metajax.experiments.hp_metalearn:run")
EXPERIMENTS.register("distill", "metajax.experiments.compress_distill:run")
EXPERIMENTS.register("compress", "metajax.experiments.compress:run")


def run(config, workdir: str):
  """Runs the experiment `config.experiment` names, writing everything under `workdir`."""
  return EXPERIMENTS.get(config.experiment)(config, workdir)
