"""Static configuration of hyperparameter meta-learning: hashable frozen dataclasses.

`from_config(config)` checks an ml-collections config (configs/hp_metalearn.py) and returns
one `FamilySpec` per family to run plus the `InnerSpec` and `MetaSpec` every jitted function
closes over. Every bad value is a ConfigError naming the key, the value and the valid
choices, raised before anything is loaded or compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from metajax import models, optim
from metajax.errors import ConfigError, require_in

FAMILIES = {"mlp": "flat", "cnn": "image", "gru": "ids"}  # family -> input kind
ESTIMATORS = ("tbptt", "pes")
INNER_OPTIMIZERS = ("adam", "sgd")
# Datasets that are the same data under two names: a split by dataset must keep them together.
SAME_SOURCE = {"uci_digits": "digits", "glyph_letters": "glyphs"}


def source(name: str) -> str:
  """The underlying data of a dataset name (digits and uci_digits are one source)."""
  return SAME_SOURCE.get(name, name)


@dataclasses.dataclass(frozen=True)
class FamilySpec:
  """One model family and the fixed shapes of its tasks.

  input_shape: per-example shape after padding: (features,) for 'flat', (H, W, 1) for
    'image', (seq_len,) for 'ids' (int token ids, 0 = padding).
  model: the `metajax.models` config as sorted (key, value) pairs (hashable).
  """
  name: str
  model: tuple
  max_classes: int
  input_shape: tuple
  train_rows: int
  val_rows: int
  train_datasets: tuple
  test_datasets: tuple
  vocab_size: int = 0

  @property
  def kind(self) -> str:
    return FAMILIES[self.name]

  def make_model(self, num_outputs: int | None = None):
    return models.from_config(dict(self.model), num_outputs=num_outputs or self.max_classes)


@dataclasses.dataclass(frozen=True)
class InnerSpec:
  """The inner training run whose hyperparameters are meta-learned.

  steps: length of one inner run; segments: pieces of it with their own per-layer rates;
  batch_size: rows per inner step (0: the whole padded train split, masked).
  """
  steps: int
  segments: int
  batch_size: int
  optimizer: str
  default_lr: float
  init_weight_decay: float
  learn_weight_decay: bool


@dataclasses.dataclass(frozen=True)
class MetaSpec:
  """The outer loop: `tasks` per meta-step, each advanced `unroll` inner steps per meta-step."""
  estimator: str
  tasks: int
  unroll: int
  pes_pairs: int
  pes_sigma: float
  log_lr_range: tuple
  log_wd_range: tuple
  loss_cap: float


def windows_of(inner: InnerSpec, meta: MetaSpec) -> int:
  """Unrolls per inner run."""
  return inner.steps // meta.unroll


def _tuple(v) -> tuple:
  return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def check(config) -> None:
  """ConfigError for any bad value of an hp_metalearn config; loads and compiles nothing."""
  run = _tuple(config.run_families)
  if not run:
    raise ConfigError("run_families", run, "needs at least one family", ", ".join(FAMILIES))
  for f in run:
    require_in("run_families", f, FAMILIES)
    if f not in config.families:
      raise ConfigError("run_families", f, "has no entry in config.families",
                        ", ".join(sorted(config.families)))
  est = _tuple(config.meta.estimators)
  if not est:
    raise ConfigError("meta.estimators", est, "needs at least one estimator", "tbptt, pes")
  for e in est:
    require_in("meta.estimators", e, ESTIMATORS)
  i, m = config.inner, config.meta
  require_in("inner.optimizer", i.optimizer, INNER_OPTIMIZERS)
  require_in("eval.select", config.eval.select, ("best", "last"))
  for key, v in (("inner.steps", i.steps), ("inner.segments", i.segments),
                 ("meta.tasks", m.tasks), ("meta.unroll", m.unroll),
                 ("meta.pes_pairs", m.pes_pairs), ("train.steps", config.train.steps),
                 ("train.log_every", config.train.log_every),
                 ("train.checkpoint_every", config.train.checkpoint_every),
                 ("tasks.train_rows", config.tasks.train_rows),
                 ("tasks.val_rows", config.tasks.val_rows),
                 ("eval.tasks", config.eval.tasks), ("transfer.random_runs",
                                                     config.transfer.random_runs)):
    if not v > 0:
      raise ConfigError(key, v, "must be positive", "> 0")
  if i.batch_size < 0:
    raise ConfigError("inner.batch_size", i.batch_size, "must be non-negative", ">= 0 (0: full)")
  if i.steps % m.unroll:
    raise ConfigError("meta.unroll", m.unroll, f"inner.steps={i.steps} must be a whole number "
                      "of unrolls", f"a divisor of {i.steps}")
  if i.segments > i.steps:
    raise ConfigError("inner.segments", i.segments, "more segments than inner steps",
                      f"<= {i.steps}")
  for key, v in (("inner.default_lr", i.default_lr), ("meta.pes_sigma", m.pes_sigma),
                 ("inner.init_weight_decay", i.init_weight_decay)):
    if not v > 0:
      raise ConfigError(key, v, "must be positive", "> 0")
  for key in ("log_lr_range", "log_wd_range"):
    lo, hi = m[key]
    if not lo < hi:
      raise ConfigError(f"meta.{key}", (lo, hi), "needs lo < hi", "(lo, hi)")
  if config.train.checkpoint_every % config.train.log_every:
    raise ConfigError("train.checkpoint_every", config.train.checkpoint_every,
                      f"checkpoints must fall on log steps (log_every={config.train.log_every})",
                      f"a multiple of {config.train.log_every}")
  n = jax.device_count()
  for key, v in (("meta.tasks", m.tasks), ("eval.tasks", config.eval.tasks)):
    if v % n:
      raise ConfigError(key, v, f"tasks are split over {n} devices", f"a multiple of {n}")
  t = config.tasks
  if not 2 <= t.min_classes:
    raise ConfigError("tasks.min_classes", t.min_classes, "a task needs two classes", ">= 2")
  if not 0 < t.min_row_frac <= 1 or not 0 < t.min_feature_frac <= 1:
    raise ConfigError("tasks.min_row_frac", (t.min_row_frac, t.min_feature_frac),
                      "fractions must lie in (0, 1]", "0 < frac <= 1")
  optim.check(config.optimizer)
  for f in run:
    _check_family(config, f)


def _check_family(config, name: str) -> None:
  fc = config.families[name]
  key = f"families.{name}"
  models.MODELS.get(fc.model.name)
  if fc.max_classes < config.tasks.min_classes:
    raise ConfigError(f"{key}.max_classes", fc.max_classes, "below tasks.min_classes",
                      f">= {config.tasks.min_classes}")
  train, test = _tuple(fc.train_datasets), _tuple(fc.test_datasets)
  from metajax import data
  for which, names in (("train_datasets", train), ("test_datasets", test)):
    for n in names:
      if not n.startswith("tfds:") and n not in data.DATASETS:
        raise ConfigError(f"{key}.{which}", n, "no dataset of that name",
                          ", ".join(data.DATASETS.names()) + ", tfds:NAME")
  if not train:
    raise ConfigError(f"{key}.train_datasets", train, "meta-training needs a dataset",
                      "one or more dataset names")
  seen = {source(n) for n in train}
  leak = [n for n in test if source(n) in seen]
  if leak:
    raise ConfigError(f"{key}.test_datasets", leak[0], "is (the same data as) a meta-train "
                      "dataset; a held-out dataset must never be seen in meta-training",
                      "datasets not in train_datasets: " + ", ".join(train))
  for k in ("train_rows", "max_rows"):  # the family's own task and pool sizes, if given
    if k in fc and not fc[k] > 0:
      raise ConfigError(f"{key}.{k}", fc[k], "must be positive", "> 0 (or leave it out)")
  if FAMILIES[name] == "flat" and not fc.features > 0:
    raise ConfigError(f"{key}.features", fc.features, "must be positive", "> 0")
  if FAMILIES[name] == "image" and not fc.image_size >= 4:
    raise ConfigError(f"{key}.image_size", fc.image_size, "too small", ">= 4")
  if FAMILIES[name] == "ids" and not (fc.seq_len > 0 and fc.vocab_size > 2):
    raise ConfigError(f"{key}.seq_len", (fc.seq_len, fc.vocab_size), "needs a positive length "
                      "and a vocabulary", "seq_len > 0, vocab_size > 2")


def family_spec(config, name: str) -> FamilySpec:
  fc = config.families[name]
  kind = FAMILIES[name]
  shape = {"flat": lambda: (int(fc.features),),
           "image": lambda: (int(fc.image_size), int(fc.image_size), 1),
           "ids": lambda: (int(fc.seq_len),)}[kind]()
  model = dict(fc.model)
  if kind == "ids":
    model["vocab_size"] = int(fc.vocab_size)
  return FamilySpec(name, tuple(sorted((k, _frozen(v)) for k, v in model.items())),
                    int(fc.max_classes), shape, int(fc.get("train_rows", config.tasks.train_rows)),
                    int(config.tasks.val_rows), _tuple(fc.train_datasets),
                    _tuple(fc.test_datasets), int(fc.get("vocab_size", 0)))


def _frozen(v: Any):
  return tuple(v) if isinstance(v, list) else v


def inner_spec(config) -> InnerSpec:
  i = config.inner
  return InnerSpec(int(i.steps), int(i.segments), int(i.batch_size), str(i.optimizer),
                   float(i.default_lr), float(i.init_weight_decay), bool(i.learn_weight_decay))


def meta_spec(config, estimator: str) -> MetaSpec:
  m = config.meta
  return MetaSpec(estimator, int(m.tasks), int(m.unroll), int(m.pes_pairs), float(m.pes_sigma),
                  tuple(map(float, m.log_lr_range)), tuple(map(float, m.log_wd_range)),
                  float(m.loss_cap))
