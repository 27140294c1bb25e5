"""A trained multimodal model back from its workdir: `metajax.load_trained(workdir)`.

  >>> trained = metajax.load_trained('/tmp/mm_soc')
  >>> out = trained.predict(images=imgs, texts=['is the red object heavy?'] * len(imgs),
  ...                       tables=[[{'colour': 'red', 'shape': 'circle', 'x': 10, 'y': 20,
  ...                                 'weight': 7.5}], ...])
  >>> out['answer']                       # class names, e.g. ['yes', 'no']
  >>> trained.evaluate(answers=['yes', 'no'], images=imgs, texts=..., tables=...)

Everything comes from the model card (`model.json` of kind 'multimodal'): the full
ModelConfig (`model`), the table schema (categorical vocabularies, numeric columns with
their offset and scale), the tokenizer directory (relative to the workdir), the answer
names, the text length and the optimizer (whose state the checkpoint holds). Any trained multimodal model loads (early or late fusion, any
schema); the params come from the latest checkpoint, read-only (missing or mismatched:
ConfigError); loading writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np

from metajax import checkpoint, models, optim
from metajax.errors import ConfigError
from metajax.multimodal.checks import example_batch
from metajax.multimodal.inputs import Preprocessor, TableSchema
from metajax.multimodal.steps import make_predict
from metajax.multimodal.tokenize import load_tokenizer
from metajax.state import TrainState


def table_schema_card(schema: TableSchema | None) -> dict | None:
  """JSON-ready form of a TableSchema (the card's `table_schema`). Columns are lists, not
  objects: their order is the model's input order, and the card's keys are sorted."""
  if schema is None:
    return None
  return {"categorical": [{"name": c, "values": list(v)} for c, v in schema.categorical.items()],
          "numeric": [{"name": c, "offset": o, "scale": s} for c, (o, s) in schema.numeric.items()],
          "max_rows": schema.max_rows}


def table_schema_from_card(card: dict | None) -> TableSchema | None:
  if not card:
    return None
  return TableSchema({c["name"]: tuple(c["values"]) for c in card["categorical"]},
                     {c["name"]: (c["offset"], c["scale"]) for c in card["numeric"]},
                     card["max_rows"])


@dataclasses.dataclass
class TrainedMultimodal:
  """A multimodal model at checkpoint `step` with its preprocessor and answer names."""
  model: Any
  params: Any
  preprocessor: Preprocessor
  answers: tuple[str, ...]
  step: int

  def __post_init__(self):
    self._predict = make_predict(self.model)

  def predict(self, images=None, texts: Sequence[str] | None = None,
              tables: Sequence[Any] | None = None) -> dict[str, Any]:
    """Raw inputs (any of them None: that modality is absent) -> {'answer': [B] names,
    'logits': [B, C], 'embedding': [B, D]}. images [B, H, W, C] uint8 0..255 or float 0..1;
    texts: B strings; tables: B lists of row dicts (or DataFrames) in the trained schema."""
    batch = self.preprocessor(images=images, texts=texts, tables=tables)
    if not batch:
      raise ConfigError("predict", None, "no input given", "images, texts and/or tables")
    out = jax.device_get(self._predict(self.params, batch))
    return {"answer": [self.answers[i] for i in out["answer"]],
            "logits": np.asarray(out["logits"]), "embedding": np.asarray(out["embedding"])}

  def evaluate(self, answers: Sequence[str], images=None, texts: Sequence[str] | None = None,
               tables: Sequence[Any] | None = None, batch_size: int = 256) -> dict[str, float]:
    """{'accuracy', 'examples'} of the predicted answers against `answers` (names)."""
    unknown = sorted(set(answers) - set(self.answers))
    if unknown:
      raise ConfigError("answers", unknown[0], "not an answer the model was trained on",
                        ", ".join(self.answers))
    sizes = {len(x) for x in (answers, images, texts, tables) if x is not None}
    if len(sizes) != 1:
      raise ConfigError("answers", f"{len(answers)} answers", "one answer per example",
                        "as many answers as images / texts / tables")
    n, correct = len(answers), 0
    for s in range(0, n, batch_size):
      part = lambda x: None if x is None else x[s:s + batch_size]
      got = self.predict(part(images), part(texts), part(tables))["answer"]
      correct += sum(g == a for g, a in zip(got, answers[s:s + batch_size]))
    return {"accuracy": correct / max(n, 1), "examples": n}


def load(workdir: str, card: dict) -> TrainedMultimodal:
  """The model of `card` (a `model.json` of kind 'multimodal') at the latest checkpoint."""
  spec = dict(card["model"])
  model = models.make(spec.pop("name"), **spec)
  cfg = model.cfg
  tok = load_tokenizer(os.path.normpath(os.path.join(workdir, card["tokenizer"])))
  if len(tok) != cfg.vocab_size:
    raise ConfigError("workdir", workdir, f"its tokenizer has {len(tok)} tokens, the model "
                      f"{cfg.vocab_size}", "the workdir of one finished run")
  pre = Preprocessor(tuple(cfg.image_shape), tok, card["max_text_len"],
                     table_schema_from_card(card.get("table_schema")),
                     card.get("truncate_text", False))
  # The checkpoint holds the whole TrainState: its structure needs the optimizer's state.
  tx = optim.make_optimizer(card["optimizer"], card.get("steps", 0))
  like = jax.eval_shape(lambda: TrainState.create(
      model.init(jax.random.key(0), example_batch(cfg))["params"], tx))
  state, step = checkpoint.restore(workdir, like)
  return TrainedMultimodal(model, state.params, pre, tuple(card["answers"]), step)
