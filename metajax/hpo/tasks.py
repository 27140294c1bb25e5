"""Task distribution for hyperparameter meta-learning, offline and deterministic.

A *pool* is one dataset preprocessed once for a family (tables standardised, images grey,
resized and standardised, texts BPE token ids). A *task* is a random class subset (2 to
`max_classes` classes, relabelled in a random order), a random row subsample (a fraction in
[min_row_frac, 1] of those classes' rows, split half train / half validation) and, for
tables, a random feature subset (a fraction in [min_feature_frac, 1], shuffled), padded to
the family's fixed shapes so every task of a family stacks into one array batch:

  x_train [N, *input_shape], y_train [N], n_train  (rows >= n_train are padding)
  x_val   [V, *input_shape], y_val [V],   n_val
  n_classes                                         (logits >= n_classes are masked)

Meta-train tasks come only from `train_datasets`, so a held-out (`test_datasets`) dataset
is never seen while meta-training. Everything is a function of (seed, slot, episode).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from typing import NamedTuple

import numpy as np

from metajax.data.tabular import DataError
from metajax.hpo.spec import FamilySpec


class Tasks(NamedTuple):
  """A batch of padded tasks (leading axis: tasks) or one task (no leading axis)."""
  x_train: np.ndarray
  y_train: np.ndarray
  n_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  n_val: np.ndarray
  n_classes: np.ndarray


@dataclasses.dataclass
class Pool:
  """One dataset as model-ready rows for a family: x [R, *input_shape], y [R] in 0..C-1."""
  name: str
  x: np.ndarray
  y: np.ndarray

  @property
  def num_classes(self) -> int:
    return int(self.y.max()) + 1


# ---------------------------------------------------------------- pools

def load_pool(name: str, family: FamilySpec, data_dir: str = "", max_rows: int = 0,
              max_classes: int = 0, seed: int = 0) -> Pool:
  """Dataset `name` preprocessed for `family`: at most `max_classes` classes (0: all, chosen
  by `seed`) and `max_rows` rows (0: all). DataError when the data cannot feed the family."""
  from metajax.automl import data as automl_data
  if name.startswith("tfds:"):
    _require_prepared_tfds(name.removeprefix("tfds:"), data_dir)
  try:
    ds = automl_data.load(name, data_dir)
  except DataError as e:
    if "optional package" not in e.why:
      raise
    raise MissingData(e.key, e.value, e.why, e.valid) from None
  X, y_raw = ds.X, np.asarray(ds.y).astype(str)
  if ds.test is not None:  # a predefined test split is more rows of the same pool
    X, y_raw = _concat(X, ds.test[0]), np.concatenate([y_raw, np.asarray(ds.test[1]).astype(str)])
  classes, y = np.unique(y_raw, return_inverse=True)
  y = np.where(np.isin(y_raw, ["None", "nan"]), -1, y)  # rows without a label
  rng = np.random.default_rng([seed, 7])
  keep = np.flatnonzero(y >= 0)
  if max_classes and len(classes) > max_classes:
    chosen = rng.choice(len(classes), max_classes, replace=False)
    keep = keep[np.isin(y[keep], chosen)]
  if max_rows and len(keep) > max_rows:
    keep = np.sort(rng.choice(keep, max_rows, replace=False))
  _, y = np.unique(y[keep], return_inverse=True)
  X = automl_data.take(X, keep)
  x = _features(ds.modality, X, family, name)
  return Pool(name, x, y.astype(np.int32))


class MissingData(DataError):
  """The dataset is not on this machine (an optional package or a prepared tfds directory)."""


def _require_prepared_tfds(name: str, data_dir: str) -> None:
  """MissingData unless `name` is prepared under the tfds data directory (tfds would
  otherwise try to download it)."""
  root = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
  if not glob.glob(os.path.join(root, name, "**", "dataset_info.json"), recursive=True):
    raise MissingData("data.data_dir", root, f"holds no prepared tfds dataset {name!r}",
                      "a directory with tfds-prepared data (prepare elsewhere and copy it)")


def _concat(a, b):
  if isinstance(a, list):
    return a + list(b)
  if hasattr(a, "iloc"):
    import pandas as pd
    return pd.concat([a, b], ignore_index=True)
  return np.concatenate([np.asarray(a), np.asarray(b)])


def _features(modality: str, X, family: FamilySpec, name: str) -> np.ndarray:
  from metajax.automl import data as automl_data
  kind = family.kind
  if kind == "flat" and modality == "table":
    return automl_data.TablePrep().fit(X).transform(X)
  if kind == "flat" and modality == "image":
    x = automl_data.ImagePrep().fit(X).transform(X)
    return x.reshape(len(x), -1)
  if kind == "image" and modality == "image":
    return _images(np.asarray(X), family.input_shape[0])
  if kind == "ids" and modality == "text":
    prep = automl_data.TextPrep(family.vocab_size, family.input_shape[0]).fit(list(X))
    return prep.ids(list(X))
  raise DataError(f"families.{family.name}.train_datasets", name,
                  f"is a {modality} dataset; the {family.name} family takes "
                  f"{ {'flat': 'tables', 'image': 'images', 'ids': 'texts'}[kind] }",
                  "a dataset of that modality")


def _images(x: np.ndarray, size: int) -> np.ndarray:
  """uint8/float images [N, H, W(, C)] -> grey float32 [N, size, size, 1], standardised."""
  import jax
  x = x.astype(np.float32)
  if x.ndim == 4:
    x = x.mean(-1)
  x = x / max(float(x.max()), 1e-6)
  if x.shape[1:] != (size, size):
    x = np.asarray(jax.image.resize(x, (len(x), size, size), "linear"))
  x = (x - x.mean()) / (x.std() + 1e-6)
  return x[..., None].astype(np.float32)


# ---------------------------------------------------------------- tasks

@dataclasses.dataclass(frozen=True)
class TaskShape:
  """How tasks are drawn (config.tasks)."""
  min_classes: int = 2
  min_row_frac: float = 0.5
  min_feature_frac: float = 0.5
  min_rows_per_class: int = 4


def sample_task(rng: np.random.Generator, pool: Pool, family: FamilySpec,
                shape: TaskShape) -> Tasks:
  """One padded task from `pool` (see the module docstring)."""
  counts = np.bincount(pool.y)
  usable = np.flatnonzero(counts >= shape.min_rows_per_class)
  hi = min(len(usable), family.max_classes)
  if hi < shape.min_classes:
    raise DataError("tasks.min_classes", shape.min_classes, f"{pool.name} has only {hi} classes "
                    f"with >= {shape.min_rows_per_class} rows", f"<= {hi}")
  k = int(rng.integers(shape.min_classes, hi + 1))
  classes = rng.permutation(usable)[:k]              # position in this list = new label
  rows = np.flatnonzero(np.isin(pool.y, classes))
  frac = rng.uniform(shape.min_row_frac, 1.0)
  rows = rng.permutation(rows)[:max(2 * k, int(round(frac * len(rows))))]
  half = len(rows) // 2
  tr, va = rows[:half][:family.train_rows], rows[half:][:family.val_rows]
  relabel = np.full(pool.num_classes, -1, np.int64)
  relabel[classes] = np.arange(k)
  x = pool.x
  if family.kind == "flat":
    d = x.shape[1]
    hi_d = min(d, family.input_shape[0])
    n_feat = int(rng.integers(min(hi_d, max(1, math.ceil(shape.min_feature_frac * d))), hi_d + 1))
    cols = rng.permutation(d)[:n_feat]
    x = lambda idx: _pad_cols(pool.x[idx][:, cols], family.input_shape[0])
  else:
    x = lambda idx: pool.x[idx]
  n, v = family.train_rows, family.val_rows
  return Tasks(_pad_rows(x(tr), n), _pad_rows(relabel[pool.y[tr]], n), np.int32(len(tr)),
               _pad_rows(x(va), v), _pad_rows(relabel[pool.y[va]], v), np.int32(len(va)),
               np.int32(k))


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
  a = np.asarray(a)
  out = np.zeros((n,) + a.shape[1:], np.int32 if a.dtype.kind in "iu" else np.float32)
  out[:len(a)] = a
  return out


def _pad_cols(a: np.ndarray, d: int) -> np.ndarray:
  out = np.zeros((len(a), d), np.float32)
  out[:, :a.shape[1]] = a
  return out


class TaskDistribution:
  """Padded tasks of one family from a fixed list of pools (meta-train or meta-val).

  `task(slot, episode)` is a pure function of (seed, slot, episode): the dataset is drawn
  uniformly from the pools, then the task from it. `batch(step, ...)` gives a meta-step's
  tasks with slots staggered over the windows of an inner run.
  """

  def __init__(self, family: FamilySpec, pools: list[Pool], shape: TaskShape, seed: int):
    if not pools:
      raise DataError(f"families.{family.name}.train_datasets", (), "no dataset could be loaded",
                      "at least one dataset of this family's modality")
    self.family, self.pools, self.shape, self.seed = family, pools, shape, seed
    self._cache: dict[tuple[int, int], tuple[str, Tasks]] = {}

  def task(self, slot: int, episode: int) -> tuple[str, Tasks]:
    """(dataset name, padded task) of `slot` in `episode`."""
    key = (slot, episode)
    if key not in self._cache:
      if len(self._cache) > 4096:
        self._cache.clear()
      rng = np.random.default_rng([self.seed, slot, episode])
      pool = self.pools[int(rng.integers(len(self.pools)))]
      self._cache[key] = (pool.name, sample_task(rng, pool, self.family, self.shape))
    return self._cache[key]

  def batch(self, step: int, num_tasks: int, windows: int) -> tuple[Tasks, np.ndarray, list[str]]:
    """The tasks of meta-step `step`: slot i is in episode (step + off_i) // windows at window
    (step + off_i) % windows, off_i = i * windows // num_tasks (staggered, so the meta-batch
    mixes early and late training). Returns (stacked Tasks, window [num_tasks], names)."""
    names, tasks, window = [], [], np.zeros(num_tasks, np.int32)
    for i in range(num_tasks):
      t = step + i * windows // num_tasks
      name, task = self.task(i, t // windows)
      names.append(name)
      tasks.append(task)
      window[i] = t % windows
    return stack(tasks), window, names

  def fixed(self, n: int, offset: int = 1_000_000) -> Tasks:
    """`n` fixed tasks (slots offset.., episode 0): the meta-validation set."""
    return stack([self.task(offset + i, 0)[1] for i in range(n)])


def stack(tasks: list[Tasks]) -> Tasks:
  return Tasks(*(np.stack(f) for f in zip(*tasks)))


def split_rows(pool: Pool, seed: int, val_frac: float = 0.2,
               test_frac: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Stratified (train, val, test) row indices of a pool, a function of `seed`."""
  rng = np.random.default_rng([seed, 11])
  parts = ([], [], [])
  for c in range(pool.num_classes):
    rows = rng.permutation(np.flatnonzero(pool.y == c))
    n_te = int(round(test_frac * len(rows)))
    n_va = int(round(val_frac * len(rows)))
    parts[2].append(rows[:n_te])
    parts[1].append(rows[n_te:n_te + n_va])
    parts[0].append(rows[n_te + n_va:])
  return tuple(np.sort(np.concatenate(p)) for p in parts)
