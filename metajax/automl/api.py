"""`AutoML`: the scikit-learn-style front end of the search.

  automl = AutoML(time_budget_s=60, metric="accuracy").fit(X, y)   # or .fit("wine")
  automl.leaderboard[:3]; automl.best_; automl.predict(X_new)
  automl.save("model.pkl"); AutoML.load("model.pkl").predict(X_new)
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np

from metajax import parallel
from metajax.automl import config as config_lib, data as data_lib, datasets, experiment, search
from metajax.automl import population
from metajax.errors import ConfigError


class AutoML:
  """Searches model families and hyperparameters for a classification dataset.

  time_budget_s: wall-clock budget of the search (0: the scheduler's own end).
  metric: 'accuracy' | 'balanced_accuracy' | 'f1' | 'log_loss'.
  Any other keyword overrides a key of `metajax.automl.config.default_config()`
  (scheduler='asha', families=('mlp', 'gbm'), max_budget=9, ...).
  state_path / store_path: resumable search state and experience store (optional).
  """

  def __init__(self, time_budget_s: float = 60.0, metric: str = "accuracy",
               state_path: str | None = None, store_path: str | None = None, **overrides):
    cfg = config_lib.default_config()
    cfg.time_budget_s = float(time_budget_s)
    cfg.metric = metric
    cfg.baselines = False
    if time_budget_s and "hyperband_iterations" not in overrides:
      cfg.hyperband_iterations = 0  # keep bracketing until the time budget
    for k, v in overrides.items():
      if k not in cfg:
        raise ConfigError(k, v, "not an AutoML option", ", ".join(sorted(cfg.keys())))
      cfg[k] = v
    config_lib.validate(cfg)
    self.config, self.state_path, self.store_path = cfg, state_path, store_path
    self.leaderboard: list[dict[str, Any]] = []
    self.best_: dict[str, Any] | None = None

  def fit(self, X, y=None, modality: str | None = None, name: str = "user-data") -> "AutoML":
    """Searches on a dataset name (`fit('wine')`) or arrays: X [N, D] table (numbers,
    strings, missing values), [N, H, W(, C)] images, or a list of N texts; y [N]."""
    cfg = self.config
    if isinstance(X, str):
      ds = datasets.load(X, cfg.data_dir, cfg.max_rows, cfg.seed)
    else:
      if y is None:
        raise data_lib.DataError("data.y", None, "fit(X, y) needs labels", "y with one label per row")
      modality = modality or ("text" if isinstance(X, list) and X and isinstance(X[0], str)
                              else "image" if np.ndim(X) >= 3 else "table")
      ds = data_lib.Dataset(name, modality, X, np.asarray(y))
    fams = config_lib.families_for(cfg, ds.modality)
    prep = data_lib.prepare(ds, cfg.seed, cfg.val_frac, cfg.test_frac, cfg.seq_len, cfg.vocab_size)
    store = None
    if self.store_path:
      from metajax.automl.store import ExperienceStore
      store = ExperienceStore(self.store_path)
    ex = experiment.run_search(prep, cfg, fams, self.state_path, store, f"api-{name}-{cfg.seed}")
    best, test = experiment.evaluate_best(ex)
    self._ex, self.prep = ex, prep
    self.leaderboard = [dict(id=t.id, family=t.family, **t.hp, budget=t.budget,
                             val_score=t.score if math.isfinite(t.score) else None,
                             status=t.status, train_s=t.cost_s)
                        for t in search.leaderboard(ex.trials.values())]
    if best is None:
      raise RuntimeError("every trial failed (non-finite losses); see .leaderboard")
    self.best_ = dict(id=best.id, family=best.family, hparams=dict(best.hp), budget=best.budget,
                      val_score=best.score, test=test)
    self._model = dict(family=best.family, hp=dict(best.hp), state=ex.states[best.id],
                       arch=ex.arch(best) if best.family in search.NN else None)
    return self

  # ---------------------------------------------------------------- prediction
  def _features(self, X) -> np.ndarray:
    view, p = search.VIEW[self._model["family"]], self.prep.prep
    if isinstance(p, data_lib.TextPrep):
      return p.ids(list(X)) if view == "ids" else p.bow(list(X))
    x = p.transform(X)
    return x.reshape(len(x), -1) if view == "flat" else x

  def predict_proba(self, X) -> np.ndarray:
    """[N, C] class probabilities (columns in the order of `classes_`)."""
    m = self._model
    if not hasattr(self, "_programs"):
      self._programs = population.Programs(parallel.make_mesh())
    return search.predict_proba(self.prep, m["family"], m["hp"], m["state"], self._features(X),
                                self._programs, m["arch"])

  def predict(self, X) -> np.ndarray:
    """[N] predicted labels (original label values)."""
    classes = self.prep.classes
    return classes[self.predict_proba(X).argmax(1)]

  @property
  def classes_(self) -> np.ndarray:
    return self.prep.classes

  # ---------------------------------------------------------------- persistence
  def save(self, path: str) -> str:
    """Pickles the selected model, its preprocessing and the leaderboard to `path`."""
    from metajax.runlog import atomic_write
    slim = data_lib.Prepared(self.prep.name, self.prep.modality, self.prep.classes, {},
                             ((), (), ()), self.prep.notes,
                             self.prep.prep, self.prep.meta)
    atomic_write(path, pickle.dumps(dict(config=self.config.to_dict(), prep=slim,
                                         model=self._model, leaderboard=self.leaderboard,
                                         best=self.best_)))
    return path

  @classmethod
  def load(cls, path: str) -> "AutoML":
    with open(path, "rb") as f:
      d = pickle.load(f)
    obj = cls.__new__(cls)
    import ml_collections
    obj.config = ml_collections.ConfigDict(d["config"])
    obj.prep, obj._model = d["prep"], d["model"]
    obj.leaderboard, obj.best_ = d["leaderboard"], d["best"]
    obj.state_path = obj.store_path = None
    return obj
