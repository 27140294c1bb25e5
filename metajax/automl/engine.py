"""The search as functions of a config: data in, executor (trials, states) out.

Used by the `AutoML` front end and by the experiment driver
(`metajax.experiments.automl`), which adds baselines, the report and the saved model.
"""

from __future__ import annotations

from absl import logging

from metajax import compile_cache
from metajax.automl import config as config_lib, data as data_lib, search, warmstart


def load_data(cfg) -> tuple[data_lib.Prepared, list[str]]:
  """Loads, checks, splits and preprocesses `cfg.data`; the families to search on it."""
  d = cfg.data
  ds = data_lib.load(d.name, d.data_dir, d.max_rows, cfg.seed)
  fams = config_lib.families_for(cfg, ds.modality)
  prep = data_lib.prepare(ds, cfg.seed, d.val_frac, d.test_frac, d.seq_len, d.vocab_size,
                          linear="linear" in fams)
  return prep, fams


def run_search(prep, cfg, fams, state_path=None, store=None, run_id="", on_rung=None,
               programs=None, dataset=None, prior=None) -> search.Executor:
  """Runs `cfg.search.scheduler` over `fams` on `prep`; resumes from `state_path` if it exists.

  store: experience store path (or ExperienceStore): read first for a warm start
  (`search.warm_start`), written after every rung under `run_id` and key `dataset` (default
  prep.name); prior: learned rates (`warmstart.load_prior`). `ex.warm` is the warm-start plan.
  JAX's persistent compilation cache is pointed at `cfg.compile_cache` first ('' for none).
  """
  compile_cache.use(cfg.get("compile_cache", compile_cache.DEFAULT_DIR))  # before any compile
  warm = warmstart.plan(prep, cfg, fams, store, run_id, state_path, dataset, prior)
  ex = search.Executor(prep, cfg, state_path, "search", warm.store, run_id, on_rung,
                       programs=programs)
  ex.warm = warm
  s = cfg.search
  sampler = warm.sampler(search.Sampler(cfg.space, fams, s.sampler, cfg.seed, s.group_size))
  eta, lo, hi = int(s.eta), s.min_budget, s.max_budget
  try:
    if s.scheduler == "sh":
      search.successive_halving(ex, search._new(ex, sampler, s.n_trials), lo, hi, eta)
    elif s.scheduler == "hyperband":
      search.hyperband(ex, sampler, lo, hi, eta, s.max_trials, s.hyperband_iterations)
    else:
      search.asha(ex, sampler, lo, hi, eta, s.max_trials, s.asha_workers)
  except search.StopSearch:
    logging.info("time budget of %.0f s reached: stopping the search", s.time_budget_s)
  for t in ex.trials.values():
    if t.status == "running":
      t.status, t.note = "pruned", "search stopped by the time budget"
  ex.persist()
  return ex


def evaluate_best(ex: search.Executor):
  """(best trial, its test metrics) of an executor, or (None, {}) when every trial failed."""
  board = [t for t in search.leaderboard(ex.trials.values()) if t.status != "failed"
           and t.id in ex.states]
  if not board:
    return None, {}
  best = board[0]
  prob = ex.predict_proba(best, ex.prep.views[search.VIEW[best.family]][2])
  return best, search.test_metrics(ex.prep.y[2], prob)
