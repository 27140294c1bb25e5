"""Data for AutoML: loading by name, checks, preprocessing, stratified splits, meta-features.

`load(name, ...)` takes any `metajax.data` registry name that gives a `Dataset` (tables,
texts, images: `metajax.data.tabular`) or class-indexed images (`ClassImages`, e.g. glyphs,
uci_digits), or `tfds:NAME` read as rows (`metajax.data.tabular.load_tfds`).

Handling of bad data (each case is either a clear `DataError` or a reported fix):
  * X/y length mismatch, one class only, fewer than `MIN_ROWS` rows, a class
    with fewer than 3 rows (no stratified 3-way split) -> DataError.
  * non-numeric junk in a mostly numeric column -> the junk becomes missing
    (count reported); a column with more than half junk is categorical.
  * an all-missing (or constant) column -> dropped (reported).
  * missing values -> median (numeric) / 'missing' category (categorical).
  * categorical columns -> one-hot (at most 20 levels, rarer ones pooled).
  * numeric columns -> standardised on the training split.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from metajax import data as data_registry
from metajax.automl import schema
from metajax.data.base import ClassImages
from metajax.data.tabular import DataError, Dataset, load_tfds

MIN_ROWS = 20


def load(name: str, data_dir: str = "", max_rows: int = 0, seed: int = 0) -> Dataset:
  """The classification dataset `name`, at most `max_rows` rows (0: all), subsampled
  stratified by `seed`. DataError for a registry entry that is not a classification set."""
  if name.startswith("tfds:"):
    ds = load_tfds(name.removeprefix("tfds:"), data_dir, max_rows or 20000)
  else:
    ds = data_registry.load(name, data_dir)
  if isinstance(ds, ClassImages):
    ds = _from_class_images(ds)
  if not isinstance(ds, Dataset):
    raise DataError("data.name", name, f"gives {type(ds).__name__}, not a classification set",
                    ", ".join(names()))
  return _subsample(ds, max_rows, seed)


def names() -> list[str]:
  """Registry names AutoML can search on (ClassImages sets too), plus tfds:NAME."""
  from metajax.data import tabular
  return list(tabular.NAMES) + ["glyphs", "glyph_letters", "uci_digits", "tfds:<name>"]


def _from_class_images(ci: ClassImages) -> Dataset:
  """Every split's images [K, E, H, W, C] as rows labelled by class (classes of all splits)."""
  xs = [a.reshape(-1, *a.shape[2:]) for a in ci.splits.values()]
  sizes = [a.shape[:2] for a in ci.splits.values()]
  first = np.cumsum([0] + [k for k, _ in sizes])
  y = np.concatenate([np.repeat(np.arange(k) + first[i], e) for i, (k, e) in enumerate(sizes)])
  return Dataset(ci.name, "image", np.concatenate(xs), y)


def _subsample(ds: Dataset, max_rows: int, seed: int) -> Dataset:
  """At most `max_rows` training rows, stratified (keeps rare classes represented)."""
  if not max_rows or len(ds) <= max_rows:
    return ds
  from sklearn.model_selection import train_test_split
  idx = np.arange(len(ds))
  keep, _ = train_test_split(idx, train_size=max_rows, stratify=np.asarray(ds.y).astype(str),
                             random_state=seed)
  keep = np.sort(keep)
  test = ds.test
  if test is not None and len(test[1]) > max_rows:
    t = np.sort(np.random.default_rng(seed).permutation(len(test[1]))[:max_rows])
    test = (take(test[0], t), np.asarray(test[1])[t])
  return Dataset(ds.name, ds.modality, take(ds.X, keep), np.asarray(ds.y)[keep], test,
                 ds.columns)


def _n(X) -> int:
  return X.shape[0] if hasattr(X, "shape") else len(X)


def take(X, idx):
  """Rows `idx` of X (an array, a DataFrame or a list of texts)."""
  if isinstance(X, list):
    return [X[i] for i in idx]
  if hasattr(X, "iloc"):
    return X.iloc[idx]
  return X[idx]


def check(ds: Dataset) -> list[str]:
  """Raises DataError for data that cannot be used; returns notes on what was fixed."""
  n = _n(ds.X)
  if n != len(ds.y):
    raise DataError("data.y", f"{len(ds.y)} labels", f"X has {n} rows but y has {len(ds.y)}",
                    "one label per row")
  if n < MIN_ROWS:
    raise DataError("data.X", f"{n} rows", "too few rows to split into train/val/test",
                    f">= {MIN_ROWS} rows")
  y = np.asarray(ds.y)
  keep = np.array([v is not None and not (isinstance(v, float) and math.isnan(v)) for v in y])
  notes = []
  if not keep.all():
    notes.append(f"dropped {int((~keep).sum())} rows with a missing label")
  classes, counts = np.unique(y[keep].astype(str), return_counts=True)
  if len(classes) < 2:
    raise DataError("data.y", f"{len(classes)} class", "classification needs at least two classes",
                    ">= 2 distinct labels")
  if counts.min() < 3:
    bad = classes[counts < 3].tolist()
    raise DataError("data.y", bad, "classes with fewer than 3 rows cannot be split stratified",
                    ">= 3 rows per class (merge or drop rare classes)")
  if ds.modality not in ("table", "image", "text"):
    raise DataError("data.modality", ds.modality, "unknown modality", "'table', 'image', 'text'")
  return notes


def split(ds: Dataset, seed: int, val_frac: float = 0.2, test_frac: float = 0.2):
  """Stratified (train, val, test) index arrays over rows with a label.

  With a predefined test split, only train/val are split here and `test` is None.
  """
  from sklearn.model_selection import train_test_split
  y = np.asarray(ds.y).astype(str)
  idx = np.array([i for i, v in enumerate(ds.y)
                  if v is not None and not (isinstance(v, float) and math.isnan(v))])
  if ds.test is None:
    rest, test = train_test_split(idx, test_size=test_frac, stratify=y[idx], random_state=seed)
  else:
    rest, test = idx, None
  frac = val_frac / (1 - (test_frac if ds.test is None else 0.0))
  train, val = train_test_split(rest, test_size=frac, stratify=y[rest], random_state=seed + 1)
  return np.sort(train), np.sort(val), (None if test is None else np.sort(test))


def test_rows(ds: Dataset, seed: int, val_frac: float = 0.2, test_frac: float = 0.2):
  """The raw (X, y) test rows `prepare(ds, seed, val_frac, test_frac)` evaluates on."""
  if ds.test is not None:
    return ds.test
  _, _, te = split(ds, seed, val_frac, test_frac)
  return take(ds.X, te), np.asarray(ds.y)[te]


MISSING = ("", "?", "NA", "nan", "NaN", "<NA>", "NaT", "None")


def _is_missing(v) -> bool:
  if v is None or (isinstance(v, float) and v != v):
    return True
  if isinstance(v, str):
    return v.strip() in MISSING
  return type(v).__name__ in ("NAType", "NaTType")


def _as_float(col: np.ndarray) -> tuple[np.ndarray, int, int]:
  """Column -> float64 (missing, unparseable and infinite values -> nan), the count of
  non-missing junk and the count of infinite values."""
  if col.dtype.kind in "biuf":
    out = col.astype(np.float64)
    inf = np.isinf(out)
    out[inf] = np.nan
    return out, 0, int(inf.sum())
  out = np.empty(len(col), np.float64)
  junk = 0
  for i, v in enumerate(col):
    if _is_missing(v):
      out[i] = np.nan
      continue
    try:
      out[i] = float(v)
    except (TypeError, ValueError):
      out[i] = np.nan
      junk += 1
  inf = np.isinf(out)
  out[inf] = np.nan
  return out, junk, int(inf.sum())


def _columns(X) -> list[np.ndarray]:
  """The columns of a table (a DataFrame keeps each column's own dtype)."""
  if hasattr(X, "iloc"):
    return [X.iloc[:, j].to_numpy() for j in range(X.shape[1])]
  X = np.asarray(X)
  if X.dtype.kind not in "biuf":
    X = X.astype(object)
  return list(X.reshape(len(X), -1).T)


class TablePrep:
  """Fits on training rows: the column schema, typing, imputation, one-hot encoding, scaling.

  `transform(X) -> [N, F] float32`, after `schema.align` (names are the schema). Notes on
  every fix are in `notes`. Infinite values are treated as missing (imputed with the training
  median) at fit and at predict time; at predict time `transform(X, warn=True)` warns about
  them and about non-numeric values in numeric columns.
  """

  def __init__(self, max_levels: int = 20):
    self.max_levels = max_levels
    self.notes: list[str] = []

  def fit(self, X, columns=None) -> "TablePrep":
    self.names = schema.check_fit(X, columns)
    self.named = schema.names_of(X) is not None or columns is not None
    self.kinds, self.stats = [], []
    for name, col in zip(self.names, _columns(X)):
      vals, junk, inf = _as_float(col)
      present = int(len(col) - sum(map(_is_missing, col))) if col.dtype == object else int(
          (~np.isnan(vals)).sum() + inf)
      if present == 0:
        self.kinds.append("drop"); self.stats.append(None)
        self.notes.append(f"column {name!r} is all missing: dropped")
      elif junk > present / 2:
        levels, counts = np.unique(np.array([str(v) for v in col]), return_counts=True)
        top = levels[np.argsort(-counts, kind="stable")][: self.max_levels].tolist()
        if len(col) > present:
          self.notes.append(f"column {name!r}: {len(col) - present} missing values "
                            "kept as their own category")
        self.kinds.append("cat"); self.stats.append(top)
      else:
        if junk:
          self.notes.append(f"column {name!r}: {junk} non-numeric values treated as missing")
        if inf:
          self.notes.append(f"column {name!r}: {inf} infinite values treated as missing")
        gaps = int(np.isnan(vals).sum())
        if gaps:
          self.notes.append(f"column {name!r}: {gaps} missing values imputed with the "
                            "training median")
        med = float(np.nanmedian(vals)) if gaps < len(vals) else 0.0
        filled = np.where(np.isnan(vals), med, vals)
        sd = float(filled.std())
        if not sd > 0.0:
          self.kinds.append("drop"); self.stats.append(None)
          self.notes.append(f"column {name!r} is constant: dropped")
          continue
        self.kinds.append("num"); self.stats.append((med, float(filled.mean()), sd))
    if "num" not in self.kinds and "cat" not in self.kinds:
      raise DataError("data.X", "no usable column", "every column is missing or constant",
                      "at least one informative column")
    return self

  def transform(self, X, warn: bool = False) -> np.ndarray:
    """[N, F] float32 features of table X (its columns checked against the schema first)."""
    X = schema.align(X, self.names, getattr(self, "named", False))
    parts, fixed = [], []
    for name, col, kind, st in zip(self.names, _columns(X), self.kinds, self.stats):
      if kind == "num":
        vals, junk, inf = _as_float(col)
        if junk or inf:
          fixed.append(f"{name!r} ({junk} non-numeric, {inf} infinite)")
        vals = np.where(np.isnan(vals), st[0], vals)
        parts.append(((vals - st[1]) / st[2])[:, None])
      elif kind == "cat":
        s = np.array([str(v) for v in col])
        parts.append(np.stack([s == lv for lv in st], 1).astype(np.float64))
    if warn and fixed:
      warnings.warn("AutoML.predict: values treated as missing (imputed with the training "
                    "median) in columns " + ", ".join(fixed), stacklevel=3)
    return np.concatenate(parts, 1).astype(np.float32)


class TextPrep:
  """A BPE tokenizer trained offline (`tokenizers`) on the training texts.

  `ids(texts) -> [N, seq_len] int32` (0 = padding); `bow(texts) -> [N, vocab]`
  log-count features for non-sequence families.
  """

  def __init__(self, vocab_size: int = 2000, seq_len: int = 64):
    self.vocab_size, self.seq_len = vocab_size, seq_len
    self.notes: list[str] = []

  def fit(self, texts: list[str]) -> "TextPrep":
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=self.vocab_size, special_tokens=["[PAD]", "[UNK]"], show_progress=False))
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=self.seq_len)
    tok.enable_truncation(self.seq_len)
    self.tokenizer_json = tok.to_str()
    self.vocab_size = tok.get_vocab_size()
    self.notes.append(f"BPE tokenizer trained on {len(texts)} texts: vocab {self.vocab_size}, "
                      f"sequences cut/padded to {self.seq_len}")
    return self

  def ids(self, texts: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(self.tokenizer_json)
    return np.array([e.ids for e in tok.encode_batch([str(t) for t in texts])], np.int32)

  def features(self, texts: list[str], view: str):
    """The model inputs of `view` ('ids' | 'flat' | 'linear': TF-IDF, sparse) for raw texts."""
    if view == "linear":
      return self.tfidf.transform([str(t) for t in texts])
    return self.ids(texts) if view == "ids" else self.bow(texts)

  def fit_tfidf(self, texts: list[str]) -> "TextPrep":
    """Word 1-2-grams (seen in at least 2 training texts), sublinear TF-IDF, fitted on the
    training texts: the sparse n-gram features of the `linear` family."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    self.tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000,
                                 sublinear_tf=True, dtype=np.float32)
    self.tfidf.fit([str(t) for t in texts])
    self.notes.append(f"TF-IDF of word 1-2-grams fitted on the training texts: "
                      f"{len(self.tfidf.vocabulary_)} features (the linear family's)")
    return self

  def bow(self, texts: list[str]) -> np.ndarray:
    ids = self.ids(texts)
    out = np.zeros((len(ids), self.vocab_size), np.float32)
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    np.add.at(out, (rows, ids.ravel()), 1.0)
    out[:, 0] = 0.0
    return np.log1p(out)


class ImagePrep:
  """Images -> float32 [N, H, W, C] in [0, 1] (grey images get C=1), then per-channel standardisation."""

  def fit(self, X) -> "ImagePrep":
    x = self._float(X)
    self.mean = x.mean((0, 1, 2))
    self.std = x.std((0, 1, 2)) + 1e-6
    self.notes = [f"images {x.shape[1:]} scaled to [0, 1] and standardised per channel"]
    return self

  @staticmethod
  def _float(X) -> np.ndarray:
    x = np.asarray(X, np.float32)
    if x.ndim == 3:
      x = x[..., None]
    return x / 255.0 if x.max() > 1.0 else x

  def transform(self, X) -> np.ndarray:
    return ((self._float(X) - self.mean) / self.std).astype(np.float32)


@dataclasses.dataclass
class Prepared:
  """Model-ready arrays: `views[kind]` is (train, val, test) for kind 'flat' | 'image' | 'ids'.

  classes: [C] original label values; class index i (the targets in `y`) is classes[i].
  """
  name: str
  modality: str
  classes: np.ndarray
  views: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
  y: tuple[np.ndarray, np.ndarray, np.ndarray]
  notes: list[str]
  prep: Any
  meta: dict[str, float]

  @property
  def num_classes(self) -> int:
    return len(self.classes)


def prepare(ds: Dataset, seed: int, val_frac: float = 0.2, test_frac: float = 0.2,
            seq_len: int = 64, vocab_size: int = 2000, linear: bool = True) -> Prepared:
  """Checks, splits (stratified, by `seed`) and preprocesses `ds`, fitting on train only.

  views: 'flat' (every modality), 'image', 'ids' (texts: BPE token ids) and 'linear' (texts:
  sparse TF-IDF n-grams when `linear`; otherwise the flat view)."""
  notes = check(ds)
  tr, va, te = split(ds, seed, val_frac, test_frac)
  Xte, yte = (ds.test if ds.test is not None else (take(ds.X, te), np.asarray(ds.y)[te]))
  Xtr, Xva = take(ds.X, tr), take(ds.X, va)
  ys = [np.asarray(ds.y)[tr], np.asarray(ds.y)[va], np.asarray(yte)]
  classes = np.unique(ys[0].astype(str))
  enc = {c: i for i, c in enumerate(classes)}
  unseen = sum(int(str(v) not in enc) for v in ys[2])
  if unseen:
    notes.append(f"{unseen} test rows have a label unseen in training: dropped")
    keep = np.array([str(v) in enc for v in ys[2]])
    Xte, ys[2] = take(Xte, np.flatnonzero(keep)), ys[2][keep]
  first = {}
  for v in ys[0]:
    first.setdefault(str(v), v)
  labels = np.array([first[c] for c in classes], dtype=np.asarray(ds.y).dtype)  # original values
  ys = tuple(np.array([enc[str(v)] for v in yy], np.int32) for yy in ys)
  views = {}
  if ds.modality == "table":
    prep = TablePrep().fit(Xtr, ds.columns)
    views["flat"] = tuple(prep.transform(x) for x in (Xtr, Xva, Xte))
  elif ds.modality == "image":
    prep = ImagePrep().fit(Xtr)
    views["image"] = tuple(prep.transform(x) for x in (Xtr, Xva, Xte))
    views["flat"] = tuple(v.reshape(len(v), -1) for v in views["image"])
  else:
    prep = TextPrep(vocab_size, seq_len).fit(list(Xtr))
    views["ids"] = tuple(prep.ids(list(x)) for x in (Xtr, Xva, Xte))
    views["flat"] = tuple(prep.bow(list(x)) for x in (Xtr, Xva, Xte))
    if linear:
      prep.fit_tfidf(list(Xtr))
      views["linear"] = tuple(prep.features(list(x), "linear") for x in (Xtr, Xva, Xte))
  if "linear" not in views:
    views["linear"] = views["flat"]
  notes += prep.notes
  notes.append(f"stratified split (seed {seed}): {len(ys[0])} train, {len(ys[1])} val, "
               f"{len(ys[2])} test" + (" (predefined test split)" if ds.test is not None else ""))
  meta = meta_features(ds, ys[0], views["flat"][0], len(classes))
  return Prepared(ds.name, ds.modality, labels, views, ys, notes, prep, meta)


def meta_features(ds: Dataset, y: np.ndarray, flat: np.ndarray, k: int) -> dict[str, float]:
  """Dataset descriptors for warm-starting later searches (all floats, same keys always)."""
  counts = np.bincount(y, minlength=k).astype(np.float64)
  p = counts / counts.sum()
  raw = ds.X
  missing = 0.0
  cat = 0.0
  if ds.modality == "table":
    cols = _columns(raw)
    gaps = [np.isnan(c).sum() if c.dtype.kind == "f" else 0 if c.dtype.kind in "biu" else
            sum(v is None or (isinstance(v, float) and math.isnan(v)) or
                (isinstance(v, str) and v.strip() in ("", "?", "NA")) for v in c) for c in cols]
    missing = float(np.sum(gaps) / (len(cols) * len(cols[0])))
    cat = float(np.mean([isinstance(c[0], str) for c in cols]))
  return {
      "n_rows": float(len(ds.y)), "log_rows": math.log10(len(ds.y)),
      "n_features": float(flat.shape[1]), "log_features": math.log10(max(flat.shape[1], 1)),
      "n_classes": float(k), "class_entropy": float(-(p[p > 0] * np.log(p[p > 0])).sum() / math.log(k)),
      "minority_frac": float(p.min()), "missing_frac": missing, "categorical_frac": cat,
      "is_table": float(ds.modality == "table"), "is_image": float(ds.modality == "image"),
      "is_text": float(ds.modality == "text"),
      "mean_abs_corr": float(np.nanmean(np.abs(_target_corr(flat, y)))) if flat.shape[1] else 0.0,
  }


def _target_corr(X: np.ndarray, y: np.ndarray) -> np.ndarray:
  X = X[:, :256]
  xs = (X - X.mean(0)) / (X.std(0) + 1e-9)
  ys = (y - y.mean()) / (y.std() + 1e-9)
  return (xs * ys[:, None]).mean(0)
