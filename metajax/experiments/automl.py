"""The AutoML experiment: `run(config, workdir)` (config: configs/automl.py).

Sections: validate -> data -> workdir -> search (resumable) -> baselines at the same
budget -> test evaluation -> experience store -> saved model -> report.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import pickle
import time

from metajax import parallel, runlog, saved
from metajax.automl import api, config as config_lib, engine, population, search, selection
from metajax.experiments import automl_report


def run_baselines(prep, cfg, fams, units: float, workdir: str | None, programs=None):
  """Random search and the hand-set default, each trained to max_budget, with `units` of budget
  in all (the search's): name -> executor."""
  s, out = cfg.search, {}
  n = max(1, int(units // s.max_budget))
  rs = search.Executor(prep, cfg, workdir and os.path.join(workdir, "random_state.pkl"),
                       "random", programs=programs)
  rs.deadline = math.inf
  sampler = search.Sampler(cfg.space, fams, "random", cfg.seed + 7919, s.group_size)
  search.fixed(rs, [dict(family=t.family, **t.hp) for t in search._new(rs, sampler, n)],
               s.max_budget)
  out["random search"] = rs
  hand_set = cfg.baselines.hand_set
  fam = next((f for f in fams if f in hand_set), fams[0])
  hp = dict(hand_set[fam]) if fam in hand_set else {}
  de = search.Executor(prep, cfg, workdir and os.path.join(workdir, "default_state.pkl"),
                       "default", programs=programs)
  de.deadline = math.inf
  search.fixed(de, [dict(family=fam, **hp)], s.max_budget)
  out["hand-set default"] = de
  return out


def store_path(cfg, workdir: str) -> str:
  return os.path.expanduser(cfg.store_path.replace("{workdir}", workdir))


def _spec(m: dict) -> dict:
  """The model card of one member: the registry's module spec, or a scikit-learn estimator's."""
  if m["arch"] is not None:
    return m["arch"].spec(m["hp"].get("dropout", 0.0))
  return dict(name=m["family"], **m["hp"])


def save_model(workdir: str, config, ex: search.Executor, final: selection.Final) -> None:
  """model.pkl (the fitted `AutoML`) and model.json, so `metajax.load_trained` finds it."""
  model = api.AutoML.from_search(config, ex, final)
  model.save(os.path.join(workdir, api.MODEL_FILE))
  b = model.best_
  spec = (_spec(final.members[0]) if len(final.members) == 1 else
          dict(name="ensemble", members=[dict(_spec(m), weight=m["weight"])
                                         for m in final.members]))
  saved.write_card(workdir, "automl", model=spec, file=api.MODEL_FILE, family=b["family"],
                   hparams=b["hparams"], budget=b["budget"], dataset=ex.prep.name,
                   classes=[str(c) for c in ex.prep.classes], val_score=b["val_score"],
                   test=final.test)


def finalize_once(workdir: str, ex: search.Executor):
  """`selection.finalize(ex)` (out-of-fold re-scoring on small data, ensemble, refit), kept in
  the workdir: a finished run rerun reuses it instead of training the candidates again."""
  path = os.path.join(workdir, "selection.pkl")
  key = (len(ex.trials), ex.units, sorted(ex.done))
  if os.path.isfile(path):
    with open(path, "rb") as f:
      kept = pickle.load(f)
    if kept["key"] == key:
      return kept["final"]
  final = selection.finalize(ex)
  runlog.atomic_write(path, pickle.dumps(dict(key=key, final=final)))
  return final


COMPILED_FILE = "compiled_programs.json"


def compiled_in_run(workdir: str, programs) -> collections.Counter:
  """Programs compiled by this run in all its processes (a resumed run compiles only what it
  still needs), by kind; records the union in the workdir."""
  path = os.path.join(workdir, COMPILED_FILE)
  seen = set(programs.signatures())
  if os.path.isfile(path):
    with open(path) as f:
      seen |= set(json.load(f))
  runlog.atomic_write(path, json.dumps(sorted(seen)))
  return collections.Counter(s.split("|", 1)[0] for s in seen)


def run(config, workdir: str) -> dict:
  """Runs the AutoML experiment of `config` in `workdir`; returns results and the report path."""
  # ---- validate (nothing touched yet; a workdir that cannot be written fails before the data)
  config_lib.validate(config)
  runlog.check_workdir(workdir)
  prep, fams = engine.load_data(config)
  resumed = runlog.prepare_workdir(workdir, config)
  programs = population.Programs(parallel.make_mesh(config.num_devices or None))
  run_id = hashlib.sha1((os.path.abspath(workdir) + config.to_json_best_effort())
                        .encode()).hexdigest()[:12]

  # ---- search (persisted after every rung; a rerun skips finished rungs)
  state_path = os.path.join(workdir, "search_state.pkl")
  # keep every row on resume: a row is written only after its rung is persisted
  writer = runlog.MetricWriter(workdir)

  def on_rung(ex):
    best = max((h["score"] for t in ex.trials.values() for h in t.history
                if math.isfinite(h["score"])), default=-math.inf)
    writer.write(ex.rungs, {"best_val_score": best, "budget_units": ex.units,
                            "elapsed_s": ex.now(), "trials": len(ex.trials),
                            "compile_s": ex.programs.compile_s,
                            "compile_wait_s": ex.programs.wait_s})
    compiled_in_run(workdir, ex.programs)  # a killed run's compiles still count
    # the executor itself prints the rung's progress line (search.progress)

  s = config.search
  if os.path.exists(state_path):
    runlog.say(f"metajax: resumed the search in {workdir} (finished rungs are not retrained)")
  else:
    runlog.say(f"AutoML search on {prep.name}: {s.scheduler}, families {', '.join(fams)}, "
               f"budgets {s.min_budget:g}..{s.max_budget:g} (the first rung compiles) ...")
  t0 = time.perf_counter()
  ex = engine.run_search(prep, config, fams, state_path, store_path(config, workdir), run_id,
                         on_rung, programs)
  search_s = ex.now()
  writer.close()

  # ---- baselines at the same budget (budget units), then test scores
  if config.baselines.enabled:
    runlog.say(f"baselines at the same budget ({ex.units:g} units): random search and the "
               "hand-set default ...")
  base = (run_baselines(prep, config, fams, ex.units, workdir, programs)
          if config.baselines.enabled else {})
  final = finalize_once(workdir, ex)
  best, test = (final.trial, final.test) if final else (None, {})
  base_results = {k: engine.evaluate_best(v) for k, v in base.items()}

  # ---- experience store and the saved model
  if best is not None:
    if ex.store is not None:  # None: no store, or one left untouched (see ex.warm.message)
      ex.store.record(run_id, prep, config, [best], {best.id: test.get("accuracy")})
    save_model(workdir, config, ex, final)

  # ---- report
  compiled = compiled_in_run(workdir, programs)
  path = automl_report.write(workdir, prep, config, ex, best, test, base, base_results, compiled,
                             final)
  result = dict(report=path, html=path[:-3] + ".html", resumed=resumed, dataset=prep.name,
                best=None if best is None else dict(id=best.id, family=best.family, hp=best.hp,
                                                    val_score=best.score, budget=best.budget),
                selection=None if final is None else dict(
                    {k: v for k, v in final.info.items() if k != "scores"},
                    members=[dict(id=m["id"], family=m["family"], weight=m["weight"])
                             for m in final.members]),
                test=test, trials=len(ex.trials), budget_units=ex.units,
                search_s=search_s, wall_s=time.perf_counter() - t0,
                compiles=sum(compiled.values()), compiles_by=dict(compiled),
                compiles_this_process=programs.compiles, compile_s=programs.compile_s,
                compile_wait_s=programs.wait_s, compile_cache_hits=programs.cache_hits,
                first_result_s=ex.first_result_s, warm_start=ex.warm.summary(),
                baselines={k: dict(test=v[1], val_score=None if v[0] is None else v[0].score,
                                   trials=len(base[k].trials)) for k, v in base_results.items()})
  runlog.atomic_write(os.path.join(workdir, "result.json"),
                      runlog.dumps_strict(result, indent=2, default=str))
  return result
