"""Rendering one glyph: the fonts `glyphs` draws from and the per-example augmentation.

`render_example(ch, font, rng)` gives one 28x28 uint8 image (ink 255 on 0) of a letter in
a font with a random affine (rotation, shear, scale, translation) and stroke width; the
class-choosing and caching logic is in `metajax.data.glyphs`.
"""

from __future__ import annotations

import math
import os

import numpy as np

SIZE = 28

# Font files of matplotlib's mpl-data/fonts/ttf, in order of preference for
# the canonical rendering. (file, ascii_only): the Computer Modern files use
# TeX encodings, so only their ASCII letters are trusted. Left out:
# LastResortHE (a placeholder box for every code point), cmsy10/cmex10
# (symbols at letter positions), the STIX size/non-Unicode variants.
FONTS = (
    ("DejaVuSans.ttf", False), ("DejaVuSerif.ttf", False), ("STIXGeneral.ttf", False),
    ("DejaVuSansMono.ttf", False), ("DejaVuSans-Bold.ttf", False),
    ("DejaVuSans-Oblique.ttf", False), ("DejaVuSans-BoldOblique.ttf", False),
    ("DejaVuSerif-Bold.ttf", False), ("DejaVuSerif-Italic.ttf", False),
    ("DejaVuSerif-BoldItalic.ttf", False), ("DejaVuSansMono-Bold.ttf", False),
    ("DejaVuSansMono-Oblique.ttf", False), ("DejaVuSansMono-BoldOblique.ttf", False),
    ("STIXGeneralBol.ttf", False), ("STIXGeneralItalic.ttf", False),
    ("STIXGeneralBolIta.ttf", False),
    ("cmr10.ttf", True), ("cmb10.ttf", True), ("cmti10.ttf", True), ("cmss10.ttf", True),
    ("cmtt10.ttf", True), ("cmmi10.ttf", True),
)

# Letters that are another letter in a different typeface or size (math bold A,
# double-struck C, fullwidth A): the examples already vary the typeface.
_VARIANTS = ("<font>", "<wide>", "<narrow>", "<small>", "<super>", "<sub>", "<circle>",
             "<square>")

_PT = 64            # font size of the high-resolution rendering
_SS = 3             # supersampling of the affine warp
_BOX = 20.0         # the glyph's longer side, in output pixels, before random scale
_MIN_SIDE = 0.6 * _PT  # glyphs smaller than this are not blown up to the box (fat strokes)


def font_dir() -> str:
  """matplotlib's bundled TrueType directory."""
  import matplotlib
  return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------

_font_cache: dict[str, object] = {}


def _font(name: str):
  from PIL import ImageFont
  if name not in _font_cache:
    # BASIC layout: one glyph straight from the cmap, the same with or without raqm.
    _font_cache[name] = ImageFont.truetype(os.path.join(font_dir(), name), _PT,
                                           layout_engine=ImageFont.Layout.BASIC)
  return _font_cache[name]


def _raw(ch: str, font: str):
  """The letter at `_PT` points, cropped to its ink (PIL 'L' image), or None if blank."""
  from PIL import Image, ImageDraw
  f = _font(font)
  l, t, r, b = f.getbbox(ch)
  if r <= l or b <= t:
    return None
  im = Image.new("L", (r - l + 8, b - t + 8))
  ImageDraw.Draw(im).text((4 - l, 4 - t), ch, font=f, fill=255)
  box = im.getbbox()
  if box is None or max(box[2] - box[0], box[3] - box[1]) < 6:
    return None
  return im.crop((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4))


def _warp(im, rotate=0.0, shear=0.0, scale=(1.0, 1.0), shift=(0.0, 0.0),
          size: int = SIZE, ss: int = _SS) -> np.ndarray:
  """Fits `im` (ink centred in a 4 px margin) to the box, applies the affine, -> [size, size] uint8.

  The longer side of the ink becomes `_BOX` px, except that glyphs smaller
  than `_MIN_SIDE` at `_PT` points are magnified no more than that size would
  be, so small letters keep strokes as thin as large ones.

  `shift` is in pixels of the 28x28 image; `size` > 28 renders the same image finer;
  the warp runs at `ss` times the output resolution, then is area-averaged down.
  """
  from PIL import Image
  w, h = im.size
  zoom = size / SIZE
  fit = _BOX * zoom * ss / max(w - 8, h - 8, _MIN_SIDE)
  c, s = math.cos(rotate), math.sin(rotate)
  # forward map: centre the glyph at the origin, scale, shear, rotate, move to the canvas centre.
  a = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(
      [fit * scale[0], fit * scale[1]])
  centre_out = (np.array([size / 2 + shift[0] * zoom, size / 2 + shift[1] * zoom])) * ss
  inv = np.linalg.inv(a)
  offset = np.array([w / 2, h / 2]) - inv @ centre_out
  coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
  big = im.transform((size * ss, size * ss), Image.AFFINE, coeffs, resample=Image.BILINEAR)
  return np.asarray(big.resize((size, size), Image.BOX))


def _stroke(im, k: int):
  """Stroke variation at high resolution: k < 0 erodes, k > 0 dilates (k px per side)."""
  from PIL import ImageFilter
  if k == 0:
    return im
  f = ImageFilter.MaxFilter if k > 0 else ImageFilter.MinFilter
  return im.filter(f(2 * abs(k) + 1))


def render_example(ch: str, font: str, rng: np.random.Generator) -> np.ndarray:
  """One augmented 28x28 uint8 rendering of `ch` in `font` (ink 255 on 0)."""
  im = _raw(ch, font)
  bold = "Bol" in font or font == "cmb10.ttf"
  stroke = int(rng.choice([-2, -1, 0]) if bold else rng.choice([-1, 0, 0, 1, 2]))
  rotate = math.radians(rng.uniform(-12.0, 12.0))
  shear = rng.uniform(-0.2, 0.2)
  s, aspect = rng.uniform(0.8, 1.1), math.exp(rng.uniform(-0.1, 0.1))
  shift = rng.uniform(-2.0, 2.0, size=2)
  warp = lambda x: _warp(x, rotate, shear, (s * aspect, s / aspect), tuple(shift))
  out = warp(_stroke(im, stroke))
  if stroke < 0:  # erosion must thin strokes, not erase hairlines (serif italics)
    full = warp(im)
    if out.sum(dtype=np.int64) < 0.6 * full.sum(dtype=np.int64):
      out = full
  return out
