"""The AutoML config: its one definition (configs/automl.py), and validation before any work.

Groups: `seed`, `data` (name, data_dir, max_rows, val_frac, test_frac, seq_len, vocab_size),
`search` (scheduler and budgets), `selection` (the final model), `space` (per-family
hyperparameter specs), `baselines`,
`num_devices`, `store_path`.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from metajax.automl import space as space_lib
from metajax.errors import ConfigError, require_in, require_positive

SCHEDULERS = ("sh", "hyperband", "asha")
SAMPLERS = ("random", "sobol")
NEURAL = ("mlp", "cnn", "gru")  # metajax.models families, trained as vmapped populations
FAMILIES = NEURAL + ("rf", "gbm", "linear")
BY_MODALITY = {"table": ("mlp", "rf", "gbm"), "image": ("cnn", "mlp", "rf", "gbm"),
               "text": ("gru", "linear", "mlp", "rf")}
NEEDS = {"cnn": "image", "gru": "text"}
METRICS = ("accuracy", "balanced_accuracy", "f1", "log_loss")
# The defaults live in the experiment's config file, so they are written down once.
CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "automl.py")


def default_config(mode: str = "") -> ml_collections.ConfigDict:
  """`get_config(mode)` of configs/automl.py (read from the source tree)."""
  if not os.path.isfile(CONFIG_FILE):
    raise FileNotFoundError(f"AutoML's defaults are defined in {CONFIG_FILE}, which is missing "
                            "(metajax must run from its source tree: pip install -e .)")
  spec = importlib.util.spec_from_file_location("metajax_automl_config", CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(mode)


def families_for(c, modality: str) -> list[str]:
  """The families to search on data of `modality`; ConfigError for an unusable one."""
  fams = list(c.search.families) or list(BY_MODALITY[modality])
  for f in fams:
    require_in("search.families", f, FAMILIES)
    if f in NEEDS and NEEDS[f] != modality:
      raise ConfigError("search.families", f,
                        f"{f} needs {NEEDS[f]} data but {c.data.name} is {modality}",
                        ", ".join(BY_MODALITY[modality]))
  return fams


def validate(c) -> None:
  """ConfigError for any bad value, before data is loaded or the workdir touched."""
  from metajax import data as data_registry
  from metajax.automl import population
  s, d = c.search, c.data
  require_in("search.scheduler", s.scheduler, SCHEDULERS)
  require_in("search.sampler", s.sampler, SAMPLERS)
  require_in("search.metric", s.metric, METRICS)
  require_positive(c, "search.min_budget", "search.max_budget", "search.n_trials",
                   "search.group_size", "search.trees_per_budget", "search.boost_per_budget",
                   "search.asha_workers", "data.seq_len", "data.vocab_size")
  require_positive(c, "search.max_trials", "search.hyperband_iterations", "search.time_budget_s",
                   "data.max_rows", "num_devices", allow_zero=True)
  if int(s.eta) != s.eta or s.eta < 2:
    raise ConfigError("search.eta", s.eta, "the halving rate must be an integer >= 2",
                      "2, 3, 4, ...")
  if s.max_budget < s.min_budget:
    raise ConfigError("search.max_budget", s.max_budget, f"below min_budget={s.min_budget}",
                      f">= {s.min_budget}")
  if not 0 < d.val_frac < 1 or not 0 < d.test_frac < 1 or d.val_frac + d.test_frac >= 0.9:
    raise ConfigError("data.val_frac", (d.val_frac, d.test_frac),
                      "fractions must leave training rows",
                      "0 < val_frac, test_frac and val_frac + test_frac < 0.9")
  unbounded = s.time_budget_s == 0 and s.max_trials == 0
  if s.scheduler == "asha" and unbounded:
    raise ConfigError("search.max_trials", 0, "asha needs max_trials or time_budget_s to stop",
                      "max_trials > 0 or time_budget_s > 0")
  if s.scheduler == "hyperband" and s.hyperband_iterations == 0 and unbounded:
    raise ConfigError("search.hyperband_iterations", 0,
                      "endless without max_trials or time_budget_s", ">= 1, or set a limit")
  if not (d.name.startswith("tfds:") or d.name in data_registry.DATASETS):
    from metajax.automl.data import names
    raise ConfigError("data.name", d.name, "unknown dataset", ", ".join(names()))
  require_positive(c, "selection.top_k", "selection.ensemble_rounds")
  require_positive(c, "selection.small_rows", allow_zero=True)
  if not 0 <= c.selection.time_share < 1:
    raise ConfigError("selection.time_share", c.selection.time_share,
                      "the share of time_budget_s kept for the final selection", "0 <= share < 1")
  if not 0 <= s.warm_frac <= 1:
    raise ConfigError("search.warm_frac", s.warm_frac, "a share of the first rung", "0 to 1")
  require_positive(c, "search.warm_neighbours", "search.warm_max_distance")
  if s.prior:
    from metajax.automl import warmstart
    warmstart.load_prior(s.prior)  # ConfigError for a missing or unreadable prior
  cache = c.get("compile_cache", "")
  if not isinstance(cache, str) or (cache and os.path.exists(os.path.expanduser(cache))
                                    and not os.path.isdir(os.path.expanduser(cache))):
    raise ConfigError("compile_cache", cache, "the compilation cache must be a directory",
                      "a directory path, or '' for no cache")
  for f in s.families:
    require_in("search.families", f, FAMILIES)
  fams = list(s.families) or list(FAMILIES)
  space_lib.check_space(c.space, fams)
  for f in fams:  # the neural families' optimizers are the switch's choices
    spec = dict(c.space[f]).get("optimizer") if f in NEURAL else None
    for o in spec[1] if spec and spec[0] == "choice" else ():
      require_in(f"space.{f}.optimizer", o, population.OPTIMIZERS)
