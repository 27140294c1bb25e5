"""Sort-of-CLEVR (Santoro et al. 2017) with English questions and a tabular channel.

Each 75x75 RGB image (white background) holds 6 objects of unique colours
(red, green, blue, orange, yellow, gray), each a 10x10 square or a circle of
radius 5, centres at least 10 px apart (the original generator's rule). Per
image, 10 non-relational and 10 relational questions as in the paper:

  non-relational: shape of the <c> object; is it on the left; is it on the top
  relational:     shape of the object closest to / furthest from <c>;
                  how many objects have the same shape as <c> (1..6)

The tabular channel lists attribute rows (colour, shape, x, y, weight) for a
random `table_rows` of the 6 objects. `weight` (0..10 kg) exists only in the
table, so two extra question families per image need it:

  table: is the <c> object heavy (weight > 5)?  -- <c> is listed: the table alone answers
  both:  is the object closest to <c> heavy?    -- the closest object is listed, but only
         the image shows that no unlisted object is closer: needs image and table

Answers are one of ANSWERS (10 classes). Deterministic by seed; cached under
`default_data_dir()/sort_of_clevr/` as one .npz with a SHA-256 sidecar, written
atomically; a cache that fails its checksum is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from metajax.data.base import default_data_dir
from metajax.errors import ConfigError
from metajax.runlog import atomic_write, sha256_file

log = logging.getLogger(__name__)

VERSION = 1
IMAGE_SIZE = 75
OBJECT_SIZE = 5  # half side of a square, radius of a circle
COLOURS = ("red", "green", "blue", "orange", "yellow", "gray")
RGB = np.array([(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 150, 0), (255, 255, 0),
                (128, 128, 128)], np.uint8)
SHAPES = ("square", "circle")
ANSWERS = ("yes", "no", "square", "circle", "1", "2", "3", "4", "5", "6")
# Question families; GROUP says which accuracy each one counts towards.
FAMILIES = ("shape", "left", "top", "closest", "furthest", "count", "heavy", "closest_heavy")
GROUP = {"shape": "non-relational", "left": "non-relational", "top": "non-relational",
         "closest": "relational", "furthest": "relational", "count": "relational",
         "heavy": "table", "closest_heavy": "image+table"}
GROUPS = ("non-relational", "relational", "table", "image+table")
TEMPLATES = {
    "shape": "what shape is the {} object?",
    "left": "is the {} object on the left?",
    "top": "is the {} object on the top?",
    "closest": "what shape is the object closest to the {} object?",
    "furthest": "what shape is the object furthest from the {} object?",
    "count": "how many objects have the same shape as the {} object?",
    "heavy": "is the {} object heavy?",
    "closest_heavy": "is the object closest to the {} object heavy?",
}
# Table schema: categorical columns with their values, numeric columns with (offset, scale).
TABLE_CATEGORICAL = {"colour": COLOURS, "shape": SHAPES}
TABLE_NUMERIC = {"x": (0.0, float(IMAGE_SIZE)), "y": (0.0, float(IMAGE_SIZE)), "weight": (0.0, 10.0)}


def model_inputs(table_rows: int) -> dict:
  """What a model of these scenes takes and answers: image shape, table columns (categorical
  vocabulary sizes, numeric count), rows, answer classes, regression targets (x, y)."""
  return dict(image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), table_rows=table_rows,
              table_categorical=tuple(len(v) for v in TABLE_CATEGORICAL.values()),
              table_numeric=len(TABLE_NUMERIC), num_classes=len(ANSWERS), num_regression=2)


def _render(centres: np.ndarray, shapes: np.ndarray) -> np.ndarray:
  img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255, np.uint8)
  yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
  for c, ((x, y), s) in enumerate(zip(centres, shapes)):
    if s == 0:
      mask = (np.abs(xx - x) <= OBJECT_SIZE) & (np.abs(yy - y) <= OBJECT_SIZE)
    else:
      mask = (xx - x) ** 2 + (yy - y) ** 2 <= OBJECT_SIZE ** 2
    img[mask] = RGB[c]
  return img


def _centres(rng: np.random.Generator) -> np.ndarray:
  out = []
  while len(out) < len(COLOURS):
    c = rng.integers(OBJECT_SIZE, IMAGE_SIZE - OBJECT_SIZE, 2)
    if all(((c - o) ** 2).sum() >= (2 * OBJECT_SIZE) ** 2 for o in out):
      out.append(c)
  return np.array(out)


def check_table_rows(table_rows: int) -> None:
  if not 0 <= table_rows <= len(COLOURS):
    raise ConfigError("data.table_rows", table_rows, "a scene has 6 objects", "0..6")


def questions_per_image(table_rows: int, questions_per_kind: int = 10,
                        table_questions: int = 2) -> int:
  """How many questions `generate` asks of every image (no table questions without a table)."""
  return 2 * questions_per_kind + (table_questions if table_rows else 0)


def generate(num_images: int, seed: int, table_rows: int = 3,
             questions_per_kind: int = 10, table_questions: int = 2) -> dict[str, np.ndarray]:
  """Generates `num_images` scenes with their questions; pure function of the arguments.

  Returns numpy arrays:
    images [I, 75, 75, 3] uint8; centres [I, 6, 2] int (x, y); shapes [I, 6] (0 square, 1 circle);
    weights [I, 6] float32; table_cat [I, R, 2] int32 (colour, shape); table_num [I, R, 3]
    float32 raw (x, y, weight); table_mask [I, R] bool (all True: R rows per image);
    q_image [Q] int32 (image index); q_family [Q] int32 (index into FAMILIES);
    q_colour [Q] int32; q_answer [Q] int32 (index into ANSWERS);
    q_target [Q] int32 (colour of the object the answer is about, e.g. the closest one);
    q_text [Q] str.
  Q = I * (2 * questions_per_kind + table_questions).
  """
  rng = np.random.default_rng(seed)
  return _generate(lambda i: rng, num_images, table_rows, questions_per_kind, table_questions)


def generate_scenes(scenes: range, seed: int, table_rows: int = 3, questions_per_kind: int = 10,
                    table_questions: int = 2) -> dict[str, np.ndarray]:
  """Scenes `scenes` of a set in which scene i is drawn from its own seed (seed, i), as
  `generate` arrays (q_image indexes the returned images): any range is generated alone (a
  host's shard) and the shards of a partition concatenate to the whole set."""
  return _generate(lambda i: np.random.default_rng([seed, scenes[i]]), len(scenes), table_rows,
                   questions_per_kind, table_questions)


def _generate(rng_for, num_images: int, table_rows: int, questions_per_kind: int,
              table_questions: int) -> dict[str, np.ndarray]:
  """`generate`'s arrays of `num_images` scenes, scene i drawn from generator `rng_for(i)`."""
  check_table_rows(table_rows)
  n = len(COLOURS)
  images = np.empty((num_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  centres = np.empty((num_images, n, 2), np.int64)
  shapes = np.empty((num_images, n), np.int64)
  weights = np.empty((num_images, n), np.float32)
  table_cat = np.zeros((num_images, table_rows, 2), np.int32)
  table_num = np.zeros((num_images, table_rows, 3), np.float32)
  qs: dict[str, list] = {k: [] for k in ("image", "family", "colour", "answer", "target")}
  fam = {f: i for i, f in enumerate(FAMILIES)}
  ans = {a: i for i, a in enumerate(ANSWERS)}
  for i in range(num_images):
    rng = rng_for(i)
    cen = _centres(rng)
    shp = rng.integers(0, 2, n)
    wgt = np.round(rng.uniform(0.0, 10.0, n), 1).astype(np.float32)
    images[i], centres[i], shapes[i], weights[i] = _render(cen, shp), cen, shp, wgt
    listed = np.sort(rng.permutation(n)[:table_rows])
    listed = listed[rng.permutation(table_rows)]  # row order carries no information
    table_cat[i] = np.stack([listed, shp[listed]], -1)
    table_num[i] = np.concatenate([cen[listed], wgt[listed, None]], -1)
    d = ((cen[:, None] - cen[None]) ** 2).sum(-1).astype(np.float64)
    np.fill_diagonal(d, np.inf)
    closest = d.argmin(1)
    np.fill_diagonal(d, -np.inf)
    furthest = d.argmax(1)

    def ask(family, c, answer, target):
      qs["image"].append(i), qs["family"].append(fam[family]), qs["colour"].append(c)
      qs["answer"].append(ans[answer]), qs["target"].append(target)

    for _ in range(questions_per_kind):  # non-relational
      c = int(rng.integers(n))
      kind = ("shape", "left", "top")[rng.integers(3)]
      if kind == "shape":
        ask(kind, c, SHAPES[shp[c]], c)
      elif kind == "left":
        ask(kind, c, "yes" if cen[c, 0] < IMAGE_SIZE / 2 else "no", c)
      else:
        ask(kind, c, "yes" if cen[c, 1] < IMAGE_SIZE / 2 else "no", c)
    for _ in range(questions_per_kind):  # relational
      c = int(rng.integers(n))
      kind = ("closest", "furthest", "count")[rng.integers(3)]
      if kind == "closest":
        ask(kind, c, SHAPES[shp[closest[c]]], int(closest[c]))
      elif kind == "furthest":
        ask(kind, c, SHAPES[shp[furthest[c]]], int(furthest[c]))
      else:
        ask(kind, c, str(int((shp == shp[c]).sum())), c)
    for t in range(table_questions):  # need the table (alternating families)
      heavy = lambda o: "yes" if wgt[o] > 5.0 else "no"
      both_ok = [c for c in range(n) if closest[c] in listed]
      if table_rows and (t % 2 == 0 or not both_ok):
        c = int(rng.choice(listed))
        ask("heavy", c, heavy(c), c)
      elif both_ok:
        c = int(rng.choice(both_ok))
        ask("closest_heavy", c, heavy(closest[c]), int(closest[c]))
  out = dict(images=images, centres=centres, shapes=shapes, weights=weights,
             table_cat=table_cat, table_num=table_num,
             table_mask=np.ones((num_images, table_rows), bool))
  out.update({f"q_{k}": np.asarray(v, np.int32) for k, v in qs.items()})
  out["q_text"] = np.array([TEMPLATES[FAMILIES[f]].format(COLOURS[c])
                            for f, c in zip(out["q_family"], out["q_colour"])])
  return out


def load(data_dir: str = "", num_train: int = 9800, num_test: int = 200, seed: int = 0,
         table_rows: int = 3, num_val: int = 0,
         train_scenes: range | None = None) -> dict[str, dict[str, np.ndarray]]:
  """{'train': generate(...), 'test': generate(...)} (and 'val' when `num_val` > 0), from
  the cache when it is intact.

  Each split comes from its own seed derived from `seed` (train and test as without a
  validation split). The cache file is named by every argument, so sizes never collide.
  train_scenes: None, the training set drawn as one stream (`generate`); a range, only those
  scenes of a training set seeded per scene (`generate_scenes`: a host's
  `parallel.process_shard`, or range(num_train) for all of it). Val and test stay whole.
  """
  for key, v in (("data.num_train", num_train), ("data.num_test", num_test)):
    if v <= 0:
      raise ConfigError(key, v, "must be positive", ">= 1")
  if num_val < 0:
    raise ConfigError("data.num_val", num_val, "an image count", ">= 0 (0: no validation split)")
  directory = os.path.join(default_data_dir(data_dir), "sort_of_clevr")
  name = f"v{VERSION}-train{num_train}-test{num_test}-seed{seed}-rows{table_rows}"
  name += f"-val{num_val}" if num_val else ""
  if train_scenes is not None:
    if not 0 <= train_scenes.start < train_scenes.stop <= num_train:
      raise ValueError(f"train_scenes {train_scenes} is not a range of 0..{num_train - 1}")
    name += f"-scenes{train_scenes.start}-{train_scenes.stop}"
  path, meta = os.path.join(directory, name + ".npz"), os.path.join(directory, name + ".json")
  if os.path.exists(path) and os.path.exists(meta):
    try:
      with open(meta) as f:
        ok = json.load(f).get("sha256") == sha256_file(path)
      if ok:
        with np.load(path, allow_pickle=False) as z:
          return _unflatten(dict(z))
    except (OSError, ValueError, json.JSONDecodeError):
      pass  # corrupt: rebuilt below
  log.info("sort_of_clevr: generating %d train, %d val and %d test scenes into %s (once)",
           num_train if train_scenes is None else len(train_scenes), num_val, num_test, path)
  t0 = time.time()
  train = (generate(num_train, seed * 2 + 1, table_rows) if train_scenes is None else
           generate_scenes(train_scenes, seed * 2 + 1, table_rows))
  splits = {"train": train, "test": generate(num_test, seed * 2 + 2, table_rows)}
  if num_val:
    splits["val"] = generate(num_val, 10_000 + seed, table_rows)
  import io
  buf = io.BytesIO()
  np.savez(buf, **{f"{s}/{k}": v for s, d in splits.items() for k, v in d.items()})
  atomic_write(path, buf.getvalue())
  atomic_write(meta, json.dumps({"sha256": sha256_file(path), "version": VERSION}))
  log.info("sort_of_clevr: generated in %.1f s", time.time() - t0)
  return splits


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  out: dict[str, dict[str, np.ndarray]] = {}
  for k, v in flat.items():
    split, _, name = k.partition("/")
    out.setdefault(split, {})[name] = v
  return out


# --- training batches: host-side numpy, a deterministic function of (seed, step) -----------
class Split:
  """A split as flat numpy arrays; `batch(idx)` gathers the model inputs of questions `idx`.

  d: a `generate` dict; ids, mask [Q, L]: its tokenized questions. Numeric table columns
  are scaled by TABLE_NUMERIC's (offset, scale); `group` [Q] indexes GROUPS; `target_xy`
  [Q, 2] is the (x, y) / IMAGE_SIZE of the object each answer is about; `by_image`
  [I, questions per image] lists each image's questions.
  """

  def __init__(self, d: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray):
    self.d, self.ids, self.mask = d, ids, mask
    offs, scale = np.array(list(TABLE_NUMERIC.values()), np.float32).T
    self.table_num = (d["table_num"] - offs) / scale
    self.size = len(d["q_answer"])
    self.group = np.array([GROUPS.index(GROUP[FAMILIES[f]]) for f in d["q_family"]])
    self.target_xy = (d["centres"][d["q_image"], d["q_target"]] / IMAGE_SIZE).astype(np.float32)
    order = np.argsort(d["q_image"], kind="stable")  # every image has as many questions
    self.by_image = order.reshape(len(d["images"]), -1)

  def batch(self, idx: np.ndarray, per_image: int = 1) -> dict[str, np.ndarray]:
    """Inputs of questions `idx`; with `per_image` = r, idx holds r consecutive questions of
    each image, and images and tables come once per r questions (the model shares them)."""
    img = self.d["q_image"][idx][::per_image]
    return {"image": self.d["images"][img], "text": self.ids[idx], "text_mask": self.mask[idx],
            "table_cat": self.d["table_cat"][img], "table_num": self.table_num[img],
            "table_mask": self.d["table_mask"][img], "answer": self.d["q_answer"][idx],
            "target_xy": self.target_xy[idx]}


def _seeds(seed) -> list:
  """A seed (int) or a tuple of them (seed, shard) as the leading entropy of a generator."""
  return list(seed) if isinstance(seed, tuple) else [seed]


def _epoch_order(seed, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([*_seeds(seed), epoch]).permutation(n)


def scene_indices(seed, step: int, batch: int, per_image: int,
                  by_image: np.ndarray) -> np.ndarray:
  """Question indices [batch] of `step`, in groups of `per_image` questions of one image
  (images in a per-epoch shuffled order, questions drawn without replacement); a function
  of (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
  `seed` is an int or a tuple of ints (a host's own stream: (seed, process index))."""
  if per_image == 1:  # questions in a per-epoch shuffled order
    n = by_image.size
    epoch, pos = divmod(step, n // batch)
    return _epoch_order(seed, epoch, n)[pos * batch:(pos + 1) * batch]
  images = batch // per_image
  epoch, pos = divmod(step, len(by_image) // images)
  img = _epoch_order(seed, epoch, len(by_image))[pos * images:(pos + 1) * images]
  rng = np.random.default_rng([*_seeds(seed), epoch, pos, 1])
  pick = np.argsort(rng.random((images, by_image.shape[1])), axis=1)[:, :per_image]
  return np.take_along_axis(by_image[img], pick, axis=1).reshape(-1)


def host_batch_indices(seed: int, step: int, batch: int, per_image: int, by_image: np.ndarray,
                       rows: slice, shard: int | None = None) -> np.ndarray:
  """This process's question indices of global batch `step`: its `rows` (`process_rows`).

  shard None: those rows of `scene_indices` over the whole split, the same batch for any
  process count. shard = this process's index: len(rows) questions drawn from its own shard
  of the split (`by_image` is the shard's) in its own stream (seed, shard), as big_vision's
  hosts iterate their own data; a function of (seed, step, process count).
  """
  if shard is None:
    return scene_indices(seed, step, batch, per_image, by_image)[rows]
  return scene_indices((seed, shard), step, rows.stop - rows.start, per_image, by_image)


def question_texts(table_rows: int) -> list[str]:
  """Every question `generate` can ask (sorted; no table questions without a table): what a
  tokenizer learns when each host holds only a shard of the training questions."""
  fams = [f for f in FAMILIES if table_rows or GROUP[f] in ("non-relational", "relational")]
  return sorted(TEMPLATES[f].format(c) for f in fams for c in COLOURS)


def colour_curriculum(q_colour: np.ndarray, step: int, steps_per_colour: int) -> np.ndarray:
  """Loss weights [Q]: 1 for questions about a colour in play at `step`, else 0. Colours
  enter one at a time, in COLOURS order, every `steps_per_colour` steps (0: all at once)."""
  if not steps_per_colour:
    return np.ones(len(q_colour), np.float32)
  return (q_colour < step // steps_per_colour + 1).astype(np.float32)
