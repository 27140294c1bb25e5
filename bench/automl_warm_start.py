"""Warm-started vs cold AutoML searches, leave one dataset out (the experience store's use).

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/automl_warm_start.py --out=/tmp/ws.json

Per seed: every dataset is searched cold, each search recorded in one store. Then each
dataset D is searched again with the same config, warm-started from a copy of that store
without D (its nearest past datasets are the others). Reported per dataset and seed: the
best validation score of the first rung (budget = min_budget), the selected model's
validation score and test accuracy, wall seconds, and the seconds until the search first
held a score at least the cold search's final one (any budget).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import tempfile
import time

import numpy as np

from metajax.automl import config as config_lib, engine

DATASETS = ("iris", "wine", "breast_cancer", "digits")  # adult, titanic: with their extras


def search(name, seed, store, args):
  c = config_lib.default_config()
  c.data.name, c.data.max_rows, c.seed = name, args.max_rows, seed
  c.search.update(scheduler="sh", n_trials=args.n_trials, max_budget=args.max_budget,
                  families=tuple(args.families.split(",")))
  prep, fams = engine.load_data(c)
  t0 = time.perf_counter()
  ex = engine.run_search(prep, c, fams, store=store, run_id=f"{name}-{seed}-{store is None}")
  best, test = engine.evaluate_best(ex)
  wall = time.perf_counter() - t0
  rung0 = max((h["score"] for t in ex.trials.values() for h in t.history[:1]
               if h["budget"] == c.search.min_budget and math.isfinite(h["score"])),
              default=float("nan"))
  curve = sorted((h["elapsed"], h["score"]) for t in ex.trials.values() for h in t.history
                 if math.isfinite(h["score"]))
  return dict(rung0=rung0, val=best.score, test=test["accuracy"], wall=wall, curve=curve,
              compiles=ex.programs.compiles,
              reused=ex.warm.summary()["reused"], neighbours=ex.warm.summary()["neighbours"])


def time_to(curve, target):
  return next((t for t, s in curve if s >= target - 1e-12), None)


def without(store, name, tmp):
  """A copy of `store` holding no row of dataset `name`."""
  path = os.path.join(tmp, f"without-{name}.sqlite")
  shutil.copy(store, path)
  c = sqlite3.connect(path, isolation_level=None)
  for table, col in (("trials", "dataset"), ("datasets", "name"), ("runs", "dataset")):
    c.execute(f"DELETE FROM {table} WHERE {col} = ?", (name,))
  c.close()
  return path


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--datasets", default=",".join(DATASETS))
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--families", default="rf,gbm")
  ap.add_argument("--n_trials", type=int, default=27)
  ap.add_argument("--max_budget", type=float, default=9.0)
  ap.add_argument("--max_rows", type=int, default=4000)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  names = args.datasets.split(",")
  rows = []
  for seed in range(args.seeds):
    tmp = tempfile.mkdtemp()
    store = os.path.join(tmp, "cold.sqlite")
    cold = {n: search(n, seed, store, args) for n in names}
    for n in names:
      warm = search(n, seed, without(store, n, tmp), args)
      c = cold[n]
      rows.append(dict(dataset=n, seed=seed, cold=c, warm=warm,
                       cold_t=time_to(c["curve"], c["val"]),
                       warm_t=time_to(warm["curve"], c["val"])))
      r = rows[-1]
      print(f"{n:14s} seed {seed}: rung0 {c['rung0']:.4f} -> {warm['rung0']:.4f}; val "
            f"{c['val']:.4f} -> {warm['val']:.4f}; test {c['test']:.4f} -> {warm['test']:.4f}; "
            f"t(cold final val) {r['cold_t']:.2f} s -> "
            + (f"{r['warm_t']:.2f} s" if r["warm_t"] is not None else "never")
            + f"; wall {c['wall']:.1f} -> {warm['wall']:.1f} s; compiles {c['compiles']} -> "
            f"{warm['compiles']}; reused "
            f"{len(warm['reused'])} from {[x['dataset'] for x in warm['neighbours']]}", flush=True)
    shutil.rmtree(tmp)
  mean = lambda k, side: float(np.mean([r[side][k] for r in rows]))
  print(f"mean over {len(rows)}: rung0 {mean('rung0', 'cold'):.4f} -> {mean('rung0', 'warm'):.4f}, "
        f"val {mean('val', 'cold'):.4f} -> {mean('val', 'warm'):.4f}, "
        f"test {mean('test', 'cold'):.4f} -> {mean('test', 'warm'):.4f}; warm reached the cold "
        f"final val no later on {sum(r['warm_t'] is not None and r['warm_t'] <= r['cold_t'] for r in rows)}"
        f"/{len(rows)}")
  if args.out:
    for r in rows:
      for side in ("cold", "warm"):
        r[side].pop("curve")
    with open(args.out, "w") as f:
      json.dump(dict(args=vars(args), rows=rows), f, indent=1)


if __name__ == "__main__":
  main()
