"""tensorflow-datasets image classification sets as class-indexed arrays (no TensorFlow needed).

Reading goes through `tfds.data_source` (random access to array_record files),
which works without TensorFlow, so a dataset must have been prepared in the
array_record format in `data_dir` beforehand (here there is no network):

  # on a machine with internet, then copy DIR/<name>/ to this data_dir:
  tfds build omniglot --data_dir=DIR --file_format=array_record

`data_dir` is metajax's data dir (`default_data_dir`: the argument, else
$METAJAX_DATA_DIR, else ~/.cache/metajax), holding `<name>/<version>/`.
Every example of the requested splits is read into memory: meant for small
datasets (Omniglot, MNIST, CIFAR, ...), not ImageNet. `read_examples(..., per_host=True)`
reads only this process's share of a split (`tfds.split_for_jax_process`); the class-indexed
loaders read whole splits, since few-shot episodes need every class on every host.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from metajax.data.base import ClassImages, default_data_dir
from metajax.errors import ConfigError

log = logging.getLogger(__name__)

OMNIGLOT_VAL_ALPHABETS = 5


def _prepare_hint(name: str, data_dir: str) -> str:
  return (f"a data_dir holding {name}/<version>/ in array_record format; prepare it on a machine "
          f"with internet with `tfds build {name} --data_dir=DIR --file_format=array_record` "
          f"and copy DIR/{name} to {data_dir}")


def _builder(name: str, data_dir: str):
  import tensorflow_datasets as tfds
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError("dataset", f"tfds:{name}", "tensorflow-datasets has no dataset of that name",
                      "a name from `tfds.list_builders()`, e.g. 'tfds:mnist'") from e


def _source(name: str, split: str, data_dir: str, per_host=False):
  """tfds.data_source for one split; never downloads. ConfigError if it is not prepared.

  per_host: True reads this process's share of the split, (index, count) that share of
  `count` processes (`tfds.split_for_jax_process`, the arithmetic of
  `parallel.process_shard`); ConfigError when a share would be empty.
  """
  import tensorflow_datasets as tfds
  if per_host:
    from metajax.parallel import process_shard
    index, count = (None, None) if per_host is True else per_host
    whole = len(_source(name, split, data_dir))  # lazy: opens the files, reads no example
    try:
      shard = process_shard(whole, index, count)
    except ConfigError as e:
      raise ConfigError("data.per_host_shard", True, f"tfds:{name} split {split!r}: {e.why}",
                        "False (every process reads the whole split)") from e
    log.info("tfds:%s: this process reads examples [%d, %d) of %d in %r", name, shard.start,
             shard.stop, whole, split)
    split = tfds.split_for_jax_process(split, process_index=index, process_count=count)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises assorted errors for missing / TFRecord-only data
    if not os.path.isdir(os.path.join(data_dir, name)):
      why = f"tfds dataset {name!r} is not there (no directory {os.path.join(data_dir, name)})"
    else:
      why = (f"tfds dataset {name!r} split {split!r} cannot be read from there "
             f"({type(e).__name__}: {str(e).splitlines()[0]})")
    raise ConfigError("data_dir", data_dir, why, _prepare_hint(name, data_dir)) from e


def _to_array(image: np.ndarray, size: int, grayscale: bool, invert: bool) -> np.ndarray:
  """[H, W, C] uint8 -> [size, size, C'] uint8 (area-averaged resize)."""
  from PIL import Image
  image = np.asarray(image, np.uint8)
  if grayscale and image.shape[-1] == 3:
    im = Image.fromarray(image).convert("L")
  else:
    im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  if im.size != (size, size):
    im = im.resize((size, size), Image.BOX if im.size[0] >= size else Image.BILINEAR)
  out = np.asarray(im, np.uint8)
  if invert:
    out = 255 - out
  return out[..., None] if out.ndim == 2 else out


def _read(name: str, splits, data_dir: str, image_size: int, grayscale: bool, invert: bool,
          image_key: str = "image", label_key: str = "label", extra_keys=(), per_host=False):
  """Every example of `splits` (this process's share with `per_host`, see `_source`):
  images [N, s, s, C] uint8, labels [N], {key: [N]} extras."""
  images, labels, extras = [], [], {k: [] for k in extra_keys}
  t0 = time.time()
  for split in splits:
    src = _source(name, split, data_dir, per_host)
    for i in range(len(src)):
      ex = src[i]
      images.append(_to_array(ex[image_key], image_size, grayscale, invert))
      labels.append(int(ex[label_key]))
      for k in extra_keys:
        extras[k].append(int(ex[k]))
    log.info("tfds:%s: read %d examples of %r (%.1fs)", name, len(src), split, time.time() - t0)
  if not images:
    raise ConfigError("data_dir", data_dir, f"tfds dataset {name!r} has no examples in {splits}",
                      _prepare_hint(name, data_dir))
  return np.stack(images), np.asarray(labels), {k: np.asarray(v) for k, v in extras.items()}


def read_examples(name: str, split: str = "train", data_dir: str = "", image_size: int = 28,
                  *, grayscale: bool = False, per_host=False):
  """(images [N, s, s, C] uint8, labels [N]) of one tfds split, in the prepared order.

  per_host=True reads only this process's contiguous share of the split (the per-host input
  of a data-parallel trainer: the shares of all processes are disjoint and cover the split);
  (index, count) reads that share of `count` processes; False the whole split.
  """
  data_dir = default_data_dir(data_dir)
  builder = _builder(name, data_dir)
  image_key, label_key = builder.info.supervised_keys or ("image", "label")
  images, labels, _ = _read(name, [split], data_dir, image_size, grayscale, False, image_key,
                            label_key, per_host=per_host)
  return images, labels


def _by_class(images: np.ndarray, labels: np.ndarray, classes) -> np.ndarray:
  """[len(classes), min count, ...]: each class's examples in reading order, truncated."""
  idx = [np.flatnonzero(labels == c) for c in classes]
  n = min(len(i) for i in idx)
  return np.stack([images[i[:n]] for i in idx])


def load(name: str, data_dir: str = "", image_size: int = 28, *,
         tfds_splits=("train", "test"), grayscale: bool = False,
         class_fractions=None) -> ClassImages:
  """Any tfds image classification dataset, grouped by label.

  The tfds splits `tfds_splits` (those the prepared dataset has) are pooled
  and grouped by label: a class keeps its examples in reading order, truncated
  to the smallest per-class count so the array is rectangular (a class with
  few examples shrinks every class; check `describe()`). Images are resized to
  `image_size` (area averaging when shrinking); `grayscale` converts RGB to one
  channel. Every host reads the whole splits: episodes draw from every class.

  Classes of metajax splits must be disjoint, so by default every class goes
  to a single 'test' split (a cross-domain meta-test set, like `uci_digits`).
  `class_fractions=(train, val, test)` instead deals the classes (in a fixed
  shuffled order, seed 0) into 'train'/'val'/'test' by those fractions.

  Returns ClassImages 'tfds:<name>', arrays uint8 [classes, n, size, size, C];
  class_names are the tfds label names, groups the dataset name.
  """
  data_dir = default_data_dir(data_dir)
  builder = _builder(name, data_dir)
  available = list(builder.info.splits)
  splits = [s for s in tfds_splits if not available or s in available]
  feature = builder.info.features
  image_key, label_key = builder.info.supervised_keys or ("image", "label")
  images, labels, _ = _read(name, splits, data_dir, image_size, grayscale, False,
                            image_key, label_key)
  present = np.unique(labels)
  try:
    label_names = feature[label_key].names
  except (AttributeError, KeyError):
    label_names = None
  names = {int(c): (label_names[c] if label_names else str(c)) for c in present}
  if class_fractions is None:
    parts = {"test": present}
  else:
    if len(class_fractions) != 3 or min(class_fractions) < 0 or sum(class_fractions) <= 0:
      raise ConfigError("class_fractions", class_fractions, "needs three non-negative fractions",
                        "(train, val, test), e.g. (0.6, 0.15, 0.25)")
    order = np.random.default_rng(0).permutation(present)
    cuts = np.round(np.cumsum(class_fractions) / sum(class_fractions) * len(order)).astype(int)
    parts = {k: np.sort(p) for k, p in zip(("train", "val", "test"), np.split(order, cuts[:2]))
             if len(p)}
  ds = ClassImages(f"tfds:{name}", {k: _by_class(images, labels, p) for k, p in parts.items()},
                   {k: [names[int(c)] for c in p] for k, p in parts.items()},
                   {k: [name] * len(p) for k, p in parts.items()})
  log.info("tfds:%s: %s", name, ds.describe())
  return ds


def load_omniglot(data_dir: str = "", *, image_size: int = 28,
                  val_alphabets: int = OMNIGLOT_VAL_ALPHABETS) -> ClassImages:
  """Omniglot (Lake et al.) from tfds: background -> 'train'/'val', evaluation -> 'test'.

  Images (105x105x3, black ink on white) become grayscale `image_size` squares
  with ink bright on dark, like `glyphs`. Classes are characters (1,623, 20
  drawings each), grouped by alphabet. 'val' holds the last `val_alphabets`
  background alphabets in alphabetical order (5 of 30 by default: a held-out
  set of whole alphabets for early stopping; 0 for none), 'train' the rest;
  'test' is the 20 evaluation alphabets, as in Lake et al.'s split (not
  Vinyals et al.'s 1200/423 character split). Every host reads the whole splits: episodes
  draw from every class.

  Returns ClassImages 'omniglot', arrays uint8 [classes, 20, size, size, 1];
  class_names '<alphabet>/character<NN>', groups the alphabet.
  """
  name = "omniglot"
  data_dir = default_data_dir(data_dir)
  builder = _builder(name, data_dir)
  alphabet_names = builder.info.features["alphabet"].names
  splits, class_names, groups = {}, {}, {}
  for tfds_split, ours in (("train", "train"), ("test", "test")):
    images, labels, extra = _read(name, [tfds_split], data_dir, image_size, True, True,
                                  extra_keys=("alphabet", "alphabet_char_id"))
    classes = np.unique(labels)
    first = {int(c): int(np.flatnonzero(labels == c)[0]) for c in classes}
    alphabet = {int(c): alphabet_names[extra["alphabet"][first[c]]] for c in classes}
    parts = {ours: classes}
    if ours == "train" and val_alphabets > 0:
      held = set(sorted(set(alphabet.values()))[-val_alphabets:])
      parts = {"train": np.asarray([c for c in classes if alphabet[int(c)] not in held]),
               "val": np.asarray([c for c in classes if alphabet[int(c)] in held])}
    for k, p in parts.items():
      if not len(p):
        continue
      splits[k] = _by_class(images, labels, p)
      groups[k] = [alphabet[int(c)] for c in p]
      class_names[k] = [f"{alphabet[int(c)]}/character{int(extra['alphabet_char_id'][first[int(c)]]):02d}"
                        for c in p]
  ds = ClassImages(name, {k: splits[k] for k in ("train", "val", "test") if k in splits},
                   class_names, groups)
  log.info("omniglot: %s", ds.describe())
  return ds
