"""Greedy ensemble selection with replacement (Caruana et al., ICML 2004), as in auto-sklearn
and AutoGluon: starting from the best single model, repeatedly add the member (possibly
again) whose addition most improves the metric of the averaged probabilities.
"""

from __future__ import annotations

import numpy as np

from metajax.automl import search


def caruana(probs: list[np.ndarray], y: np.ndarray, metric: str, rounds: int):
  """Weights [M] (summing to 1) over members with probabilities probs[m]: [N, C] on labels
  y [N], after `rounds` greedy additions; and the ensemble's score (higher is better).

  Members are tried in the given order, so on a tie the earlier (better-ranked) one is added.
  """
  counts = np.zeros(len(probs))
  total = np.zeros_like(probs[0], dtype=np.float64)
  best_score = -np.inf
  best_counts = counts.copy()
  for r in range(rounds):
    scores = [search.score(metric, y, (total + p) / (r + 1)) for p in probs]
    scores = [s if np.isfinite(s) else -np.inf for s in scores]
    m = int(np.argmax(scores))
    counts[m] += 1
    total += probs[m]
    if scores[m] > best_score + 1e-12:  # keep the best prefix of the greedy path
      best_score, best_counts = scores[m], counts.copy()
  return best_counts / best_counts.sum(), float(best_score)


def average(probs: list[np.ndarray], weights) -> np.ndarray:
  """The weighted mean [N, C] of members' probabilities (weights sum to 1)."""
  return sum(w * p for w, p in zip(weights, probs) if w > 0).astype(np.float32)
