"""`uci_digits`: the real UCI handwritten digits shipped with scikit-learn, as a cross-domain test set.

`sklearn.datasets.load_digits()` holds 1,797 8x8 images (values 0..16, 16 =
most ink) of 10 digits written by 43 people. Each is resized to 20x20
(bicubic) and padded to 28x28 like MNIST, so the ink fills about the same box
as a `glyphs` letter; ink is bright on a dark background, as in `glyphs`.
Every class is truncated to the smallest class count (174) so the array is
rectangular. Only a 'test' split: it is meant for meta-testing a learner
trained on another domain.
"""

from __future__ import annotations

import numpy as np

from metajax.data.base import ClassImages

SIZE = 28
_INNER = 20  # the digit's box inside the 28x28 image, as in MNIST


def _resize(img8: np.ndarray) -> np.ndarray:
  """[8, 8] in 0..16 -> [28, 28] uint8 in 0..255."""
  from PIL import Image
  im = Image.fromarray(img8.astype(np.float32) * (255.0 / 16.0), mode="F")
  inner = np.asarray(im.resize((_INNER, _INNER), Image.BICUBIC))
  pad = (SIZE - _INNER) // 2
  return np.pad(np.clip(np.rint(inner), 0, 255).astype(np.uint8), pad)


def load(data_dir: str = "") -> ClassImages:
  """ClassImages 'uci_digits' with split 'test': uint8 [10, 174, 28, 28, 1].

  `data_dir` is unused (the data ship with scikit-learn); examples of each
  class keep scikit-learn's order.
  """
  del data_dir
  from sklearn.datasets import load_digits
  digits = load_digits()
  images, labels = digits.images, digits.target
  per_class = min(int((labels == k).sum()) for k in range(10))
  out = np.zeros((10, per_class, SIZE, SIZE, 1), np.uint8)
  for k in range(10):
    for j, i in enumerate(np.flatnonzero(labels == k)[:per_class]):
      out[k, j, :, :, 0] = _resize(images[i])
  return ClassImages("uci_digits", {"test": out},
                     {"test": [f"digit {k}" for k in range(10)]},
                     {"test": ["UCI digits"] * 10})
