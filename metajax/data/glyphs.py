"""`glyphs`: an Omniglot-like few-shot dataset rendered from fonts that ship with matplotlib.

Each class is one Unicode letter; each of its 20 examples is a 28x28 uint8
image (ink bright on dark) drawn in one of the fonts that cover the letter,
with a small random affine (rotation, shear, scale, translation) and a random
stroke width. Classes are grouped into alphabets (Unicode blocks), and the
meta-train / meta-val / meta-test splits are made of whole writing systems,
like Omniglot's background / evaluation alphabets.

How the class set is chosen (a fixed function of the fonts; `seed` only
changes the renderings):
  1. Candidates: code points of category Lu/Ll/Lt/Lo (modifier letters Lm are
     small raised marks) in the cmap of a font of `FONTS` (not .notdef) whose
     rendering has ink. Letters that are a typeface variant of another letter
     (math bold 'A', double-struck 'C', fullwidth 'A': decomposition tag
     <font>, <wide>, ...) are left out, since the examples already vary the
     typeface.
  2. Canonical rendering: the letter in its first covering font, fitted to the
     box as in the examples, as a 56x56 ink mask, plus a copy stretched to fill
     the box. Greedily in code-point order, a letter is dropped when it is a
     near-copy of one already kept (`near_copies`): in the same writing
     system, less than `DUPLICATE_DISTANCE` of either's ink lies more than
     1 px from the other's ('l' / 'I', Arabic isolated presentation forms of
     base letters, accents too small to tell apart at 28x28 like 'Ó' / 'Ò');
     across writing systems, the stretched copies differ by less than
     `CROSS_SCRIPT_DISTANCE` (Latin 'o' / Cyrillic 'о' / Greek 'ο', Latin 'B' /
     Old Italic '𐌁' which is narrower, 'K' / Cyrillic 'Ꝁ'). It runs over all
     splits at once, so no meta-test class is a near-copy of a meta-train
     class.
  3. Alphabet = Unicode block, split by writing system where a block mixes
     several (e.g. 'Alphabetic Presentation Forms (Hebrew)'). The writing
     system of a letter is the script of its compatibility decomposition.
     Alphabets with fewer than `MIN_PER_ALPHABET` letters are dropped, larger
     ones subsampled to `MAX_PER_ALPHABET` (so Latin Extended cannot dominate).
  4. Splits: whole writing systems (all Latin blocks together, all Arabic
     blocks together, ...), largest first, each to the split furthest below
     its share of `SPLIT_FRACTIONS` (60/15/25 of classes).

The dataset is generated once into `default_data_dir(data_dir)/glyphs-v1/`
(an .npz of the split arrays plus a JSON with its sha256, the class names and
groups); a cache whose checksum, size, version or parameters do not match is
rebuilt, never used. Generation takes about 15 s of one core.

Example:
  >>> ds = load('/tmp/metajax-data')            # doctest: +SKIP
  >>> ds.splits['train'].shape                   # doctest: +SKIP
  (880, 20, 28, 28, 1)
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import time
import unicodedata

import numpy as np

from metajax.data.base import ClassImages, default_data_dir
from metajax.data.glyph_render import (_MIN_SIDE, _PT, _VARIANTS, FONTS, _raw, _warp, font_dir,
                                       render_example)
from metajax.errors import ConfigError
from metajax.runlog import atomic_write, sha256_file

log = logging.getLogger(__name__)

VERSION = 1
EXAMPLES_PER_CLASS = 20
SIZE = 28
SPLIT_FRACTIONS = {"train": 0.60, "val": 0.15, "test": 0.25}
MIN_PER_ALPHABET = 10
MAX_PER_ALPHABET = 80
DUPLICATE_DISTANCE = 0.02
CROSS_SCRIPT_DISTANCE = 0.08

# ----------------------------------------------------------------------------
# Choosing the classes
# ----------------------------------------------------------------------------

def _cmaps(fonts) -> dict[str, set[int]]:
  """font file -> code points of letters it maps to a real glyph."""
  from fontTools.ttLib import TTFont
  out = {}
  for name, ascii_only in fonts:
    path = os.path.join(font_dir(), name)
    if not os.path.exists(path):
      log.warning("glyphs: font %s not found in %s, skipped", name, font_dir())
      continue
    cmap = TTFont(path, lazy=True).getBestCmap() or {}
    out[name] = {cp for cp, g in cmap.items()
                 if g != ".notdef" and (not ascii_only or chr(cp).isascii())
                 and unicodedata.category(chr(cp)) in ("Lu", "Ll", "Lt", "Lo")
                 and not unicodedata.decomposition(chr(cp)).startswith(_VARIANTS)}
  return out


def _writing_system(ch: str) -> str:
  """Script of the letter's compatibility decomposition (math bold A -> Latin)."""
  from fontTools import unicodedata as fu
  script = fu.script(unicodedata.normalize("NFKD", ch)[0])
  if script in ("Zyyy", "Zinh", "Zzzz"):
    script = fu.script(ch)
  return fu.script_name(script)


def _canonical(ch: str, font: str) -> np.ndarray | None:
  """The undistorted letter as bool [2, 56, 56] ink masks, or None if blank or a speck.

  [0]: fitted like the examples (aspect kept); [1]: stretched to fill the box
  in both directions (at most 3x), which makes a narrow 'B' match a wide one.
  """
  im = _raw(ch, font)
  if im is None or max(im.size) - 8 < 0.3 * _PT:  # dot-like letters are not characters to learn
    return None
  w, h = im.size[0] - 8, im.size[1] - 8
  side = max(w, h, _MIN_SIDE)
  fill = (min(side / w, 3.0), min(side / h, 3.0))
  return np.stack([_warp(im, size=2 * SIZE, ss=1), _warp(im, scale=fill, size=2 * SIZE, ss=1)]) >= 128


def _distance(masks: np.ndarray) -> np.ndarray:
  """[n, n]: the larger fraction of either mask's ink not within 1 px of the other's ink.

  0 for identical shapes; at 56x56, 'Ó' vs 'Ò' is about 0.01, 'b' vs 'h' 0.1.
  """
  a = masks.astype(np.float32)
  pad = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
  h, w = masks.shape[1:]
  grown = np.zeros_like(masks)
  for dy in range(3):
    for dx in range(3):
      grown |= pad[:, dy:dy + h, dx:dx + w]
  a, grown = a.reshape(len(a), -1), grown.reshape(len(a), -1).astype(np.float32)
  miss = 1.0 - (a @ grown.T) / np.maximum(a.sum(1, keepdims=True), 1.0)
  return np.maximum(miss, miss.T)


def near_copies(masks: np.ndarray, systems) -> np.ndarray:
  """bool [n, n]: letter i is a near-copy of letter j (masks from `_canonical`).

  Within a writing system: the fitted shapes differ by < `DUPLICATE_DISTANCE`
  (same shape, or accents too small to see). Across writing systems, looser:
  the stretched shapes differ by < `CROSS_SCRIPT_DISTANCE` (homoglyphs such as
  Latin 'B' and Old Italic '𐌁', 'K' and Cyrillic 'Ꝁ').
  """
  systems = np.asarray(systems)
  same = systems[:, None] == systems[None, :]
  return np.where(same, _distance(masks[:, 0]) < DUPLICATE_DISTANCE,
                  _distance(masks[:, 1]) < CROSS_SCRIPT_DISTANCE)


def _dedupe(near: np.ndarray) -> np.ndarray:
  """Greedy in index order: keeps i unless it is a near-copy of an earlier kept one."""
  dropped = np.zeros(len(near), bool)
  kept = []
  for i in range(len(near)):
    if not dropped[i]:
      kept.append(i)
      dropped |= near[i]
  return np.asarray(kept, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def letter_pool():
  """The letters left after steps 1-2 (cached per process).

  Returns (cps: tuple of code points, masks: bool [n, 2, 56, 56] canonical
  renderings, fonts: dict cp -> covering font files in `FONTS` order that
  render it).
  """
  t0 = time.time()
  cmaps = _cmaps(FONTS)
  order = [name for name, _ in FONTS if name in cmaps]
  candidates = sorted(set().union(*cmaps.values()))
  log.info("glyphs: %d fonts cover %d letters", len(order), len(candidates))
  cps, masks = [], []
  for cp in candidates:
    m = _canonical(chr(cp), next(f for f in order if cp in cmaps[f]))
    if m is not None:
      cps.append(cp)
      masks.append(m)
  masks = np.stack(masks)
  keep = _dedupe(near_copies(masks, [_writing_system(chr(cp)) for cp in cps]))
  log.info("glyphs: %d letters render ink, %d left after removing near-copies (%.1fs)",
           len(masks), len(keep), time.time() - t0)
  cps = tuple(cps[i] for i in keep)
  fonts = {cp: [f for f in order if cp in cmaps[f] and _raw(chr(cp), f) is not None]
           for cp in cps}
  return cps, masks[keep], fonts


def choose_classes(max_per_alphabet: int = MAX_PER_ALPHABET) -> list[dict]:
  """The letters, their alphabets, fonts and split. Deterministic (no seed).

  Returns a list of dicts {cp, alphabet, system, fonts, split}, ordered by
  split, alphabet, code point.
  """
  from fontTools import unicodedata as fu
  cps, _, fonts_of = letter_pool()

  # Alphabets: Unicode block, split by writing system where a block mixes several.
  by_block: dict[str, list[tuple[int, str]]] = {}
  for cp in cps:
    by_block.setdefault(fu.block(chr(cp)), []).append((cp, _writing_system(chr(cp))))
  alphabets: dict[str, tuple[str, list[int]]] = {}
  for block, items in by_block.items():
    systems = sorted({s for _, s in items})
    for system in systems:
      name = block if len(systems) == 1 else f"{block} ({system})"
      alphabets[name] = (system, [cp for cp, s in items if s == system])
  select = np.random.default_rng(VERSION)  # class choice is fixed per version, not per seed
  classes = []
  for name in sorted(alphabets):
    system, members = alphabets[name]
    if len(members) < MIN_PER_ALPHABET:
      continue
    if len(members) > max_per_alphabet:
      members = sorted(select.choice(members, size=max_per_alphabet, replace=False).tolist())
    for cp in members:
      classes.append(dict(cp=int(cp), alphabet=name, system=system, fonts=list(fonts_of[cp])))

  # Splits: whole writing systems, largest first, to the split furthest below its share.
  sizes: dict[str, int] = {}
  for c in classes:
    sizes[c["system"]] = sizes.get(c["system"], 0) + 1
  total, filled, split_of = len(classes), dict.fromkeys(SPLIT_FRACTIONS, 0), {}
  for system in sorted(sizes, key=lambda s: (-sizes[s], s)):
    split = max(SPLIT_FRACTIONS, key=lambda k: SPLIT_FRACTIONS[k] * total - filled[k])
    split_of[system] = split
    filled[split] += sizes[system]
  rank = {s: i for i, s in enumerate(SPLIT_FRACTIONS)}
  for c in classes:
    c["split"] = split_of[c["system"]]
  classes.sort(key=lambda c: (rank[c["split"]], c["alphabet"], c["cp"]))
  log.info("glyphs: %d classes in %d alphabets; %s", len(classes),
           len({c["alphabet"] for c in classes}),
           ", ".join(f"{k}: {v}" for k, v in filled.items()))
  return classes


def class_name(cp: int) -> str:
  """'U+0416 CYRILLIC CAPITAL LETTER ZHE'."""
  return f"U+{cp:04X} {unicodedata.name(chr(cp), '?')}"


# ----------------------------------------------------------------------------
# Building and caching
# ----------------------------------------------------------------------------

def build(seed: int = 0, max_per_alphabet: int = MAX_PER_ALPHABET) -> ClassImages:
  """Renders the dataset (no cache). Identical output for identical arguments.

  Returns ClassImages with splits 'train', 'val', 'test' of uint8
  [classes, 20, 28, 28, 1]; `max_per_alphabet` < the default gives a small
  version for tests.
  """
  t0 = time.time()
  classes = choose_classes(max_per_alphabet)
  images = np.zeros((len(classes), EXAMPLES_PER_CLASS, SIZE, SIZE, 1), np.uint8)
  for i, c in enumerate(classes):
    rng = np.random.default_rng([seed, c["cp"]])
    fonts = c["fonts"]
    picks = np.concatenate([rng.permutation(len(fonts))
                            for _ in range(-(-EXAMPLES_PER_CLASS // len(fonts)))])
    for j in range(EXAMPLES_PER_CLASS):
      images[i, j, :, :, 0] = render_example(chr(c["cp"]), fonts[picks[j]], rng)
    if (i + 1) % 250 == 0 or i + 1 == len(classes):
      log.info("glyphs: rendered %d/%d classes (%.1fs)", i + 1, len(classes), time.time() - t0)
  splits, names, groups = {}, {}, {}
  for split in SPLIT_FRACTIONS:
    idx = [i for i, c in enumerate(classes) if c["split"] == split]
    splits[split] = images[idx]
    names[split] = [class_name(classes[i]["cp"]) for i in idx]
    groups[split] = [classes[i]["alphabet"] for i in idx]
  return ClassImages("glyphs", splits, names, groups)



def _params(seed: int, max_per_alphabet: int) -> dict:
  import matplotlib
  with open(__file__, "rb") as f:  # a cache made by other code is stale, even at the same VERSION
    code = hashlib.sha256(f.read()).hexdigest()[:16]
  return dict(version=VERSION, seed=seed, max_per_alphabet=max_per_alphabet,
              examples=EXAMPLES_PER_CLASS, size=SIZE, matplotlib=matplotlib.__version__,
              code=code)


def _read_cache(stem: str, params: dict) -> ClassImages | None:
  """The cached dataset, or None (with the reason logged) if missing, partial or corrupt."""
  try:
    with open(stem + ".json") as f:
      meta = json.load(f)
    if meta.get("params") != params:
      raise ValueError(f"built with {meta.get('params')}, want {params}")
    if os.path.getsize(stem + ".npz") != meta["bytes"]:
      raise ValueError("array file has the wrong size (truncated?)")
    if sha256_file(stem + ".npz") != meta["sha256"]:
      raise ValueError("array file checksum mismatch")
    with np.load(stem + ".npz", allow_pickle=False) as z:
      splits = {k: z[k] for k in meta["class_names"]}
    for k, a in splits.items():
      if a.shape != (len(meta["class_names"][k]), EXAMPLES_PER_CLASS, SIZE, SIZE, 1):
        raise ValueError(f"split {k} has shape {a.shape}")
    return ClassImages("glyphs", splits, meta["class_names"], meta["groups"])
  except FileNotFoundError:
    return None
  except Exception as e:  # any damage means rebuild, never use
    log.warning("glyphs: cache %s unusable (%s); rebuilding", stem, e)
    return None


def _write_cache(stem: str, ds: ClassImages, params: dict, seconds: float) -> None:
  buf = io.BytesIO()
  np.savez(buf, **ds.splits)
  data = buf.getvalue()
  atomic_write(stem + ".npz", data)
  meta = dict(params=params, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
              build_seconds=round(seconds, 2),
              counts={k: int(a.shape[0]) for k, a in ds.splits.items()},
              alphabets={k: sorted(set(g)) for k, g in ds.groups.items()},
              class_names=ds.class_names, groups=ds.groups)
  atomic_write(stem + ".json", json.dumps(meta, indent=1, ensure_ascii=False))


def cache_stem(data_dir: str = "", seed: int = 0,
               max_per_alphabet: int = MAX_PER_ALPHABET) -> str:
  """Path without extension of the cached .npz/.json for these arguments."""
  name = f"glyphs-seed{seed}"
  if max_per_alphabet != MAX_PER_ALPHABET:
    name += f"-max{max_per_alphabet}"
  return os.path.join(default_data_dir(data_dir), f"glyphs-v{VERSION}", name)


def load(data_dir: str = "", *, seed: int = 0,
         max_per_alphabet: int = MAX_PER_ALPHABET) -> ClassImages:
  """The glyphs dataset from the cache under `data_dir`, generated there first if needed.

  Returns ClassImages: splits 'train'/'val'/'test' uint8 [classes, 20, 28, 28, 1],
  class_names 'U+XXXX NAME', groups = alphabet of each class.
  """
  if max_per_alphabet < 1:
    raise ConfigError("max_per_alphabet", max_per_alphabet, "must be positive", ">= 1")
  stem = cache_stem(data_dir, seed, max_per_alphabet)
  params = _params(seed, max_per_alphabet)
  ds = _read_cache(stem, params)
  if ds is None:
    log.info("glyphs: generating %s", stem)
    t0 = time.time()
    ds = build(seed, max_per_alphabet)
    _write_cache(stem, ds, params, time.time() - t0)
    log.info("glyphs: wrote %s.npz (%s) in %.1fs", stem, ds.describe(), time.time() - t0)
  return ds


def save_grid(path: str, ds: ClassImages | None = None, split: str = "train",
              classes: int = 24, examples: int = 10, data_dir: str = "") -> None:
  """A PNG of `classes` classes (rows, spread over the split) x `examples` examples."""
  from PIL import Image
  ds = ds or load(data_dir)
  a = ds.splits[split]
  rows = np.linspace(0, a.shape[0] - 1, min(classes, a.shape[0])).astype(int)
  tiles = a[rows, :examples, :, :, 0]
  tiles = np.pad(tiles, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=90)
  grid = tiles.transpose(0, 2, 1, 3).reshape(len(rows) * (SIZE + 2), -1)
  Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


if __name__ == "__main__":
  import argparse
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  p = argparse.ArgumentParser(description="Generate (or verify) the glyphs cache.")
  p.add_argument("--data_dir", default="")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--grid", default="", help="also save a PNG grid of each split here")
  args = p.parse_args()
  ds = load(args.data_dir, seed=args.seed)
  print(ds.describe())
  if args.grid:
    for s in ds.splits:
      save_grid(args.grid.replace(".png", f"-{s}.png"), ds, s)
