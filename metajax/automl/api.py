"""`AutoML`: the scikit-learn-style front end of the search, and the saved-run loader.

  automl = AutoML(time_budget_s=60, metric="accuracy").fit(X, y)   # or .fit("wine")
  automl.leaderboard[:3]; automl.best_; automl.predict(X_new); automl.evaluate(X_te, y_te)
  automl.save("model.pkl"); AutoML.load("model.pkl").predict(X_new)
  metajax.load_trained(workdir)   # the model an experiment run selected (`load_run`)
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import uuid
import warnings
from typing import Any

import ml_collections
import numpy as np

from metajax import data as data_registry, parallel
from metajax.automl import config as config_lib, data as data_lib, engine, metafeatures
from metajax.automl import population, schema, search, selection, warmstart
from metajax.errors import ConfigError

MODEL_FILE = "model.pkl"  # beside model.json in an experiment's workdir
GROUPS = ("data", "search", "selection")  # AutoML(**kw) finds a flat key such as scheduler= here


class AutoML:
  """Searches model families and hyperparameters for a classification dataset.

  time_budget_s: wall-clock budget of the search and the final selection together (0: the
    scheduler's own end); the search stops at (1 - selection.time_share) of it.
  metric: 'accuracy' | 'balanced_accuracy' | 'f1' | 'log_loss'.
  Any other keyword overrides a key of configs/automl.py, by its name in `data` or
  `search` (scheduler='asha', families=('mlp', 'gbm'), max_budget=9, val_frac=0.3, ...)
  or a top-level one (seed=1, space=...).
  state_path / store_path: resumable search state and experience store (optional). With a
  store, the search first reuses the best configurations of the nearest past datasets
  (warm_start=False: it does not read the store) and records its trials there.
  prior: learned learning rates (a dict, a list of configurations or a path:
  `metajax.automl.warmstart.load_prior`); the first rung samples learning rates around them.
  After fit, `warm_start_` says what was reused and from which datasets.

  After the search, `selection.finalize` picks the model in the time left: the top
  configurations re-scored out of fold on small data, a greedy ensemble when it scores
  better, a refit on train+validation where it fits (`selection_` says what it did; a
  `UserWarning` when the rows cannot separate the top two). `best_['members']` lists the model's members.
  Tables: a DataFrame's column names are the schema that `predict` checks (reordered columns
  are matched by name; missing, extra or renamed ones are a DataError).
  """

  def __init__(self, time_budget_s: float = 60.0, metric: str = "accuracy",
               state_path: str | None = None, store_path: str | None = None, prior=None,
               **overrides):
    cfg = config_lib.default_config()
    cfg.search.time_budget_s = float(time_budget_s)
    cfg.search.metric = metric
    cfg.baselines.enabled = False
    if time_budget_s and "hyperband_iterations" not in overrides:
      cfg.search.hyperband_iterations = 0  # keep bracketing until the time budget
    for k, v in overrides.items():
      group = next((g for g in GROUPS if k in cfg[g]), None)
      if group is not None:
        cfg[group][k] = v
      elif k in cfg and k not in GROUPS + ("experiment",):
        cfg[k] = v
      else:
        valid = sorted(set().union(*(cfg[g] for g in GROUPS)) | {"seed", "space", "num_devices"})
        raise ConfigError(k, v, "not an AutoML option", ", ".join(valid))
    if isinstance(prior, str):
      cfg.search.prior = prior
    config_lib.validate(cfg)
    if prior is not None and not isinstance(prior, str):
      warmstart.load_prior(prior)  # ConfigError before any work
    self.config, self.state_path, self.store_path = cfg, state_path, store_path
    self.prior = None if isinstance(prior, str) else prior
    self.warm_start_: dict[str, Any] | None = None
    self.leaderboard: list[dict[str, Any]] = []
    self.best_: dict[str, Any] | None = None
    self.selection_: dict[str, Any] | None = None  # what the final selection did (after fit)

  def fit(self, X, y=None, modality: str | None = None, name: str = "user-data") -> "AutoML":
    """Searches on a dataset name (`fit('wine')`) or arrays: X [N, D] table (numbers,
    strings, missing values), [N, H, W(, C)] images, or a list of N texts; y [N]."""
    cfg = self.config
    if isinstance(X, str):
      cfg.data.name = key = X
      ds = data_lib.load(X, cfg.data.data_dir, cfg.data.max_rows, cfg.seed)
    else:
      if y is None:
        raise data_lib.DataError("data.y", None, "fit(X, y) needs labels",
                                 "y with one label per row")
      modality = modality or ("text" if isinstance(X, list) and X and isinstance(X[0], str)
                              else "image" if np.ndim(X) >= 3 else "table")
      if modality == "table":
        schema.check_fit(X)  # empty tables, duplicate names: before any work
      ds = data_lib.Dataset(name, modality, X, np.asarray(y))
      cfg.data.name = name  # not a registry name: evaluate() then needs its data given
      key = f"{name}@{metafeatures.fingerprint(X, y)}"  # its key in the experience store
    d = cfg.data
    fams = config_lib.families_for(cfg, ds.modality)
    prep = data_lib.prepare(ds, cfg.seed, d.val_frac, d.test_frac, d.seq_len, d.vocab_size,
                            linear="linear" in fams)
    # unique per search (stable for a resumable one), so concurrent searches never share rows
    tag = (hashlib.sha1(os.path.abspath(self.state_path).encode()).hexdigest()[:8]
           if self.state_path else uuid.uuid4().hex[:8])
    programs = population.Programs(parallel.make_mesh(cfg.num_devices or None))
    ex = engine.run_search(prep, cfg, fams, self.state_path, self.store_path,
                           f"api-{key}-s{cfg.seed}-{tag}", programs=programs, dataset=key,
                           prior=self.prior)
    self.warm_start_ = ex.warm.summary()
    final = selection.finalize(ex)
    if final is None:
      raise RuntimeError("every trial failed (non-finite losses); see .leaderboard")
    self._ex, self._final = ex, final
    self._take(ex, final)
    for w in final.info["warnings"]:
      warnings.warn(f"AutoML.fit: {w}", stacklevel=2)
    return self

  def _take(self, ex: search.Executor, final: selection.Final) -> None:
    """Keeps the selected model of a finished search (`selection.finalize`)."""
    best = final.trial
    self.prep, self._programs = ex.prep, ex.programs
    self.leaderboard = [dict(id=t.id, family=t.family, **t.hp, budget=t.budget,
                             val_score=t.score if math.isfinite(t.score) else None,
                             status=t.status, train_s=t.cost_s, compile_s=t.compile_s)
                        for t in search.leaderboard(ex.trials.values())]
    ens = len(final.members) > 1
    self.best_ = dict(id=best.id, family="ensemble" if ens else best.family,
                      hparams={} if ens else dict(best.hp), budget=best.budget,
                      val_score=final.info["score"], test=final.test,
                      members=[dict(id=m["id"], family=m["family"], weight=m["weight"])
                               for m in final.members])
    self.selection_ = {k: v for k, v in final.info.items()}
    self._model = dict(members=final.members)

  @classmethod
  def from_search(cls, config, ex: search.Executor, final: selection.Final) -> "AutoML":
    """The fitted model of a finished search (an experiment run's selection)."""
    obj = cls.__new__(cls)
    obj.config, obj.state_path, obj.store_path = config, None, None
    obj._take(ex, final)
    return obj

  # ---------------------------------------------------------------- prediction
  def _features(self, X, view: str):
    p = self.prep.prep
    if isinstance(p, data_lib.TextPrep):
      return p.features(list(X), view)
    x = p.transform(X, warn=True)
    return x.reshape(len(x), -1) if view in ("flat", "linear") else x

  def predict_proba(self, X) -> np.ndarray:
    """[N, C] class probabilities (columns in the order of `classes_`); the weighted mean of
    the members' for an ensemble. DataError if they are not finite (never a silent guess)."""
    if getattr(self, "_programs", None) is None:
      self._programs = population.Programs(parallel.make_mesh())
    prob = selection.predict_members(self.prep, self._model["members"],
                                     lambda view: self._features(X, view), self._programs)
    bad = ~np.isfinite(prob).all(1)
    if bad.any():
      raise data_lib.DataError("X", f"rows {np.flatnonzero(bad)[:10].tolist()}",
                               "the model gives non-finite probabilities for these rows",
                               "finite inputs")
    return prob

  def predict(self, X) -> np.ndarray:
    """[N] predicted labels (original label values)."""
    return self.prep.classes[self.predict_proba(X).argmax(1)]

  def evaluate(self, X=None, y=None) -> dict[str, float]:
    """Test accuracy, macro F1, log-loss and rows on (X, y); without them, on the test split
    of the dataset the model was fitted on (reloaded and split with the fit's seed)."""
    if X is None:
      d = self.config.data
      if d.name not in data_registry.DATASETS and not d.name.startswith("tfds:"):
        raise ConfigError("data.name", d.name, "evaluate() without data needs a registered "
                          "dataset", "evaluate(X, y)")
      ds = data_lib.load(d.name, d.data_dir, d.max_rows, self.config.seed)
      X, y = data_lib.test_rows(ds, self.config.seed, d.val_frac, d.test_frac)
    enc = {str(c): i for i, c in enumerate(self.prep.classes)}
    y = np.asarray(y)
    keep = np.array([str(v) in enc for v in y])  # labels never seen in training cannot count
    X = data_lib.take(X, np.flatnonzero(keep))
    yi = np.array([enc[str(v)] for v in y[keep]], np.int32)
    return dict(search.test_metrics(yi, self.predict_proba(X)), rows=int(keep.sum()))

  @property
  def classes_(self) -> np.ndarray:
    return self.prep.classes

  # ---------------------------------------------------------------- persistence
  def save(self, path: str) -> str:
    """Pickles the selected model, its preprocessing and the leaderboard to `path`."""
    from metajax.runlog import atomic_write
    slim = data_lib.Prepared(self.prep.name, self.prep.modality, self.prep.classes, {},
                             ((), (), ()), self.prep.notes, self.prep.prep, self.prep.meta)
    atomic_write(path, pickle.dumps(dict(config=self.config.to_dict(), prep=slim,
                                         model=self._model, leaderboard=self.leaderboard,
                                         best=self.best_, selection=self.selection_)))
    return path

  @classmethod
  def load(cls, path: str) -> "AutoML":
    """The model `save` wrote to `path` (reads only)."""
    with open(path, "rb") as f:
      d = pickle.load(f)
    obj = cls.__new__(cls)
    obj.config = ml_collections.ConfigDict(d["config"])
    obj.prep, obj._model = d["prep"], d["model"]
    if "members" not in obj._model:  # saved before ensembles: one member
      obj._model = dict(members=[dict(obj._model, id=d["best"]["id"], weight=1.0)])
    obj.selection_ = d.get("selection", {})
    obj.leaderboard, obj.best_ = d["leaderboard"], d["best"]
    obj.state_path = obj.store_path = obj._programs = None
    return obj


def load_run(workdir: str, card: dict) -> AutoML:
  """The model an AutoML experiment selected, from its workdir (`metajax.load_trained`).

  card: the run's model.json ({'kind': 'automl', 'file': 'model.pkl', ...}); reads only.
  """
  path = os.path.join(workdir, card.get("file", MODEL_FILE))
  if not os.path.isfile(path):
    raise ConfigError("workdir", workdir, f"holds no {os.path.basename(path)} (the AutoML run "
                      "selected no model, or has not finished)", "the workdir of a finished run")
  return AutoML.load(path)
