"""Offline image datasets: glyphs (class choice, splits, cache), uci_digits, tfds through mock data.

Glyph arrays are checked on a small build (3 letters per alphabet, ~1 s);
the full class set (choice, dedupe, split) is checked without rendering all
of it. The full generation is timed in BUILD_NOTES.md.
"""

import json
import os
import shutil

import numpy as np
import pytest

from metajax import data
from metajax.data import glyphs, tfds_images
from metajax.errors import ConfigError
from metajax.runlog import sha256_file

SMALL = 3  # letters per alphabet in the test builds


@pytest.fixture(scope="module")
def glyph_dir(tmp_path_factory):
  """A data dir holding one small glyphs build (module-scoped: built once)."""
  d = str(tmp_path_factory.mktemp("glyphs-a"))
  glyphs.load(d, max_per_alphabet=SMALL)
  return d


def _count_builds(monkeypatch, result=None):
  """Records calls of glyphs.build; returns `result` instead of rendering when given."""
  calls = []
  real = glyphs.build

  def counted(*args, **kwargs):
    calls.append(args)
    return result if result is not None else real(*args, **kwargs)

  monkeypatch.setattr(glyphs, "build", counted)
  return calls


# ---------------------------------------------------------------- glyphs: class set

def test_full_class_set_has_1000_classes_split_by_writing_system():
  classes = glyphs.choose_classes()
  assert len(classes) >= 1000
  by_split = {s: [c for c in classes if c["split"] == s] for s in glyphs.SPLIT_FRACTIONS}
  for s, frac in glyphs.SPLIT_FRACTIONS.items():
    assert abs(len(by_split[s]) / len(classes) - frac) < 0.05, (s, len(by_split[s]))
  for key in ("cp", "alphabet", "system"):  # classes, alphabets, writing systems all disjoint
    sets = [{c[key] for c in v} for v in by_split.values()]
    assert sum(map(len, sets)) == len(set().union(*sets)), key
  sizes = {}
  for c in classes:
    sizes[c["alphabet"]] = sizes.get(c["alphabet"], 0) + 1
    assert c["fonts"] and "LastResortHE-Regular.ttf" not in c["fonts"]
  assert len(sizes) >= 20
  assert glyphs.MIN_PER_ALPHABET <= min(sizes.values())
  assert max(sizes.values()) <= glyphs.MAX_PER_ALPHABET


def test_no_meta_test_class_is_a_near_copy_of_a_meta_train_class():
  classes = glyphs.choose_classes()
  cps, masks, _ = glyphs.letter_pool()
  row = {cp: i for i, cp in enumerate(cps)}
  near = glyphs.near_copies(masks[[row[c["cp"]] for c in classes]], [c["system"] for c in classes])
  np.fill_diagonal(near, False)
  assert not near.any()  # not across splits, nor within one
  # the rule catches homoglyphs: Latin o / Cyrillic o / Greek omicron; B / narrower Old Italic BE
  for chars, systems in ((("o", "\u043e", "\u03bf"), ("Latin", "Cyrillic", "Greek")),
                         (("B", "\U00010301"), ("Latin", "Old Italic"))):
    m = np.stack([glyphs._canonical(ch, "DejaVuSans.ttf") for ch in chars])
    assert glyphs.near_copies(m, systems).all()
  # and keeps letters that differ: b / h, Latin L / L with middle dot
  m = np.stack([glyphs._canonical(ch, "DejaVuSans.ttf") for ch in "bh"])
  assert not glyphs.near_copies(m, ["Latin"] * 2)[0, 1]


def test_glyph_letters_renders_meta_train_letters_many_times_deterministically():
  from metajax.data import glyph_letters
  a, b = glyph_letters.build(classes=4, examples=6), glyph_letters.build(classes=4, examples=6)
  assert a.modality == "image" and a.X.shape == (24, glyphs.SIZE, glyphs.SIZE)
  assert a.X.dtype == np.uint8 and a.X.reshape(24, -1).max(1).min() > 0  # every image has ink
  np.testing.assert_array_equal(a.X, b.X)
  assert (a.y == b.y).all() and len(set(a.y)) == 4 and (np.unique(a.y, return_counts=True)[1] == 6).all()
  train = {glyphs.class_name(c["cp"]) for c in glyphs.choose_classes() if c["split"] == "train"}
  assert set(a.y) <= train and not any("DIGIT" in n for n in a.y)
  c = glyph_letters.build(seed=1, classes=4, examples=6)
  assert (c.y == a.y).all() and not np.array_equal(c.X, a.X)  # seed: other renderings


# ---------------------------------------------------------------- glyphs: arrays and cache

def test_glyph_arrays(glyph_dir):
  ds = glyphs.load(glyph_dir, max_per_alphabet=SMALL)
  assert set(ds.splits) == {"train", "val", "test"}
  names = []
  for s, a in ds.splits.items():
    assert a.dtype == np.uint8 and a.shape[1:] == (20, 28, 28, 1)
    assert a.shape[0] == len(ds.class_names[s]) == len(ds.groups[s])
    names += ds.class_names[s]
    assert a[:, :, 0, 0].max() < 40 and a.max(axis=(2, 3, 4)).min() > 150  # dark ground, bright ink
    # examples differ (fonts and augmentation), classes are not constant images
    assert (a[:, 0] != a[:, 1]).any(axis=(1, 2, 3)).all()
  assert len(names) == len(set(names))
  assert all(n.startswith("U+") for n in names)
  alphabets = [set(g) for g in ds.groups.values()]
  assert sum(map(len, alphabets)) == len(set().union(*alphabets))


def test_glyphs_deterministic_and_seeded(glyph_dir, tmp_path, monkeypatch):
  calls = _count_builds(monkeypatch)
  a = glyphs.load(glyph_dir, max_per_alphabet=SMALL)
  assert calls == []  # a good cache is used as is
  b = glyphs.load(str(tmp_path), max_per_alphabet=SMALL)
  assert len(calls) == 1
  for s in a.splits:
    np.testing.assert_array_equal(a.splits[s], b.splits[s])
  assert a.class_names == b.class_names and a.groups == b.groups
  c = glyphs.build(seed=1, max_per_alphabet=SMALL)
  assert c.class_names == a.class_names  # the seed changes renderings, not classes
  assert not np.array_equal(c.splits["train"], a.splits["train"])


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_npz", "drop_json", "bad_json",
                                    "other_params"])
def test_glyph_cache_damage_is_detected_and_rebuilt(glyph_dir, tmp_path, monkeypatch, damage):
  d = str(tmp_path / "data")
  shutil.copytree(glyph_dir, d)
  stem = glyphs.cache_stem(d, max_per_alphabet=SMALL)
  good = glyphs.load(glyph_dir, max_per_alphabet=SMALL)
  if damage == "flip_byte":
    with open(stem + ".npz", "r+b") as f:
      f.seek(os.path.getsize(stem + ".npz") // 2)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0xFF]))
  elif damage == "truncate":
    with open(stem + ".npz", "r+b") as f:
      f.truncate(os.path.getsize(stem + ".npz") - 1000)
  elif damage == "drop_npz":
    os.remove(stem + ".npz")
  elif damage == "drop_json":
    os.remove(stem + ".json")
  elif damage == "bad_json":
    with open(stem + ".json", "w") as f:
      f.write('{"params": ')
  else:
    meta = json.load(open(stem + ".json"))
    meta["params"]["version"] = 0
    json.dump(meta, open(stem + ".json", "w"))
  # the real rebuild is the one of test_glyphs_deterministic_and_seeded; skip the rendering here
  calls = _count_builds(monkeypatch, result=good)
  ds = glyphs.load(d, max_per_alphabet=SMALL)
  assert len(calls) == 1
  for s in good.splits:
    np.testing.assert_array_equal(ds.splits[s], good.splits[s])
  with open(stem + ".json") as f:  # the rebuilt cache is valid again
    assert json.load(f)["sha256"] == sha256_file(stem + ".npz")
  assert not [f for f in os.listdir(os.path.dirname(stem)) if f.startswith(".tmp")]


def test_glyphs_bad_knob():
  with pytest.raises(ConfigError, match="max_per_alphabet"):
    glyphs.load("/nonexistent", max_per_alphabet=0)


def test_save_grid(glyph_dir, tmp_path):
  ds = glyphs.load(glyph_dir, max_per_alphabet=SMALL)
  path = str(tmp_path / "grid.png")
  glyphs.save_grid(path, ds, "test", classes=4, examples=5)
  from PIL import Image
  assert Image.open(path).size == (5 * 30 * 2, 4 * 30 * 2)


# ---------------------------------------------------------------- uci_digits

def test_uci_digits():
  ds = data.load("uci_digits")
  a = ds.splits["test"]
  assert list(ds.splits) == ["test"] and a.dtype == np.uint8
  assert a.shape == (10, 174, 28, 28, 1)
  assert a[:, :, :3].max() == 0 and a.max() > 200  # padded dark border, bright ink


# ---------------------------------------------------------------- tfds (mock data, no network)

@pytest.fixture
def mock_tfds():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def test_omniglot_mock(mock_tfds, tmp_path):
  ds = data.load("omniglot", str(tmp_path))
  assert set(ds.splits) == {"train", "val", "test"}
  for s, a in ds.splits.items():
    assert a.dtype == np.uint8 and a.shape[2:] == (28, 28, 1)
    assert a.shape[0] == len(ds.class_names[s]) == len(ds.groups[s])
    assert len(ds.class_names[s]) == len(set(ds.class_names[s]))
  # val = held-out background alphabets. (Mock data repeats the same random
  # examples in every tfds split, so train/test overlap here but not in Omniglot.)
  assert not set(ds.groups["train"]) & set(ds.groups["val"])


def test_tfds_by_name_mock(mock_tfds, tmp_path):
  ds = data.load("tfds:mnist", str(tmp_path))
  assert list(ds.splits) == ["test"] and ds.splits["test"].shape[0] == 10
  assert ds.splits["test"].shape[2:] == (28, 28, 1)
  ds = tfds_images.load("cifar10", str(tmp_path), 16, grayscale=True,
                        class_fractions=(0.6, 0.2, 0.2))
  assert [a.shape[0] for a in ds.splits.values()] == [6, 2, 2]
  assert ds.image_shape == (16, 16, 1)
  assert not set(ds.class_names["train"]) & set(ds.class_names["test"])


def test_tfds_missing_data_dir_is_a_clear_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ConfigError, match="tfds build omniglot") as e:
    data.load("omniglot", str(tmp_path))
  assert str(tmp_path) in str(e.value) and "not there" in str(e.value)
  with pytest.raises(ConfigError, match="no dataset of that name"):
    data.load("tfds:no_such_dataset", str(tmp_path))
