"""`learned_rates.json`: meta-learned per-layer rates, self-describing, beside the checkpoints.

  {"format": "metajax.learned_rates", "version": 1, "estimator": "pes",
   "estimators": {"pes": {"mlp": {"layers": ["Dense_0", ...], "segments": 4,
                                  "inner_steps": 200, "batch_size": 32, "optimizer": "adam",
                                  "log_lr": [[...K] x L], "log_wd": [...L] | null,
                                  "model": {"name": "mlp", ...},
                                  "meta_train_datasets": [...]}, ...},
                  "tbptt": {...}}}

`estimator` names the one `load_learned_rates` returns by default (the config's first).
Segment k of a run of `inner_steps` steps covers steps [k*T/K, (k+1)*T/K).

  >>> rates = load_learned_rates('runs/hp_metalearn')        # doctest: +SKIP
  >>> rates.families['mlp'].learning_rate('Dense_0', step=0)  # doctest: +SKIP
  >>> rates.families['mlp'].global_log_lr()                   # one log LR to centre a search
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from metajax.errors import ConfigError

FILE = "learned_rates.json"
FORMAT, VERSION = "metajax.learned_rates", 1


@dataclasses.dataclass(frozen=True)
class FamilyRates:
  """One family's learned rates: log_lr [L, K] (layer x segment), log_wd [L] or None."""
  family: str
  layers: tuple
  segments: int
  inner_steps: int
  batch_size: int
  optimizer: str
  log_lr: np.ndarray
  log_wd: np.ndarray | None
  model: dict
  meta_train_datasets: tuple = ()

  def segment(self, step: int) -> int:
    return min(step * self.segments // max(self.inner_steps, 1), self.segments - 1)

  def learning_rate(self, layer: str, step: int = 0) -> float:
    """The learned rate of `layer` at inner step `step`."""
    return float(np.exp(self.log_lr[self.layers.index(layer), self.segment(step)]))

  def global_log_lr(self) -> float:
    """Mean log rate over layers and segments: one log learning rate to centre a search on."""
    return float(np.mean(self.log_lr))

  def hparams(self) -> dict:
    """The hyperparameter pytree `metajax.hpo.inner.Problem` takes (numpy arrays)."""
    hp = {"log_lr": np.asarray(self.log_lr, np.float32)}
    if self.log_wd is not None:
      hp["log_wd"] = np.asarray(self.log_wd, np.float32)
    return hp

  def to_json(self) -> dict:
    return {"layers": list(self.layers), "segments": self.segments,
            "inner_steps": self.inner_steps, "batch_size": self.batch_size,
            "optimizer": self.optimizer, "log_lr": np.asarray(self.log_lr).tolist(),
            "log_wd": None if self.log_wd is None else np.asarray(self.log_wd).tolist(),
            "model": self.model, "meta_train_datasets": list(self.meta_train_datasets)}

  @classmethod
  def from_json(cls, family: str, d: dict, where: str) -> "FamilyRates":
    try:
      log_lr = np.asarray(d["log_lr"], np.float64)
      log_wd = None if d.get("log_wd") is None else np.asarray(d["log_wd"], np.float64)
      out = cls(family, tuple(d["layers"]), int(d["segments"]), int(d["inner_steps"]),
                int(d["batch_size"]), str(d["optimizer"]), log_lr, log_wd, dict(d["model"]),
                tuple(d.get("meta_train_datasets", ())))
    except (KeyError, TypeError, ValueError) as e:
      raise ConfigError("learned_rates", where, f"family {family!r} is malformed ({e!r})",
                        f"a {FILE} written by metajax.hpo") from None
    if out.log_lr.shape != (len(out.layers), out.segments) or (
        out.log_wd is not None and out.log_wd.shape != (len(out.layers),)):
      raise ConfigError("learned_rates", where, f"family {family!r}: log_lr {out.log_lr.shape} "
                        f"does not match {len(out.layers)} layers x {out.segments} segments",
                        f"a {FILE} written by metajax.hpo")
    if not np.all(np.isfinite(out.log_lr)):
      raise ConfigError("learned_rates", where, f"family {family!r} has non-finite rates",
                        "finite log learning rates")
    return out


@dataclasses.dataclass(frozen=True)
class LearnedRates:
  """The rates of one estimator, by family."""
  estimator: str
  families: dict
  estimators: tuple = ()
  path: str = ""


def save_learned_rates(workdir: str, by_estimator: dict[str, dict[str, FamilyRates]],
                       primary: str) -> str:
  """Writes `<workdir>/learned_rates.json` atomically; returns its path."""
  from metajax.runlog import atomic_write
  if primary not in by_estimator:
    raise ValueError(f"primary estimator {primary!r} not among {sorted(by_estimator)}")
  doc = {"format": FORMAT, "version": VERSION, "estimator": primary,
         "estimators": {e: {f: r.to_json() for f, r in fams.items()}
                        for e, fams in by_estimator.items()}}
  path = os.path.join(workdir, FILE)
  atomic_write(path, json.dumps(doc, indent=1))
  return path


def load_learned_rates(workdir: str, estimator: str | None = None) -> LearnedRates:
  """The learned rates of an hp_metalearn run: `workdir` (or the JSON file itself).

  estimator: 'tbptt' | 'pes' (default: the one the run transferred, its config's first).
  ConfigError when the file is missing, of another format or version, or malformed.
  """
  path = workdir if workdir.endswith(".json") else os.path.join(workdir, FILE)
  if not os.path.isfile(path):
    raise ConfigError("learned_rates", path, "no such file",
                      "the workdir of a finished hp_metalearn run")
  try:
    with open(path) as f:
      doc = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError("learned_rates", path, f"unreadable ({e})", f"a {FILE}") from None
  if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
    got = doc if isinstance(doc, dict) else {}
    raise ConfigError("learned_rates", path, f"format {got.get('format')!r} version "
                      f"{got.get('version')!r}", f"{FORMAT} version {VERSION}")
  available = tuple(doc.get("estimators", {}))
  estimator = estimator or doc.get("estimator")
  if estimator not in available:
    raise ConfigError("learned_rates.estimator", estimator, f"not in {path}",
                      ", ".join(available))
  fams = {f: FamilyRates.from_json(f, d, path) for f, d in doc["estimators"][estimator].items()}
  return LearnedRates(estimator, fams, available, path)


def rates_of(problem, hp, family_spec, inner_spec) -> FamilyRates:
  """The `FamilyRates` record of hyperparameters `hp` of a `metajax.hpo.inner.Problem`."""
  log_wd = hp.get("log_wd")
  return FamilyRates(family_spec.name, tuple(problem.names), inner_spec.segments,
                     inner_spec.steps, inner_spec.batch_size, inner_spec.optimizer,
                     np.asarray(hp["log_lr"], np.float64),
                     None if log_wd is None else np.asarray(log_wd, np.float64),
                     {k: list(v) if isinstance(v, tuple) else v for k, v in family_spec.model},
                     tuple(family_spec.train_datasets))

