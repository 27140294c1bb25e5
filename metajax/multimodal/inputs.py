"""Raw images, strings and tables -> the model's batch dict, with clear errors for bad input.

  >>> pre = Preprocessor(image_shape=(75, 75, 3), tokenizer=tok, max_text_len=16,
  ...                    schema=TableSchema({'colour': ('red', 'blue')}, {'x': (0., 75.)}, 3))
  >>> batch = pre(images=imgs, texts=['what shape is the red object?'] * 2,
  ...             tables=[[{'colour': 'red', 'x': 10.0}], []])
  >>> model.apply({'params': params}, batch)['logits']

Any of images / texts / tables may be None: that modality is left out of the batch
and the model runs on the others. Values the model would silently misread (a missing
numeric cell, float images outside [0, 1]) are a ConfigError here (`checks.check_values`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from metajax.errors import ConfigError
from metajax.multimodal.checks import check_values
from metajax.multimodal.tokenize import encode


@dataclasses.dataclass(frozen=True)
class TableSchema:
  """Columns a model was trained on. categorical: column -> values; numeric: column -> (offset, scale)."""
  categorical: Mapping[str, Sequence[str]]
  numeric: Mapping[str, tuple[float, float]]
  max_rows: int

  @property
  def columns(self) -> list[str]:
    return list(self.categorical) + list(self.numeric)

  def encode(self, tables: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per-example tables (list of row dicts, or a pandas DataFrame) -> table_cat, table_num, table_mask."""
    b, r = len(tables), self.max_rows
    cat = np.zeros((b, r, len(self.categorical)), np.int32)
    num = np.zeros((b, r, len(self.numeric)), np.float32)
    mask = np.zeros((b, r), bool)
    index = {c: {v: i for i, v in enumerate(vals)} for c, vals in self.categorical.items()}
    for i, table in enumerate(tables):
      rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
      if len(rows) > r:
        raise ConfigError(f"tables[{i}]", f"{len(rows)} rows", "more rows than the model was "
                          "trained on", f"<= {r} rows")
      for j, row in enumerate(rows):
        if set(row) != set(self.columns):
          missing, extra = sorted(set(self.columns) - set(row)), sorted(set(row) - set(self.columns))
          raise ConfigError(f"tables[{i}] row {j}", sorted(row),
                            f"columns differ from the training schema (missing {missing}, "
                            f"unexpected {extra})", ", ".join(self.columns))
        for k, col in enumerate(self.categorical):
          if row[col] not in index[col]:
            raise ConfigError(f"tables[{i}] row {j} column {col!r}", row[col],
                              "unknown category", ", ".join(map(repr, self.categorical[col])))
          cat[i, j, k] = index[col][row[col]]
        for k, (col, (offset, scale)) in enumerate(self.numeric.items()):
          v = row[col]
          if v is None or not math.isfinite(float(v)):
            raise ConfigError(f"tables[{i}] row {j} column {col!r}", v,
                              "a numeric cell must be a finite number; a row with a missing "
                              "value should be left out of the table (absent rows are masked)",
                              "a finite number")
          num[i, j, k] = (float(v) - offset) / scale
        mask[i, j] = True
    return {"table_cat": cat, "table_num": num, "table_mask": mask}


@dataclasses.dataclass
class Preprocessor:
  """Checks and encodes raw inputs for a model built with the same image shape, text length, schema."""
  image_shape: tuple[int, int, int]
  tokenizer: Any
  max_text_len: int
  schema: TableSchema | None = None
  truncate_text: bool = False

  def __call__(self, images=None, texts: Sequence[str] | None = None,
               tables: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    batch: dict[str, np.ndarray] = {}
    sizes = {k: len(v) for k, v in (("images", images), ("texts", texts), ("tables", tables))
             if v is not None}
    if len(set(sizes.values())) > 1:
      raise ConfigError("batch", sizes, "modalities have different batch sizes", "equal lengths")
    if images is not None:
      images = np.asarray(images)
      if images.ndim != 4 or images.shape[1:] != tuple(self.image_shape):
        raise ConfigError("images", f"shape {images.shape}", "wrong image size or channels",
                          f"[batch, {', '.join(map(str, self.image_shape))}] (H, W, C), "
                          "uint8 0..255 or float 0..1")
      batch["image"] = images
    if texts is not None:
      batch["text"], batch["text_mask"] = encode(self.tokenizer, texts, self.max_text_len,
                                                 self.truncate_text)
    if tables is not None:
      if self.schema is None:
        raise ConfigError("tables", "given", "this model was trained without a table", "None")
      batch.update(self.schema.encode(tables))
    check_values(self._limits(), batch)
    return batch

  def _limits(self):
    """The ModelConfig fields `check_values` reads, from this preprocessor's own."""
    from metajax.multimodal.model import ModelConfig
    s = self.schema
    return ModelConfig(image_shape=tuple(self.image_shape), vocab_size=len(self.tokenizer),
                       max_text_len=self.max_text_len,
                       table_categorical=tuple(len(v) for v in s.categorical.values()) if s else (),
                       table_numeric=len(s.numeric) if s else 0, table_rows=s.max_rows if s else 0)
