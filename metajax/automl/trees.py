"""scikit-learn families under the same scheduler: tree ensembles and a linear model.

A trial's state is its fitted estimator. For the tree ensembles budget = trees or
iterations: a promotion grows the estimator with `warm_start` (more trees for the random
forest, more boosting iterations for gradient boosting) instead of refitting from scratch.
`linear` is a logistic regression (on TF-IDF word 1-2-grams for texts,
`data.TextPrep`, else on the flat features): it is fitted to convergence once, at its first
budget, in well under a second on thousands of documents, and promotions keep it as it is.
"""

from __future__ import annotations

import math
import pickle
import time

import numpy as np
from threadpoolctl import threadpool_limits


def _weights(hp: dict):
  cw = hp.get("class_weight", "none")
  return None if cw in ("none", "", None) else cw


def make(family: str, hp: dict, seed: int):
  """A fresh estimator for `family` ('rf' | 'gbm' | 'linear') with hyperparameters `hp`."""
  if family == "rf":
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(
        n_estimators=0, warm_start=True, random_state=seed, n_jobs=1,
        max_depth=hp.get("max_depth") or None, max_features=hp.get("max_features", "sqrt"),
        min_samples_leaf=int(hp.get("min_samples_leaf", 1)),
        criterion=hp.get("criterion", "gini"), class_weight=_weights(hp))
  if family == "gbm":
    from sklearn.ensemble import HistGradientBoostingClassifier
    return HistGradientBoostingClassifier(
        max_iter=0, warm_start=True, early_stopping=False, random_state=seed,
        learning_rate=hp.get("learning_rate", 0.1), max_leaf_nodes=int(hp.get("max_leaf_nodes", 31)),
        l2_regularization=hp.get("l2_regularization", 0.0),
        min_samples_leaf=int(hp.get("min_samples_leaf", 20)),
        max_depth=hp.get("max_depth") or None, max_features=float(hp.get("max_features", 1.0)),
        class_weight=_weights(hp))
  if family == "linear":
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=float(hp.get("C", 1.0)), max_iter=int(hp.get("max_iter", 300)),
                              class_weight=_weights(hp), random_state=seed)
  raise ValueError(family)


def grow(family: str, hp: dict, seed: int, est, budget: float, per_unit: int, X, y,
         stop=lambda: False):
  """Grows `est` (None: new) to `ceil(budget * per_unit)` trees/iterations on (X [N, D], y [N]).

  Grows in doubling chunks and checks stop() (the time budget) between them.
  Returns (estimator, seconds, estimated peak bytes, budget reached). Peak bytes:
  the float64 copy of X that scikit-learn trains on plus the fitted model's
  pickled size (tracemalloc would be exact but slows fitting by an order of
  magnitude under pytest).
  """
  if family == "linear":  # no budget axis: fitted once
    t0 = time.perf_counter()
    if est is None:
      est = make(family, hp, seed)
      with threadpool_limits(1):
        est.fit(X, y)
    nbytes = getattr(X, "data", X).nbytes + len(pickle.dumps(est))
    return est, time.perf_counter() - t0, nbytes, budget
  if est is None:
    est = make(family, hp, seed)
    if family == "rf" and est.class_weight == "balanced":  # as weights: warm starts keep them
      from sklearn.utils.class_weight import compute_class_weight
      classes = np.unique(y)
      est.set_params(class_weight=dict(zip(classes, compute_class_weight(
          "balanced", classes=classes, y=y))))
  key = "n_estimators" if family == "rf" else "max_iter"
  target = max(1, math.ceil(budget * per_unit))
  n = est.get_params()[key]
  t0 = time.perf_counter()
  while n < target:
    n = min(target, max(2 * n, n + per_unit))
    est.set_params(**{key: n})
    with threadpool_limits(1):  # OpenMP spin-waits badly on a shared, oversubscribed CPU
      est.fit(X, y)
    if n < target and stop():
      break
  secs = time.perf_counter() - t0
  reached = budget if n >= target else n / per_unit
  return est, secs, X.shape[0] * X.shape[1] * 8 + len(pickle.dumps(est)), reached


def predict_proba(est, X, num_classes: int) -> np.ndarray:
  """[N, C] probabilities over all classes (classes absent from training get 0)."""
  with threadpool_limits(1):
    p = est.predict_proba(X)
  out = np.zeros((X.shape[0], num_classes), np.float32)
  out[:, est.classes_] = p
  return out
