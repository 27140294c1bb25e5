"""Datasets by name. Every loader is `load(data_dir: str = '') -> dataset`.

Image datasets return `ClassImages`; `tfds:NAME` loads any tfds image
classification dataset by name from `data_dir`.
"""

from __future__ import annotations

from metajax.data.base import ClassImages, default_data_dir
from metajax.errors import ConfigError
from metajax.registry import Registry

DATASETS = Registry("dataset")
DATASETS.register("glyphs", "metajax.data.glyphs:load")
DATASETS.register("glyph_letters", "metajax.data.glyph_letters:load")
DATASETS.register("uci_digits", "metajax.data.uci_digits:load")
DATASETS.register("omniglot", "metajax.data.tfds_images:load_omniglot")
DATASETS.register("sinusoid", "metajax.data.sinusoid:load")
DATASETS.register("sort_of_clevr", "metajax.data.sort_of_clevr:load")
# AutoML classification sets (tables, texts, images): metajax.data.tabular.Dataset
DATASETS.register("breast_cancer", "metajax.data.tabular:breast_cancer")
DATASETS.register("wine", "metajax.data.tabular:wine")
DATASETS.register("iris", "metajax.data.tabular:iris")
DATASETS.register("digits", "metajax.data.tabular:digits")
DATASETS.register("adult", "metajax.data.tabular:adult")
DATASETS.register("titanic", "metajax.data.tabular:titanic")
DATASETS.register("fine_food", "metajax.data.tabular:fine_food")
DATASETS.register("trump_tweets", "metajax.data.tabular:trump_tweets")
DATASETS.register("mnist_5k", "metajax.data.tabular:mnist_5k")


def check_name(name: str, key: str = "data.name") -> None:
  """ConfigError (as config `key`) listing every dataset and the `tfds:NAME` form, unless
  `name` is one of them."""
  if name in DATASETS or (name.startswith("tfds:") and len(name) > len("tfds:")):
    return
  raise ConfigError(key, name, "no dataset of that name",
                    ", ".join(DATASETS.names()) + ", or tfds:NAME (a tfds dataset prepared "
                    "in data.data_dir, e.g. tfds:omniglot)")


def load(name: str, data_dir: str = ""):
  """The dataset registered as `name` (or `tfds:NAME`), loaded from `data_dir`."""
  check_name(name)
  if name.startswith("tfds:"):
    from metajax.data import tfds_images
    return tfds_images.load(name.removeprefix("tfds:"), data_dir)
  return DATASETS.get(name)(data_dir)


__all__ = ["ClassImages", "DATASETS", "check_name", "default_data_dir", "load"]
