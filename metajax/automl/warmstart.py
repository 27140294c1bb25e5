"""Warm starts: the experience store read before a search, and the prior of learned rates.

`plan(prep, cfg, fams, store, run_id, ...)` runs before every search. It describes the
dataset (`metafeatures.describe`), opens the store (a bad one is left untouched and the
search starts cold, unrecorded), finds the past datasets within
`search.warm_max_distance` (at most `search.warm_neighbours`), and takes their best
finished configurations, round-robin from the nearest, as a portfolio that fills at most
`search.warm_frac` of the first rung; the rest of the rung is the cold sampler's sequence,
so exploration stays. A neural configuration comes with siblings of the same architecture
and learning rates spread around its own, up to the group size, so the population its
architecture compiles for is filled with a local search instead of padding. A `prior`
(learned learning rates, `load_prior`) adds its configurations first and centres the
learning rates of the first rung's sampled neural trials on its log learning rate.

The plan is saved beside the search state, so a resumed search replays the same first
rung whatever the store holds by then. `Plan.store` is where the search records (None:
nothing is written); `Plan.summary()` says what was reused, for the report and
result.json, and `Plan.message` says it in one line on the console.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
from typing import Any

import numpy as np

from metajax.automl import metafeatures
from metajax.automl.config import NEURAL
from metajax.automl.store import ExperienceStore, StoreError
from metajax.errors import ConfigError

LR_STD = 0.5  # spread of sampled log learning rates around a centre (natural log)


@dataclasses.dataclass
class Plan:
  """What a search takes from the store and the prior (see the module docstring).

  portfolio: configurations {'family', **hp} for trials 0..len-1; reused: one dict per
    portfolio entry saying where it came from; lr_prior: `load_prior(...)['lr']`.
  """
  dataset: str
  meta: dict
  first_rung: int
  store: Any = None
  store_path: str | None = None
  warm_start: bool = True
  portfolio: list = dataclasses.field(default_factory=list)
  reused: list = dataclasses.field(default_factory=list)
  neighbours: list = dataclasses.field(default_factory=list)
  lr_prior: dict | None = None
  seed: int = 0
  message: str = ""

  def sampler(self, cold):
    """The cold `search.Sampler`, or a WarmSampler in front of it."""
    return WarmSampler(cold, self) if self.portfolio or self.lr_prior else cold

  def centred(self, c: dict, i: int, space) -> dict:
    """Configuration `c` (trial i) with its learning rate drawn around the prior's centre
    for its family (and the optimizer the rates were learned for, if the space has it)."""
    p, fam = self.lr_prior, c["family"]
    if fam not in p["log_lr"] or "learning_rate" not in c:
      return c
    z = float(np.clip(np.random.default_rng([self.seed, i]).normal(), -2.0, 2.0))
    out = dict(c, learning_rate=_clip(space, fam, "learning_rate",
                                      math.exp(p["log_lr"][fam] + p["std"] * z)))
    opt, spec = p.get("optimizer", {}).get(fam), dict(space[fam]).get("optimizer")
    if opt and spec and spec[0] == "choice" and opt in spec[1]:
      out["optimizer"] = opt
    return out

  def summary(self) -> dict:
    """JSON-ready: what was reused, from which datasets, and where the search is recorded."""
    return dict(enabled=self.warm_start, dataset=self.dataset, message=self.message,
                store=self.store_path,
                recorded=self.store is not None and not self.store.failed,
                first_rung=self.first_rung, warm_trials=len(self.portfolio),
                neighbours=[dict(dataset=n, distance=round(d, 4)) for n, d in self.neighbours],
                reused=self.reused, lr_prior=self.lr_prior)

  def report_lines(self) -> list[str]:
    """The report's bullet points."""
    out = [self.message or "no experience store and no prior: cold start"]
    for r in self.reused:
      hp = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(r["hp"].items()))
      if r["source"] == "store":
        src = (f"from {r['dataset']} (distance {r['distance']:.3g}, its run {r['run_id']} "
               f"trial #{r['past_trial']}, val {_fmt(r['val_score'])})")
      elif r["source"] == "sibling":
        src = f"sibling of trial #{r['of']} (its learning rate spread)"
      else:
        src = "from the prior"
      out.append(f"trial #{r['trial']}: {r['family']} {hp}, {src}")
    if self.lr_prior:
      p = self.lr_prior
      around = ", ".join(f"{f}: {math.exp(v):.3g}" + (f" ({p['optimizer'][f]})"
                                                       if p.get("optimizer", {}).get(f) else "")
                         for f, v in sorted(p["log_lr"].items()))
      out.append(f"the first rung's sampled learning rates drawn around the prior's "
                 f"({around}; log-std {p['std']:g})")
    return out


class WarmSampler:
  """`search.Sampler`'s interface: the portfolio first, then the cold sampler's sequence."""

  def __init__(self, cold, plan: Plan):
    self.cold, self.plan, self.n = cold, plan, 0

  def take(self, k: int) -> list[tuple[int, dict]]:
    out = []
    for _ in range(k):
      i = self.n
      if i < len(self.plan.portfolio):
        c = dict(self.plan.portfolio[i])
      else:
        c = dict(self.cold.take(1)[0][1])
        if self.plan.lr_prior and i < self.plan.first_rung:
          c = self.plan.centred(c, i, self.cold.space)
      out.append((i, c))
      self.n += 1
    return out


# ------------------------------------------------------------------ the plan
def first_rung(cfg) -> int:
  """Trials the scheduler starts at its lowest budget first (SH: n_trials; Hyperband: the
  largest bracket; ASHA: one wave), capped by max_trials."""
  from metajax.automl import search
  s = cfg.search
  if s.scheduler == "sh":
    n = s.n_trials
  elif s.scheduler == "hyperband":
    n = int(s.eta) ** (len(search.budgets(s.min_budget, s.max_budget, int(s.eta))) - 1)
  else:
    n = s.asha_workers
  return min(n, s.max_trials) if s.max_trials and s.scheduler != "sh" else n


def plan(prep, cfg, fams, store=None, run_id: str = "", state_path: str | None = None,
         dataset: str | None = None, prior=None) -> Plan:
  """The warm start of a search on `prep` (see the module docstring); prints its one line.

  store: a path or an ExperienceStore (None: none); dataset: the key of `prep` in it
  (default prep.name); prior: learned rates for `load_prior` (default cfg.search.prior).
  """
  from metajax import runlog
  s = cfg.search
  p = Plan(dataset or prep.name, dict(prep.meta), first_rung(cfg),
           warm_start=bool(s.warm_start), seed=int(cfg.seed))
  notes = []
  store = store or None
  st = store if isinstance(store, ExperienceStore) else None
  if store is not None and st is None:
    p.store_path = os.path.abspath(os.path.expanduser(store))
    try:
      st = ExperienceStore(store)
    except (StoreError, OSError) as e:
      notes.append(f"{e}: cold start; the file is left as it is and this search is not "
                   "recorded (pass another store_path to record it)")
  elif st is not None:
    p.store_path = st.path
  if st is not None:
    p.meta = metafeatures.describe(prep)  # with landmarkers: what the store compares
  saved = _load(state_path)
  if saved is not None:  # a resumed search replays the first run's plan
    for k in ("portfolio", "reused", "neighbours", "lr_prior"):
      setattr(p, k, saved[k])
    p.neighbours = [tuple(x) for x in p.neighbours]
    notes.insert(0, "resumed, as first planned: " + saved["message"])
  else:
    cap = max(1, int(s.warm_frac * p.first_rung)) if s.warm_frac > 0 else 0
    spec = load_prior(prior if prior is not None else s.prior or None)
    if spec:
      p.lr_prior = spec["lr"]
      _extend(p, [(c, dict(source="prior")) for c in spec["configs"]], cfg, fams, cap)
      notes.append(f"prior: {len(p.portfolio)} of its configurations in the first rung"
                   + ("; the rung's sampled learning rates drawn around its learned rates"
                      if p.lr_prior else ""))
    if s.warm_start and st is not None and cap > len(p.portfolio):
      try:
        notes.insert(0, _from_store(p, st, cfg, fams, run_id, cap))
      except (sqlite3.Error, ValueError, KeyError, TypeError) as e:
        st = None
        notes.append(f"experience store {p.store_path} could not be read ({e}): cold start; "
                     "the file is left as it is and this search is not recorded")
    elif not s.warm_start and p.store_path:
      notes.insert(0, "warm start off (search.warm_start=False): cold start")
    p.message = "; ".join(notes)
    _save(state_path, p)
  p.store = st.bind(p.dataset, p.meta) if st is not None else None
  p.message = "; ".join(notes)
  if p.store is not None:
    p.store.put_run(run_id, p.summary())
  if p.message:
    runlog.say(p.message)
  return p


def _from_store(p: Plan, st: ExperienceStore, cfg, fams, run_id: str, cap: int) -> str:
  """Fills p.portfolio from the datasets of `st` nearest to p.meta; returns the message."""
  s = cfg.search
  known = st.datasets()
  if not known:
    return "warm start: the experience store holds no past dataset yet: cold start"
  dists = sorted((metafeatures.distance(p.meta, m), n) for n, m in known.items())
  p.neighbours = [(n, d) for d, n in dists if d <= s.warm_max_distance][:s.warm_neighbours]
  if not p.neighbours:
    d, n = dists[0]
    return (f"warm start: no past dataset within distance {s.warm_max_distance:g} of "
            f"{p.dataset} (nearest: {n} at {d:.2f}): cold start")
  ranked = []
  for n, d in p.neighbours:
    rows = [r for r in st.trials(dataset=n) if r["status"] == "complete"
            and r["val_score"] is not None and r["run_id"] != run_id]
    rows = [r for r in rows if r["metric"] == s.metric] or rows  # rank by this search's metric
    ranked.append([(dict(family=r["family"], **r["hparams"]),
                    dict(source="store", dataset=n, distance=d, run_id=r["run_id"],
                         past_trial=r["trial"], val_score=r["val_score"])) for r in rows])
  rr = [x for tier in zip(*[t + [None] * (max(map(len, ranked)) - len(t)) for t in ranked])
        for x in tier if x is not None]  # round-robin, nearest dataset first
  before = len(p.portfolio)
  _extend(p, rr, cfg, fams, cap)
  used = {}
  for r in p.reused[before:]:
    if r["source"] == "store":
      used[r["dataset"]] = used.get(r["dataset"], 0) + 1
  if not used:
    return (f"warm start: the {len(p.neighbours)} nearest past dataset(s) have no finished "
            "configuration this search can use: cold start")
  near = ", ".join(f"{n} (distance {d:.2f}, {used[n]} config{'s' * (used[n] > 1)})"
                   for n, d in p.neighbours if n in used)
  return (f"warm start: {len(p.portfolio) - before} of the first rung's {p.first_rung} trials "
          f"from the experience store: {near}")


def _extend(p: Plan, candidates, cfg, fams, cap: int) -> None:
  """Appends the candidates (config, provenance) that fit this search's space to the
  portfolio, without duplicates, each neural one with its siblings, up to `cap` trials."""
  seen = {json.dumps(c, sort_keys=True) for c in p.portfolio}
  for c, src in candidates:
    if len(p.portfolio) >= cap:
      return
    c = fit(cfg.space, fams, c)
    if c is None or json.dumps(c, sort_keys=True) in seen:
      continue
    group = [(c, src)]
    if c["family"] in NEURAL and "learning_rate" in c:
      rng = np.random.default_rng([p.seed, len(p.portfolio)])
      for _ in range(int(cfg.search.group_size) - 1):
        lr = c["learning_rate"] * math.exp(float(np.clip(rng.normal(), -2, 2)) * LR_STD)
        group.append((dict(c, learning_rate=_clip(cfg.space, c["family"], "learning_rate", lr)),
                      dict(source="sibling", of=len(p.portfolio))))
    for g, gsrc in group[: cap - len(p.portfolio)]:
      seen.add(json.dumps(g, sort_keys=True))
      p.reused.append(dict(gsrc, trial=len(p.portfolio), family=g["family"],
                           hp={k: v for k, v in g.items() if k != "family"}))
      p.portfolio.append(g)


def fit(space, fams, c: dict) -> dict | None:
  """Configuration `c` ({'family', **hp}) made valid for `space` (numbers clipped into
  range), or None when its family is not searched or a value cannot be used."""
  fam = c.get("family")
  if fam not in fams or fam not in space:
    return None
  out = {"family": fam}
  for name, spec in dict(space[fam]).items():
    if name not in c:
      return None
    v = c[name]
    if spec[0] == "choice":
      same = [o for o in spec[1] if o == v and isinstance(o, str) == isinstance(v, str)
              and not isinstance(v, bool)]
      if not same:
        return None
      out[name] = same[0]
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
      out[name] = _clip(space, fam, name, v)
    else:
      return None
  return out


def _clip(space, fam, name, v):
  kind, lo, hi = tuple(space[fam][name])[:3]
  v = min(max(v, lo), hi)
  return int(round(v)) if kind == "int" else float(v)


def _fmt(v) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------ the prior
def load_prior(x) -> dict | None:
  """Learned rates as {'configs': [...], 'lr': None | {'log_lr': {family: centre},
  'optimizer': {family: name}, 'std': spread}}.

  x: None; a `metajax.hpo.LearnedRates` (each family centred on its `global_log_lr()`,
  with the optimizer it was learned for); a list of configurations {'family', **hp}; a dict
  with any of 'configs', 'log_learning_rate' (a number, or per-layer numbers nested in
  dicts / lists: their mean is the centre), 'learning_rate' (likewise, not in logs),
  'optimizer', 'log_lr_std' and 'families' (default: the neural ones); a JSON file of such
  a dict; or an hp_metalearn workdir / its learned_rates.json (`load_learned_rates`).
  """
  if x is None or x == "":
    return None
  key = "search.prior"
  valid = ("a list of configurations, a dict with configs / log_learning_rate / learning_rate, "
           "a JSON file of one, or an hp_metalearn workdir")
  if isinstance(x, str):
    x = _read_prior(x, key, valid)
  if hasattr(x, "families") and hasattr(x, "estimator"):  # metajax.hpo.LearnedRates
    fams = {f: r for f, r in x.families.items() if f in NEURAL}
    if not fams:
      raise ConfigError(key, sorted(x.families), "no AutoML family among the learned rates",
                        ", ".join(NEURAL))
    return dict(configs=[], lr=dict(log_lr={f: r.global_log_lr() for f, r in fams.items()},
                                    optimizer={f: r.optimizer for f, r in fams.items()},
                                    std=LR_STD))
  if isinstance(x, (list, tuple)):
    x = {"configs": list(x)}
  if not isinstance(x, dict) or not ({"configs", "log_learning_rate", "learning_rate"} & set(x)):
    raise ConfigError(key, x if not isinstance(x, dict) else sorted(x), "not a prior", valid)
  configs = list(x.get("configs", []))
  if not all(isinstance(c, dict) and "family" in c for c in configs):
    raise ConfigError(key, configs, "every configuration needs a 'family'", valid)
  logs = _leaves(x["log_learning_rate"]) if "log_learning_rate" in x else [
      math.log(v) for v in _leaves(x.get("learning_rate")) if v > 0]
  if not logs:
    if "configs" not in x:
      raise ConfigError(key, x.get("log_learning_rate", x.get("learning_rate")),
                        "no finite learning rate", valid)
    return dict(configs=configs, lr=None)
  fams = list(x.get("families", NEURAL))
  opt = x.get("optimizer")
  return dict(configs=configs, lr=dict(log_lr={f: float(np.mean(logs)) for f in fams},
                                       optimizer={f: opt for f in fams} if opt else {},
                                       std=float(x.get("log_lr_std", LR_STD))))


def _read_prior(x: str, key: str, valid: str):
  """The prior at path x: a JSON dict / list, or learned rates (metajax.hpo)."""
  path = os.path.expanduser(x)
  if not os.path.exists(path):
    raise ConfigError(key, x, "no such file or directory", valid)
  if os.path.isfile(path):
    try:
      with open(path) as f:
        doc = json.load(f)
    except (OSError, ValueError) as e:
      raise ConfigError(key, path, f"not readable JSON ({e})", valid) from None
    if not (isinstance(doc, dict) and doc.get("format") == "metajax.learned_rates"):
      return doc
  from metajax.hpo import load_learned_rates  # a workdir, or its learned_rates.json
  return load_learned_rates(path)


def _leaves(v) -> list[float]:
  if isinstance(v, dict):
    return [y for w in v.values() for y in _leaves(w)]
  if isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim):
    return [y for w in v for y in _leaves(w)]
  try:
    f = float(v)
  except (TypeError, ValueError):
    return []
  return [f] if math.isfinite(f) else []


# ------------------------------------------------------------------ persisted beside the state
def _sidecar(state_path: str) -> str:
  return state_path + ".warm.json"


def _load(state_path: str | None) -> dict | None:
  """The saved plan of a search being resumed (None: a new search, or one begun cold)."""
  if not state_path or not os.path.exists(state_path):
    return None
  if not os.path.exists(_sidecar(state_path)):
    return dict(portfolio=[], reused=[], neighbours=[], lr_prior=None, message="cold start")
  with open(_sidecar(state_path)) as f:
    return json.load(f)


def _save(state_path: str | None, p: Plan) -> None:
  if state_path:
    from metajax.runlog import atomic_write
    atomic_write(_sidecar(state_path), json.dumps(dict(
        portfolio=p.portfolio, reused=p.reused, neighbours=p.neighbours, lr_prior=p.lr_prior,
        message=p.message or "cold start"), default=float))
