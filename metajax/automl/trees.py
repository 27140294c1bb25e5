"""Tree ensembles from scikit-learn under the same scheduler: budget = trees or iterations.

A trial's state is its fitted estimator; a promotion grows it with `warm_start`
(more trees for the random forest, more boosting iterations for gradient
boosting) instead of refitting from scratch.
"""

from __future__ import annotations

import math
import pickle
import time

import numpy as np
from threadpoolctl import threadpool_limits


def make(family: str, hp: dict, seed: int):
  """A fresh estimator for `family` ('rf' | 'gbm') with hyperparameters `hp`."""
  if family == "rf":
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(
        n_estimators=0, warm_start=True, random_state=seed, n_jobs=1,
        max_depth=hp.get("max_depth") or None, max_features=hp.get("max_features", "sqrt"),
        min_samples_leaf=int(hp.get("min_samples_leaf", 1)))
  if family == "gbm":
    from sklearn.ensemble import HistGradientBoostingClassifier
    return HistGradientBoostingClassifier(
        max_iter=0, warm_start=True, early_stopping=False, random_state=seed,
        learning_rate=hp.get("learning_rate", 0.1), max_leaf_nodes=int(hp.get("max_leaf_nodes", 31)),
        l2_regularization=hp.get("l2_regularization", 0.0),
        min_samples_leaf=int(hp.get("min_samples_leaf", 20)))
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
  est = make(family, hp, seed) if est is None else est
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
  out = np.zeros((len(X), num_classes), np.float32)
  out[:, est.classes_] = p
  return out
