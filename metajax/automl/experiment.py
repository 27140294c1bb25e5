"""`run(config, workdir)`: search, baselines at the same budget, test scores, report.

Sections: validate -> data -> workdir -> search (resumable) -> baselines ->
test evaluation -> experience store -> report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

from absl import logging

from metajax import parallel, runlog
from metajax.automl import config as config_lib, data as data_lib, datasets, population, report
from metajax.automl import search
from metajax.automl.store import ExperienceStore

DEFAULTS = {  # the hand-set configuration a practitioner would try first
    "mlp": dict(learning_rate=1e-3, batch_size=32, layers=2, units=128, optimizer="adam",
                dropout=0.2),
    "cnn": dict(learning_rate=1e-3, batch_size=32, layers=2, units=64, optimizer="adam",
                dropout=0.2),
    "gru": dict(learning_rate=1e-3, batch_size=32, layers=1, units=64, optimizer="adam",
                dropout=0.2),
}


def load_data(cfg) -> tuple[data_lib.Prepared, list[str]]:
  """Loads, checks, splits and preprocesses `cfg.dataset`; the families to search on it."""
  ds = datasets.load(cfg.dataset, cfg.data_dir, cfg.max_rows, cfg.seed)
  fams = config_lib.families_for(cfg, ds.modality)
  prep = data_lib.prepare(ds, cfg.seed, cfg.val_frac, cfg.test_frac, cfg.seq_len, cfg.vocab_size)
  return prep, fams


def run_search(prep, cfg, fams, state_path=None, store=None, run_id="", on_rung=None,
               programs=None) -> search.Executor:
  """Runs `cfg.scheduler` over `fams` on `prep`; resumes from `state_path` when it exists."""
  ex = search.Executor(prep, cfg, state_path, "search", store, run_id, on_rung,
                       programs=programs)
  sampler = search.Sampler(cfg.space, fams, cfg.sampler, cfg.seed, cfg.group_size)
  eta, lo, hi = int(cfg.eta), cfg.min_budget, cfg.max_budget
  try:
    if cfg.scheduler == "sh":
      search.successive_halving(ex, search._new(ex, sampler, cfg.n_trials), lo, hi, eta)
    elif cfg.scheduler == "hyperband":
      search.hyperband(ex, sampler, lo, hi, eta, cfg.max_trials, cfg.hyperband_iterations)
    else:
      search.asha(ex, sampler, lo, hi, eta, cfg.max_trials, cfg.asha_workers)
  except search.StopSearch:
    logging.info("time budget of %.0f s reached: stopping the search", cfg.time_budget_s)
  for t in ex.trials.values():
    if t.status == "running":
      t.status, t.note = "pruned", "search stopped by the time budget"
  ex.persist()
  return ex


def run_baselines(prep, cfg, fams, units: float, workdir: str | None, programs=None):
  """Random search and the hand-set default, each trained to max_budget, with `units` of budget."""
  out = {}
  n = max(1, int(units // cfg.max_budget))
  rs = search.Executor(prep, cfg, workdir and os.path.join(workdir, "random_state.pkl"),
                       "random", programs=programs)
  rs.deadline = math.inf
  sampler = search.Sampler(cfg.space, fams, "random", cfg.seed + 7919, cfg.group_size)
  search.fixed(rs, [dict(family=t.family, **t.hp) for t in search._new(rs, sampler, n)],
               cfg.max_budget)
  out["random search"] = rs
  fam = next((f for f in fams if f in DEFAULTS), fams[0])
  hp = DEFAULTS.get(fam, {})
  de = search.Executor(prep, cfg, workdir and os.path.join(workdir, "default_state.pkl"),
                       "default", programs=programs)
  de.deadline = math.inf
  search.fixed(de, [dict(family=fam, **hp)], cfg.max_budget)
  out["hand-set default"] = de
  return out


def evaluate_best(ex: search.Executor):
  """(best trial, its test metrics) of an executor, or (None, {}) when every trial failed."""
  board = [t for t in search.leaderboard(ex.trials.values()) if t.status != "failed"
           and t.id in ex.states]
  if not board:
    return None, {}
  best = board[0]
  prob = ex.predict_proba(best, ex.prep.views[search.VIEW[best.family]][2])
  return best, search.test_metrics(ex.prep.y[2], prob)


def store_path(cfg, workdir: str) -> str:
  return os.path.expanduser(cfg.store_path.replace("{workdir}", workdir))


def run(config, workdir: str) -> dict:
  """Runs the AutoML experiment of `config` in `workdir`; returns results and the report path."""
  # ---- validate (nothing touched yet)
  config_lib.validate(config)
  prep, fams = load_data(config)
  resumed = runlog.prepare_workdir(workdir, config)
  programs = population.Programs(parallel.make_mesh(config.num_devices or None))
  store = ExperienceStore(store_path(config, workdir))
  run_id = hashlib.sha1((os.path.abspath(workdir) + config.to_json_best_effort())
                        .encode()).hexdigest()[:12]
  # ---- search (persisted after every rung; a rerun skips finished rungs)
  state_path = os.path.join(workdir, "search_state.pkl")
  writer = runlog.MetricWriter(workdir)  # keep all rows: each is written only after its rung is persisted

  def on_rung(ex):
    best = max((h["score"] for t in ex.trials.values() for h in t.history
                if math.isfinite(h["score"])), default=-math.inf)
    writer.write(ex.rungs, {"best_val_score": best, "budget_units": ex.units,
                            "elapsed_s": ex.now(), "trials": len(ex.trials)})
    logging.info("rung %d: %d trials, %.0f budget units, best val %.4f, %.1f s",
                 ex.rungs, len(ex.trials), ex.units, best, ex.now())

  t0 = time.perf_counter()
  ex = run_search(prep, config, fams, state_path, store, run_id, on_rung, programs)
  search_s = ex.now()
  writer.close()
  # ---- baselines at the same budget (budget units), then test scores
  base = run_baselines(prep, config, fams, ex.units, workdir, programs) if config.baselines else {}
  best, test = evaluate_best(ex)
  base_results = {k: evaluate_best(v) for k, v in base.items()}
  if best is not None:
    store.record(run_id, prep, config, [best], {best.id: test.get("accuracy")})
  # ---- report
  path = report.write(workdir, prep, config, ex, best, test, base, base_results)
  result = dict(report=path, html=path[:-3] + ".html", resumed=resumed, dataset=prep.name,
                best=None if best is None else dict(id=best.id, family=best.family, hp=best.hp,
                                                    val_score=best.score, budget=best.budget),
                test=test, trials=len(ex.trials), budget_units=ex.units,
                search_s=search_s, wall_s=time.perf_counter() - t0, compiles=ex.programs.compiles,
                baselines={k: dict(test=v[1], val_score=None if v[0] is None else v[0].score,
                                   trials=len(base[k].trials)) for k, v in base_results.items()})
  runlog.atomic_write(os.path.join(workdir, "result.json"),
                      json.dumps(result, indent=2, default=str))
  return result
