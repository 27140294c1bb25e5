"""AutoML on small and bad data: the column schema at predict time, the bad-input list,
out-of-fold selection over holdouts, the separation warning, ensembles, refit."""

import os
import warnings

import numpy as np
import pytest

from metajax.automl import AutoML, data as data_lib, ensemble, selection
from metajax.errors import ConfigError

FAST = dict(time_budget_s=0, scheduler="sh", n_trials=3, families=("rf", "gbm"),
            max_budget=2.0)


def _table(n=90, seed=0):
  """A DataFrame with numeric, categorical and missing values; y depends on a, b and c."""
  pd = pytest.importorskip("pandas")
  rng = np.random.default_rng(seed)
  df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.choice(["x", "y"], n),
                     "c": rng.normal(size=n) * 10})
  df.loc[::11, "c"] = np.nan
  y = np.where(df["a"] + (df["b"] == "x") + df["c"].fillna(0) / 10 > 0.5, "yes", "no")
  return df, y


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  df, y = _table()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the separation warning is tested on its own
    return AutoML(**FAST).fit(df, y), df, y


def test_predict_checks_the_schema_by_name(fitted):
  m, df, y = fitted
  p = m.predict_proba(df)
  np.testing.assert_allclose(m.predict_proba(df[["c", "a", "b"]]), p)  # reordered: by name
  np.testing.assert_allclose(m.predict_proba(df.to_numpy()), p, atol=1e-6)  # array: by position
  bad = [(df[["a", "b"]], r"missing \['c'\]"),
         (df.assign(d=1.0), r"extra \['d'\]"),
         (df.rename(columns={"c": "C"}), r"missing \['c'\], extra \['C'\]"),
         (df.set_axis(["a", "b", "a"], axis=1), r"duplicate column names \['a'\]"),
         (df.to_numpy()[:, :2], "2 columns")]
  for X, match in bad:
    with pytest.raises(data_lib.DataError, match=match):
      m.predict(X)


def test_infinite_values_are_missing_at_fit_and_predict(fitted):
  m, df, y = fitted
  X = df.copy()
  X.loc[[1, 2], "a"] = [np.inf, -np.inf]
  X["c"] = X["c"].astype(object)
  X.loc[3, "c"] = "oops"
  with pytest.warns(UserWarning, match=r"'a' \(0 non-numeric, 2 infinite\).*'c' \(1 non"):
    p = m.predict_proba(X)
  assert np.isfinite(p).all()
  med = m.prep.prep.stats[0][0]  # 'a': imputed with the training median, as a missing value
  X.loc[[1, 2], "a"] = med
  X.loc[3, "c"] = np.nan
  np.testing.assert_allclose(p, m.predict_proba(X))
  inf = df.copy()
  inf.loc[:20, "a"] = np.inf  # at fit: noted, never a raw numpy error
  prep = data_lib.prepare(data_lib.Dataset("inf", "table", inf, y), seed=0)
  assert any("infinite values treated as missing" in n for n in prep.notes)
  assert all(np.isfinite(v).all() for v in prep.views["flat"])


def test_bad_input_list_fails_clearly_and_writes_nothing(tmp_path):
  pd = pytest.importorskip("pandas")
  df, y = _table(60)
  store = tmp_path / "store.sqlite"
  fit = lambda X, yy: AutoML(store_path=str(store), state_path=str(tmp_path / "s.pkl"),
                             **FAST).fit(X, yy)
  cases = [
      (df.set_axis(["a", "b", "a"], axis=1), y, r"duplicate column names \['a'\]"),
      (df.iloc[:0], y[:0], "empty"),
      (df[[]], y, "empty"),
      (df, np.array(["one"] * 60), "at least two classes"),
      (df.iloc[:12], y[:12], "too few rows"),
      (df.assign(a=np.nan, c=np.nan, b=None), y, "every column is missing or constant"),
  ]
  for X, yy, match in cases:
    with pytest.raises(data_lib.DataError, match=match):
      fit(X, yy)
  for kw, match in [(dict(time_budget_s=-1), "time_budget_s"), (dict(metric="auc"), "metric"),
                    (dict(top_k=0), "top_k"), (dict(time_share=1.0), "time_share")]:
    with pytest.raises(ConfigError, match=match):
      AutoML(**{**FAST, **kw})
  assert os.listdir(tmp_path) == []  # nothing written
  # documented handlings: labels with missing values are dropped (noted); wide tables are used
  ym = y.astype(object)
  ym[:4] = None
  p = data_lib.prepare(data_lib.Dataset("m", "table", df, ym), seed=0)
  assert "dropped 4 rows with a missing label" in p.notes
  wide = np.random.default_rng(0).normal(size=(40, 10000))
  p = data_lib.prepare(data_lib.Dataset("w", "table", wide, np.array([0, 1] * 20)), seed=0)
  assert p.views["flat"][0].shape == (24, 10000)


def test_holdouts_cover_every_row_with_the_search_split_sizes():
  y = np.array([0] * 50 + [1] * 25 + [2] * 9)
  for n_val in (17, 21, 42):
    splits = selection.holdouts(y, n_val, seed=3)
    assert len(splits) == max(2, -(-len(y) // n_val))
    seen = np.zeros(len(y))
    for tr, va in splits:
      assert len(va) == n_val and len(tr) == len(y) - n_val
      assert not set(tr) & set(va)
      seen[va] += 1
      share = np.bincount(y[va], minlength=3) / n_val  # stratified: class shares kept
      assert np.abs(share - np.bincount(y) / len(y)).max() < 0.12
    assert seen.min() >= 1


def test_caruana_ensemble_beats_members_only_when_they_complement():
  y = np.array([0, 1] * 20)
  onehot = np.eye(2)[y]
  a, b = onehot.copy(), onehot.copy()
  a[:10] = [0.4, 0.6]   # a is wrong on rows 0-9 (label 0 there on even rows) ...
  b[20:30] = 1 - b[20:30] * 0.9  # ... b on rows 20-29; each right where the other is wrong
  w, s = ensemble.caruana([a, b], y, "accuracy", rounds=10)
  assert s == 1.0 > max(ensemble.search.score("accuracy", y, p) for p in (a, b))
  assert (w > 0).all() and w.sum() == pytest.approx(1.0)
  w, s = ensemble.caruana([onehot, a], y, "accuracy", rounds=10)
  assert w.tolist() == [1.0, 0.0] and s == 1.0  # a dominated member is never added


def test_separation_warning():
  y = np.array([0, 1] * 15)
  good, coin = np.eye(2)[y], np.eye(2)[y]
  coin[:2] = coin[:2, ::-1]  # wrong on 2 of 30 rows: within noise on 30 rows
  assert "too small to separate" in selection.separation(
      "accuracy", y, {0: good, 1: coin}, {0: 1.0, 1: 28 / 30}, "validation split")
  coin[:20] = coin[:20, ::-1]  # wrong on 18 of 30: clearly worse
  assert selection.separation("accuracy", y, {0: good, 1: coin}, {0: 1.0, 1: 0.4},
                              "validation split") is None


def test_small_data_selection_refits_on_train_and_validation():
  df, y = _table()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m = AutoML(**dict(FAST, families=("rf",))).fit(df, y)
  s = m.selection_
  n_fit = len(m.prep.y[0]) + len(m.prep.y[1])
  assert s["rows"] == n_fit and "holdouts" in s["method"] and s["folds"] >= 2
  assert s["refit"] == f"refit on train+validation ({n_fit} rows)"
  assert len(s["scores"]) == 3 and m.best_["val_score"] == s["score"]
  for mem in m._model["members"]:
    est = mem["state"]  # the root of a bootstrap tree weighs every row drawn: n of them
    assert est.estimators_[0].tree_.weighted_n_node_samples[0] == n_fit
    assert est is not m._ex.states.get(mem["id"])  # not the search's train-only model
    assert m._ex.states[mem["id"]].estimators_[0].tree_.weighted_n_node_samples[0] == len(
        m.prep.y[0])


def test_ensemble_predicts_saves_and_loads_like_one_model(fitted, tmp_path):
  m, df, y = fitted
  ids = [t for t in m._ex.states][:2]
  members = [dict(id=i, family=m._ex.trials[i].family, hp=m._ex.trials[i].hp, weight=w,
                  state=m._ex.states[i], arch=None) for i, w in zip(ids, (0.25, 0.75))]
  single = [m.__class__.load(m.save(str(tmp_path / "m.pkl")))]  # a copy to edit
  single[0]._model = dict(members=[dict(members[0], weight=1.0)])
  p0 = single[0].predict_proba(df)
  single[0]._model = dict(members=[dict(members[1], weight=1.0)])
  p1 = single[0].predict_proba(df)
  single[0]._model = dict(members=members)
  ens = m.__class__.load(single[0].save(str(tmp_path / "e.pkl")))
  np.testing.assert_allclose(ens.predict_proba(df), 0.25 * p0 + 0.75 * p1, rtol=1e-6)
  assert set(ens.predict(df)) <= {"yes", "no"}


def test_linear_tfidf_family_on_texts_predicts_raw_texts(tmp_path):
  rng = np.random.default_rng(0)
  words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
  y = np.array(["pos", "neg"] * 40)
  texts = [" ".join(rng.choice(words, 6)) + (" very good" if l == "pos" else " not good")
           for l in y]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m = AutoML(time_budget_s=0, scheduler="sh", n_trials=2, families=("linear",),
               max_budget=1.0).fit(texts, y)
  assert "linear" in m.prep.views and m.prep.views["linear"][0].shape[0] == len(m.prep.y[0])
  assert any("TF-IDF" in n for n in m.prep.notes)
  assert m.best_["test"]["accuracy"] == 1.0  # 'very good' vs 'not good' is a bigram
  new = ["omega beta very good", "sigma not good"]
  m2 = AutoML.load(m.save(str(tmp_path / "t.pkl")))
  assert m2.predict(new).tolist() == m.predict(new).tolist() == ["pos", "neg"]


def test_tree_and_linear_spaces_build_estimators():
  from metajax.automl import config as config_lib, space as space_lib, trees
  s = config_lib.default_config().space
  X = np.random.default_rng(0).normal(size=(60, 4))
  y = (X[:, 0] > 0).astype(int)
  for c in space_lib.sample(s, ["rf", "gbm", "linear"], 12, "sobol", seed=0):
    fam = c.pop("family")
    est, _, _, _ = trees.grow(fam, c, 0, None, 1.0, 4, X, y)
    assert trees.predict_proba(est, X, 2).shape == (60, 2)
    if fam == "gbm":
      assert est.max_features == pytest.approx(c["max_features"]) and est.max_iter == 4


def test_holdouts_are_limited_to_what_the_time_budget_affords():
  from metajax.automl.search import Trial
  ts = [Trial(i, "rf", {}, history=[dict(budget=1.0, score=0.9, train_s=s)])
        for i, s in enumerate((1.0, 1.0, 3.0, 0.5))]
  keep, note = selection.affordable(ts, 4, seconds=12.0)  # 5 s each for the first two
  assert [t.id for t in keep] == [0, 1] and note is None  # the third would exceed: stop there
  keep, note = selection.affordable(ts, 4, seconds=30.0)
  assert [t.id for t in keep] == [0, 1, 2, 3]
  keep, note = selection.affordable(ts, 4, seconds=6.0)  # not even two: validation scores
  assert keep == ts and "skipped" in note and "10.0 s" in note


def test_time_budget_covers_search_and_selection():
  from metajax.automl import config as config_lib
  from metajax.automl.search import Trial, search_seconds
  c = config_lib.default_config()
  c.search.time_budget_s, c.selection.time_share = 60.0, 0.25
  assert search_seconds(c) == pytest.approx(45.0)  # the rest is kept for the final selection
  c.search.time_budget_s = 0.0
  assert search_seconds(c) == float("inf")
  ts = [Trial(0, "rf", {}, history=[dict(budget=1.0, score=0.9, train_s=2.0, compile_s=5.0)]),
        Trial(1, "mlp", {}, history=[dict(budget=1.0, score=0.9, train_s=1.0, compile_s=3.0)])]
  # training seconds scaled by rows; a neural family compiles new shapes, a tree family not
  assert selection.refit_seconds(ts, 150, 100) == pytest.approx(2.0 * 1.5 + 1.0 * 1.5 + 3.0)


def test_refit_that_does_not_fit_in_the_time_left_is_skipped(monkeypatch):
  df, y = _table()
  monkeypatch.setattr(selection, "refit_seconds", lambda *a: 1e6)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m = AutoML(**dict(FAST, time_budget_s=600.0, families=("rf",))).fit(df, y)
  s = m.selection_
  assert s["refit"] is None
  assert any("refit on train+validation skipped" in n and "1000000.0 s" in n for n in s["notes"])
  assert m.predict(df).shape == (len(df),)  # the models trained on the training split
  assert m.best_["test"]["accuracy"] > 0.6


def test_large_data_path_scores_on_validation_and_still_refits():
  df, y = _table()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m = AutoML(**dict(FAST, small_rows=0)).fit(df, y)  # every table counts as large
  s = m.selection_
  assert s["method"].startswith("validation score") and s["folds"] == 0
  ids = [r["id"] for r in m.leaderboard if r["val_score"] is not None][:3]
  # on validation, each candidate's score is its search score (the search's own models)
  assert all(s["scores"][i] == pytest.approx(m._ex.trials[i].score) for i in ids)
  assert s["refit"] == f"refit on train+validation ({len(m.prep.y[0]) + len(m.prep.y[1])} rows)"
