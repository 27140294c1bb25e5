"""Shared fixtures: a tiny class-indexed image dataset registered as 'tiny_images'."""

import numpy as np
import pytest

from metajax import data
from metajax.data.base import ClassImages


def tiny_images(data_dir: str = "") -> ClassImages:
  """12/6/8 classes x 6 examples of 28x28x1 uint8: class c is a bright square at a c-dependent spot."""
  rng = np.random.RandomState(0)

  def split(n, offset):
    x = rng.randint(0, 40, size=(n, 6, 28, 28, 1)).astype(np.uint8)
    for c in range(n):
      r, q = divmod(c + offset, 5)
      x[c, :, 4 * r:4 * r + 6, 4 * q:4 * q + 6] = 250
    return x

  return ClassImages("tiny_images", {"train": split(12, 0), "val": split(6, 12), "test": split(8, 18)})


if "tiny_images" not in data.DATASETS:
  data.DATASETS.register("tiny_images", tiny_images)


def fewshot_config(path: str = "configs/protonet_glyphs.py", mode: str = "tiny"):
  """`get_config(mode)` of a config file, on 'tiny_images' for training and meta-test."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(path.rsplit("/", 1)[-1][:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(mode)
  c.data.name = "tiny_images"
  c.eval.datasets = ("tiny_images",)
  return c


@pytest.fixture
def tiny_fewshot_config():
  return fewshot_config()
