"""Dataset meta-features for warm starts: descriptors, landmarkers, a fingerprint, a distance.

`describe(prep)` extends the prepared dataset's descriptors (`Prepared.meta`: rows,
features, classes, class entropy, minority share, missing and categorical fractions,
modality, mean |corr(feature, label)|) with three landmarkers: the held-out accuracy of
a decision stump, Gaussian naive Bayes and 1-nearest-neighbour on a fixed subsample of
the training split (milliseconds). `distance(a, b)` compares two descriptions on fixed
scales, so it does not depend on which other datasets happen to be stored.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

LANDMARKS = ("lm_stump", "lm_nb", "lm_1nn")
# Every stored meta-feature (the experience store keeps each as a column too).
KEYS = ("n_rows", "log_rows", "n_features", "log_features", "n_classes", "class_entropy",
        "minority_frac", "missing_frac", "categorical_frac", "is_table", "is_image",
        "is_text", "mean_abs_corr") + LANDMARKS
# The scale of each compared feature: a difference of one scale adds 1 to the mean square.
# counts are compared as logs (n_classes as log2); the modality must match (else the distance is inf).
SCALES = {"log_rows": 1.0, "log_features": 1.0, "n_classes": 1.0, "class_entropy": 0.25,
          "minority_frac": 0.25, "missing_frac": 0.25, "categorical_frac": 0.5,
          "mean_abs_corr": 0.25, "lm_stump": 0.25, "lm_nb": 0.25, "lm_1nn": 0.25}
MODALITY = ("is_table", "is_image", "is_text")


def fingerprint(X, y) -> str:
  """A 12-hex-digit content hash of (X, y): arrays of numbers, object arrays or lists of texts."""
  h = hashlib.sha1()
  for a in (X, y):
    try:
      arr = np.asarray(a)
    except ValueError:  # ragged
      arr = np.asarray(a, dtype=object)
    if arr.dtype.kind in "OUS":  # strings (or mixed): by their text, whatever the container
      h.update(f"str{arr.shape}".encode())
      h.update("\x1f".join(map(str, arr.ravel())).encode())
    else:
      h.update(f"{arr.dtype}{arr.shape}".encode())
      h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()[:12]


def landmarks(x: np.ndarray, y: np.ndarray, rows: int = 600, features: int = 256
              ) -> dict[str, float]:
  """Held-out accuracy of three cheap learners on a fixed subsample of (x [N, D], y [N]):
  at most `rows` rows and `features` columns, the first two thirds to fit, the rest to score."""
  from sklearn.naive_bayes import GaussianNB
  from sklearn.neighbors import KNeighborsClassifier
  from sklearn.tree import DecisionTreeClassifier
  rng = np.random.default_rng(0)
  idx = rng.permutation(len(y))[:rows]
  cols = np.sort(rng.permutation(x.shape[1])[:features])  # spread over the image, not its top
  x = np.nan_to_num(np.asarray(x, np.float64)[idx][:, cols])
  y = np.asarray(y)[idx]
  cut = max(1, (2 * len(y)) // 3)
  if cut >= len(y) or x.shape[1] == 0 or len(np.unique(y[:cut])) < 2:
    return {k: 0.0 for k in LANDMARKS}
  out = {}
  for k, model in (("lm_stump", DecisionTreeClassifier(max_depth=1, random_state=0)),
                   ("lm_nb", GaussianNB()), ("lm_1nn", KNeighborsClassifier(1))):
    try:
      out[k] = float((model.fit(x[:cut], y[:cut]).predict(x[cut:]) == y[cut:]).mean())
    except ValueError:  # a degenerate subsample: no landmark rather than no search
      out[k] = 0.0
  return out


def describe(prep) -> dict[str, float]:
  """`prep.meta` plus the landmarkers of its training split (floats, the keys of KEYS)."""
  meta = {k: float(v) for k, v in prep.meta.items()}
  meta.update(landmarks(prep.views["flat"][0], prep.y[0]))
  return meta


def distance(a: dict, b: dict) -> float:
  """Root mean square of the scaled differences over the features both describe;
  inf when the modalities differ or nothing is comparable."""
  a, b = _derived(a), _derived(b)
  if any(a.get(k, 0.0) != b.get(k, 0.0) for k in MODALITY):
    return math.inf
  sq = []
  for k, scale in SCALES.items():
    va, vb = a.get(k), b.get(k)
    if va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb):
      sq.append(((va - vb) / scale) ** 2)
  return math.sqrt(sum(sq) / len(sq)) if sq else math.inf


def _derived(m: dict) -> dict[str, float]:
  """Floats of `m`, with log-scale rows, features and classes (from the counts if need be)."""
  out = {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}
  for log, count in (("log_rows", "n_rows"), ("log_features", "n_features")):
    if log not in out and count in out:
      out[log] = math.log10(max(out[count], 1.0))
  if "n_classes" in out:
    out["n_classes"] = math.log2(max(out["n_classes"], 1.0))
  return out
