"""Self-describing trained models: `model.json` beside the checkpoints, and `load_trained`.

A run writes `<workdir>/model.json`: what kind of learner it trained, the model's
registry name and constructor arguments, and whatever else rebuilding it needs
(class names, table schema, tokenizer directory). `load_trained(workdir)` reads it,
rebuilds the model, restores the latest checkpoint read-only, and returns the kind's
trained-model object, whose public methods predict and evaluate.

  >>> trained = metajax.load_trained('runs/quickstart')
  >>> trained.evaluate(...)   # see the kind's loader for its methods
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from metajax import parallel
from metajax.errors import ConfigError
from metajax.registry import Registry
from metajax.runlog import atomic_write, dumps_strict

MODEL_FILE = "model.json"

# kind -> loader(workdir, card) -> trained-model object
LOADERS = Registry("saved model kind")
LOADERS.register("fewshot", "metajax.meta.saved:load")
LOADERS.register("multimodal", "metajax.multimodal.saved:load")
LOADERS.register("automl", "metajax.automl.api:load_run")
LOADERS.register("compressed", "metajax.compress.saved:load")


def write_card(workdir: str, kind: str, **fields: Any) -> None:
  """Writes `model.json` ({'kind': kind, **fields}, JSON-serialisable; NaN as null) on
  process 0."""
  if kind not in LOADERS:
    raise KeyError(f"no loader for saved model kind {kind!r}; known: {LOADERS.names()}")
  if jax.process_index() == 0:
    atomic_write(os.path.join(workdir, MODEL_FILE),
                 dumps_strict({"kind": kind, **fields}, indent=2, sort_keys=True))


def read_card(workdir: str) -> dict[str, Any]:
  """The `model.json` of `workdir`; ConfigError when there is none."""
  path = os.path.join(workdir, MODEL_FILE)
  if not os.path.isfile(path):
    raise ConfigError("workdir", workdir, f"holds no {MODEL_FILE} (no trained metajax model)",
                      "the workdir of a finished metajax run")
  with open(path) as f:
    return json.load(f)


def load_trained(workdir: str):
  """The trained model of the run in `workdir`, at its latest checkpoint; writes nothing.

  With several processes every one calls it (the checkpoint restore is collective); they meet
  first, so none reads `model.json` before process 0, which may have just trained the run
  in the same program, has written it."""
  parallel.sync_processes("metajax:load_trained")
  card = read_card(workdir)
  return LOADERS.get(card["kind"])(workdir, card)
