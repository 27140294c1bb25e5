"""`glyph_letters`: letter recognition with hundreds of renderings per class.

`glyphs` has 20 examples per class (a few-shot set), so a classification task drawn from it
holds tens of rows, far from the thousand-row image sets a tuned learning rate is transferred
to. This set renders `CLASSES` letters of glyphs' meta-train split `EXAMPLES` times each with
glyphs' renderer (a covering font, random affine and stroke width), as 28x28 uint8 rows
labelled by letter. The letters are spread evenly over that split's code-point order (several
writing systems); no digit is among them, so digit sets stay disjoint from it. Rendering
takes a few seconds (choosing the letters most of it) and is a function of `seed` alone.
"""

from __future__ import annotations

import numpy as np

from metajax.data import glyphs
from metajax.data.tabular import Dataset

CLASSES = 40
EXAMPLES = 300


def letters(classes: int = CLASSES) -> list[dict]:
  """`classes` letters of glyphs' meta-train split, evenly spaced in code-point order."""
  train = sorted((c for c in glyphs.choose_classes() if c["split"] == "train"),
                 key=lambda c: c["cp"])
  idx = np.linspace(0, len(train) - 1, classes).round().astype(int)
  return [train[i] for i in idx]


def build(seed: int = 0, classes: int = CLASSES, examples: int = EXAMPLES) -> Dataset:
  """The dataset: X uint8 [classes * examples, 28, 28] (class-major), y the letter names."""
  chosen = letters(classes)
  x = np.zeros((len(chosen), examples, glyphs.SIZE, glyphs.SIZE), np.uint8)
  for i, c in enumerate(chosen):
    rng = np.random.default_rng([seed, c["cp"], 1])
    fonts = c["fonts"]
    for j in range(examples):
      x[i, j] = glyphs.render_example(chr(c["cp"]), fonts[int(rng.integers(len(fonts)))], rng)
  names = np.array([glyphs.class_name(c["cp"]) for c in chosen])
  return Dataset("glyph_letters", "image", x.reshape(-1, glyphs.SIZE, glyphs.SIZE),
                 np.repeat(names, examples))


def load(data_dir: str = "") -> Dataset:
  del data_dir  # rendered from the fonts matplotlib ships; nothing is read
  return build()
