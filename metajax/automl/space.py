"""Search spaces declared in ml-collections configs, and their samplers.

A space is a ConfigDict (the default: `space` in configs/automl.py) holding, per family,
a ConfigDict of hyperparameters, each a tuple

  ('log_uniform', lo, hi) | ('uniform', lo, hi) | ('int', lo, hi) | ('choice', (a, b, ...))

so every family's hyperparameters are conditional on the family. A sampler
maps points of the unit cube (random or scrambled Sobol) to configurations.
Structural hyperparameters (layers, units, batch size) can be shared by
`group_size` consecutive samples. One program per family covers every mlp
architecture and every batch size (`population`), so sharing them no longer saves
compiles there; it keeps a population on one batch size (no idle steps) and, for cnn
and gru, whose layers and units are still compiled shapes, on one program.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from metajax.errors import ConfigError

KINDS = ("log_uniform", "uniform", "int", "choice")
# Hyperparameters that change array shapes: members sharing them share a compiled program.
STRUCTURAL = ("layers", "units", "batch_size", "embed")


def check_space(space, families: list[str]) -> None:
  """ConfigError for any malformed hyperparameter spec of `families`."""
  for fam in families:
    if fam not in space:
      raise ConfigError(f"space.{fam}", None, "the family has no search space", "a dict of specs")
    for name, spec in dict(space[fam]).items():
      key = f"space.{fam}.{name}"
      if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in KINDS:
        raise ConfigError(key, spec, "a spec is (kind, ...)", ", ".join(KINDS))
      kind = spec[0]
      if kind == "choice":
        if len(spec) != 2 or not isinstance(spec[1], (tuple, list)) or not spec[1]:
          raise ConfigError(key, spec, "choice needs a non-empty tuple", "('choice', (a, b))")
      else:
        if len(spec) != 3 or not spec[1] <= spec[2]:
          raise ConfigError(key, spec, "needs lo <= hi", f"('{kind}', lo, hi)")
        if kind == "log_uniform" and spec[1] <= 0:
          raise ConfigError(key, spec, "log_uniform needs lo > 0", "lo > 0")


def upper(space, family: str, name: str, default: int) -> int:
  """The largest value of a numeric hyperparameter in `family`'s space (`default` when the
  space has no such entry): the size its family's one compiled program is padded to."""
  spec = dict(space[family]).get(name) if family in space else None
  if spec is None:
    return default
  return int(max(spec[1]) if spec[0] == "choice" else spec[2])


def _decode(spec, u: float) -> Any:
  kind = spec[0]
  if kind == "choice":
    opts = list(spec[1])
    return opts[min(int(u * len(opts)), len(opts) - 1)]
  lo, hi = spec[1], spec[2]
  if kind == "uniform":
    return float(lo + u * (hi - lo))
  if kind == "log_uniform":
    return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
  return int(min(lo + int(u * (hi - lo + 1)), hi))  # int


def unit_points(n: int, dim: int, method: str, seed: int) -> np.ndarray:
  """[n, dim] points in [0, 1): i.i.d. uniform, or scrambled Sobol (quasi-random)."""
  if method == "random":
    return np.random.default_rng(seed).random((n, dim))
  if method == "sobol":
    from scipy.stats import qmc
    m = max(1, math.ceil(math.log2(max(n, 2))))
    return qmc.Sobol(dim, scramble=True, seed=seed).random_base2(m)[:n]
  raise ConfigError("sampler", method, "unknown sampler", "'random', 'sobol'")


def sample(space, families: list[str], n: int, method: str = "sobol", seed: int = 0,
           group_size: int = 1, offset: int = 0) -> list[dict[str, Any]]:
  """`n` configurations `{'family': f, **hyperparameters}` from `space`.

  Families are dealt round-robin over groups (in a seed-shuffled order), so every
  family gets its share; the other dimensions decode that family's specs in
  sorted-name order. With `group_size` > 1, each run of `group_size` samples
  takes its family and structural hyperparameters from the first of the run.
  `offset` skips the first points (to draw fresh configurations later).
  """
  dim = 1 + max(len(dict(space[f])) for f in families)
  pts = unit_points(n + offset, dim, method, seed)
  order = [families[i] for i in np.random.default_rng(seed).permutation(len(families))]
  out = []
  for i in range(offset, n + offset):
    u, lead = pts[i], pts[(i // group_size) * group_size]
    fam = order[(i // group_size) % len(order)]
    cfg = {"family": fam}
    for j, (name, spec) in enumerate(sorted(dict(space[fam]).items())):
      src = lead if name in STRUCTURAL else u
      cfg[name] = _decode(tuple(spec), float(src[j + 1]))
    out.append(cfg)
  return out
