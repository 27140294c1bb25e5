"""The multimodal model's input boundary: shape checks at trace time (`check_batch`) and
value checks on the host (`check_values`), each a ConfigError naming the key, what it got
and what is valid, raised before any compute; `example_batch`, zeros of every input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from metajax.errors import ConfigError

if TYPE_CHECKING:
  from metajax.multimodal.model import ModelConfig

KNOWN = ("image", "text", "text_mask", "table_cat", "table_num", "table_mask", "present")
# Per scene (one image and its table serve `questions_per_scene` examples) vs per example.
SCENE_KEYS = ("image", "table_cat", "table_num", "table_mask")
EXAMPLE_KEYS = ("text", "text_mask", "present")


def check_batch(cfg: ModelConfig, batch: Mapping[str, Any], questions_per_scene: int = 1
                ) -> int | None:
  """Checks a batch's keys and shapes against `cfg` (works on tracers); returns B.

  Text, text_mask and present have B rows; image and table inputs B / questions_per_scene
  (one scene serves that many consecutive examples). None for an empty batch.
  """
  extra = sorted(set(batch) - set(KNOWN))
  if extra:
    raise ConfigError("batch", extra, "unknown keys", ", ".join(KNOWN))
  r = questions_per_scene
  if not isinstance(r, int) or r < 1:
    raise ConfigError("questions_per_scene", r, "examples served by each image / table row",
                      "a Python int >= 1 (static)")
  rows = {k: int(v.shape[0]) for k, v in batch.items()}
  per_example = [k for k in EXAMPLE_KEYS if k in rows]
  per_scene = [k for k in SCENE_KEYS if k in rows]
  b = None
  if per_example:
    first = per_example[0]
    b = rows[first]
    for k in per_example[1:]:
      if rows[k] != b:
        raise ConfigError(f"batch.{k}", f"leading size {rows[k]}",
                          f"per-example inputs all have the batch size ({first} has {b})",
                          f"{b} rows")
  elif per_scene:
    b = rows[per_scene[0]] * r
  if b == 0:
    raise ConfigError("batch", f"leading sizes {rows}", "the batch is empty", ">= 1 example")
  if per_scene and b % r:
    raise ConfigError(f"batch.{per_example[0]}", f"leading size {b}",
                      f"with questions_per_scene={r} the examples must fill whole scenes",
                      f"a multiple of {r}")
  for k in per_scene:
    if rows[k] != b // r:
      raise ConfigError(f"batch.{k}", f"leading size {rows[k]}",
                        f"images and tables have one row per scene: batch {b} / "
                        f"questions_per_scene {r}", f"{b // r} rows")
  if "image" in batch:
    shape = tuple(batch["image"].shape[1:])
    if shape != tuple(cfg.image_shape):
      raise ConfigError("batch.image", f"shape {shape}",
                        "images must have the size and channels the model was built for",
                        f"[batch, {', '.join(map(str, cfg.image_shape))}] (H, W, C)")
  if "text" in batch:
    if "text_mask" not in batch:
      raise ConfigError("batch.text_mask", None, "text needs its padding mask",
                        "bool [batch, length], True on real tokens")
    n = batch["text"].shape[1]
    if n > cfg.max_text_len:
      raise ConfigError("batch.text", f"{n} tokens",
                        f"longer than model.max_text_len={cfg.max_text_len}; encode with "
                        "inputs.Preprocessor (truncate_text=True cuts and warns)",
                        f"<= {cfg.max_text_len} tokens")
  if "table_cat" in batch or "table_num" in batch:
    if "table_mask" not in batch:
      raise ConfigError("batch.table_mask", None, "a table needs its row mask",
                        "bool [batch, rows]")
    for key, want in (("table_cat", len(cfg.table_categorical)), ("table_num", cfg.table_numeric)):
      got = batch[key].shape if key in batch else None
      if want and (got is None or got[1:] != (cfg.table_rows, want)):
        raise ConfigError(f"batch.{key}", got, "table does not match the schema the model was "
                          "built for", f"[batch, {cfg.table_rows} rows, {want} columns]")
  return b


def _host(x) -> np.ndarray:
  """A host copy of `x`; of a multi-host jax.Array, this process's rows (all it can check)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.concatenate([np.asarray(s.data) for s in x.addressable_shards])
  return np.asarray(x)


def _where(bad: np.ndarray) -> str:
  return "[" + ", ".join(map(str, np.argwhere(bad)[0])) + "]"


def check_values(cfg: ModelConfig, batch: Mapping[str, Any]) -> None:
  """ConfigError for values the model would silently misread (host side, before compute):
  NaN/None/inf numeric table cells, float images outside [0, 1], token ids outside
  [0, cfg.vocab_size), categorical ids outside their column's vocabulary."""
  if "table_num" in batch:
    raw = _host(batch["table_num"])
    if raw.dtype == object:
      none = np.vectorize(lambda v: v is None, otypes=[bool])(raw)
      if none.any():
        raise ConfigError("batch.table_num", f"None at {_where(none)} (example, row, column)",
                          "a numeric table cell must be a number; a missing row should be "
                          "left out of the table (masked: table_mask False, cells 0)",
                          "finite numbers")
    num = raw.astype(np.float64)
    bad = ~np.isfinite(num)
    if bad.any():
      raise ConfigError("batch.table_num", f"{num[bad][0]} at {_where(bad)} (example, row, "
                        "column)", "a numeric table cell must be a finite number (NaN in any "
                        "row, masked or not, poisons the attention); a missing row should be "
                        "left out of the table (masked: table_mask False, cells 0)",
                        "finite numbers")
  if "image" in batch:
    image = batch["image"] if hasattr(batch["image"], "dtype") else np.asarray(batch["image"])
    if image.dtype != np.uint8:  # uint8 is 0..255 by construction; anything else reads as 0..1
      x = _host(image)
      lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
      if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise ConfigError("batch.image", f"{x.dtype} values in [{lo:.4g}, {hi:.4g}]",
                          "non-uint8 images are read as intensities in [0, 1]",
                          "float in [0, 1], or uint8 0..255")
  if "text" in batch:
    ids = _host(batch["text"])
    bad = (ids < 0) | (ids >= cfg.vocab_size)
    if bad.any():
      raise ConfigError("batch.text", f"token id {int(ids[bad][0])} at {_where(bad)}",
                        f"outside the model's vocabulary (model.vocab_size={cfg.vocab_size}); "
                        "encode with the model's tokenizer", f"0..{cfg.vocab_size - 1}")
  if "table_cat" in batch and cfg.table_categorical:
    cat = _host(batch["table_cat"])
    sizes = np.asarray(cfg.table_categorical)
    bad = (cat < 0) | (cat >= sizes) if cat.shape[-1:] == sizes.shape else np.zeros(0, bool)
    if bad.any():  # (a wrong column count is check_batch's error)
      i, r, j = np.argwhere(bad)[0]
      raise ConfigError("batch.table_cat", f"id {int(cat[i, r, j])} at [{i}, {r}, {j}] "
                        "(example, row, column)",
                        f"categorical column {j} has {sizes[j]} values",
                        f"0..{sizes[j] - 1} in column {j}")


def example_batch(cfg: ModelConfig, batch_size: int = 1, questions_per_scene: int = 1
                  ) -> dict[str, jax.Array]:
  """Zeros for every input of `cfg` (B = batch_size examples, B / questions_per_scene scenes)."""
  b, s = batch_size, batch_size // questions_per_scene
  out = {"image": jnp.zeros((s,) + tuple(cfg.image_shape), jnp.uint8),
         "text": jnp.zeros((b, cfg.max_text_len), jnp.int32),
         "text_mask": jnp.ones((b, cfg.max_text_len), bool)}
  if cfg.table_categorical or cfg.table_numeric:
    out["table_mask"] = jnp.ones((s, cfg.table_rows), bool)
  if cfg.table_categorical:
    out["table_cat"] = jnp.zeros((s, cfg.table_rows, len(cfg.table_categorical)), jnp.int32)
  if cfg.table_numeric:
    out["table_num"] = jnp.zeros((s, cfg.table_rows, cfg.table_numeric))
  return out
