"""`config.experiment` -> the function that runs it: `run(config, workdir) -> results`."""

from __future__ import annotations

from metajax.registry import Registry

EXPERIMENTS = Registry("experiment")
EXPERIMENTS.register("fewshot", "metajax.meta.train:train_and_evaluate")
EXPERIMENTS.register("automl", "metajax.automl.experiment:run")
EXPERIMENTS.register("multimodal", "metajax.multimodal.train:train_and_evaluate")


def run(config, workdir: str):
  """Runs the experiment `config.experiment` names, writing everything under `workdir`."""
  return EXPERIMENTS.get(config.experiment)(config, workdir)
