"""Shared fixtures: tiny class-indexed image datasets registered as 'tiny_images' and
'tiny_noisy_images', and few-shot configs on them."""

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

from metajax import data
from metajax.data.base import ClassImages

# One persistent compilation cache per test process (and the processes it starts), never the
# user's: every test compiles against it from the first one on, whatever order they run in.
if not os.environ.get("METAJAX_COMPILE_CACHE"):
  _cache = tempfile.mkdtemp(prefix="metajax_test_jax_cache_")
  os.environ["METAJAX_COMPILE_CACHE"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
from metajax import compile_cache  # noqa: E402
compile_cache.use(compile_cache.DEFAULT_DIR)


def tiny_images(data_dir: str = "", noise: int = 40, name: str = "tiny_images") -> ClassImages:
  """12/6/8 classes x 6 examples of 28x28x1 uint8: class c is a bright square at a
  c-dependent spot on uniform noise in [0, noise)."""
  rng = np.random.RandomState(0)

  def split(n, offset):
    x = rng.randint(0, noise, size=(n, 6, 28, 28, 1)).astype(np.uint8)
    for c in range(n):
      r, q = divmod(c + offset, 5)
      x[c, :, 4 * r:4 * r + 6, 4 * q:4 * q + 6] = 250
    return x

  return ClassImages(name, {"train": split(12, 0), "val": split(6, 12), "test": split(8, 18)})


def tiny_noisy_images(data_dir: str = "") -> ClassImages:
  """tiny_images on noise up to 200: an untrained conv4 is near chance (ProtoNet ~40%,
  MAML ~32% 5-way 1-shot), so a run that beats chance clearly has learned."""
  return tiny_images(data_dir, noise=200, name="tiny_noisy_images")


for _name, _load in (("tiny_images", tiny_images), ("tiny_noisy_images", tiny_noisy_images)):
  if _name not in data.DATASETS:
    data.DATASETS.register(_name, _load)


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
