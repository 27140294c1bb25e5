"""The AutoML config: defaults, the tiny CPU variant, and validation before any work."""

from __future__ import annotations

import ml_collections

from metajax.automl import space as space_lib
from metajax.errors import ConfigError, require_in, require_positive

SCHEDULERS = ("sh", "hyperband", "asha")
SAMPLERS = ("random", "sobol")
FAMILIES = ("mlp", "cnn", "gru", "rf", "gbm")
BY_MODALITY = {"table": ("mlp", "rf", "gbm"), "image": ("cnn", "mlp", "rf", "gbm"),
               "text": ("gru", "mlp", "rf")}
NEEDS = {"cnn": "image", "gru": "text"}


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "automl"
  c.seed = 0
  # data
  c.dataset = "breast_cancer"
  c.data_dir = ""
  c.max_rows = 0            # 0: every row; else a stratified subsample
  c.val_frac = 0.2
  c.test_frac = 0.2
  c.seq_len = 64            # text: tokens per review
  c.vocab_size = 2000       # text: BPE vocabulary trained offline on the training split
  # search
  c.metric = "accuracy"     # accuracy | balanced_accuracy | f1 | log_loss
  c.scheduler = "hyperband"
  c.sampler = "sobol"
  c.eta = 3
  c.min_budget = 1.0        # epochs (neural) / units of `trees_per_budget` trees (ensembles)
  c.max_budget = 27.0
  c.n_trials = 27           # successive halving: trials in the first rung
  c.max_trials = 0          # hyperband / asha: cap on trials started (0: none)
  c.hyperband_iterations = 1  # 0: repeat brackets until the time budget
  c.asha_workers = 8        # asha: jobs per simulated wave
  c.group_size = 4          # consecutive samples sharing architecture + batch size
  c.trees_per_budget = 4
  c.time_budget_s = 0.0     # 0: no wall-clock limit
  c.families = ()           # empty: every family that fits the data's modality
  c.space = space_lib.default_space()
  c.baselines = True        # random search and a hand-set default at the same budget
  c.num_devices = 0         # population axis over this many devices (0: all)
  c.store_path = "~/.cache/metajax/automl_experience.sqlite"  # '{workdir}' is substituted
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A few seconds on CPU: iris, six trials, budgets 1 and 3."""
  c.dataset = "iris"
  c.scheduler = "sh"
  c.n_trials = 6
  c.group_size = 3
  c.max_budget = 3.0
  c.families = ("mlp", "rf")
  # the hand-set default's architecture: search and baselines share one compiled program
  c.space.mlp.units = ("choice", (128,))
  c.space.mlp.layers = ("choice", (2,))
  c.space.mlp.batch_size = ("choice", (32,))
  c.store_path = "{workdir}/experience.sqlite"
  return c


def families_for(c, modality: str) -> list[str]:
  """The families to search on data of `modality`; ConfigError for an unusable one."""
  fams = list(c.families) or list(BY_MODALITY[modality])
  for f in fams:
    require_in("families", f, FAMILIES)
    if f in NEEDS and NEEDS[f] != modality:
      raise ConfigError("families", f, f"{f} needs {NEEDS[f]} data but {c.dataset} is {modality}",
                        ", ".join(BY_MODALITY[modality]))
  return fams


def validate(c) -> None:
  """ConfigError for any bad value, before data is loaded or the workdir touched."""
  from metajax.automl import datasets, search
  require_in("scheduler", c.scheduler, SCHEDULERS)
  require_in("sampler", c.sampler, SAMPLERS)
  require_in("metric", c.metric, search.METRICS)
  require_positive(c, "min_budget", "max_budget", "n_trials", "group_size", "trees_per_budget",
                   "asha_workers", "seq_len", "vocab_size")
  require_positive(c, "max_trials", "hyperband_iterations", "time_budget_s", "max_rows",
                   "num_devices", allow_zero=True)
  if int(c.eta) != c.eta or c.eta < 2:
    raise ConfigError("eta", c.eta, "the halving rate must be an integer >= 2", "2, 3, 4, ...")
  if c.max_budget < c.min_budget:
    raise ConfigError("max_budget", c.max_budget, f"below min_budget={c.min_budget}",
                      f">= {c.min_budget}")
  if not 0 < c.val_frac < 1 or not 0 < c.test_frac < 1 or c.val_frac + c.test_frac >= 0.9:
    raise ConfigError("val_frac", (c.val_frac, c.test_frac), "fractions must leave training rows",
                      "0 < val_frac, test_frac and val_frac + test_frac < 0.9")
  unbounded = c.time_budget_s == 0 and c.max_trials == 0
  if c.scheduler == "asha" and unbounded:
    raise ConfigError("max_trials", 0, "asha needs max_trials or time_budget_s to stop",
                      "max_trials > 0 or time_budget_s > 0")
  if c.scheduler == "hyperband" and c.hyperband_iterations == 0 and unbounded:
    raise ConfigError("hyperband_iterations", 0, "endless without max_trials or time_budget_s",
                      ">= 1, or set a limit")
  if not (c.dataset.startswith("tfds:") or c.dataset in datasets.DATASETS):
    raise ConfigError("dataset", c.dataset, "unknown dataset", ", ".join(datasets.names()))
  for f in c.families:
    require_in("families", f, FAMILIES)
  space_lib.check_space(c.space, list(c.families) or list(FAMILIES))
