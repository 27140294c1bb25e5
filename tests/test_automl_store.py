"""The experience store as AutoML's memory: warm-start round trip, switching it off,
concurrent searches, bad stores (older schema, corrupt, truncated), no neighbours, priors,
resume."""

import hashlib
import json
import math
import multiprocessing as mp
import os
import sqlite3

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine

from metajax.automl import AutoML, ExperienceStore, config as config_lib, engine, warmstart
from metajax.automl.store import StoreError
from metajax.errors import ConfigError

# trees only: a search is a fraction of a second
FAST = dict(time_budget_s=0, scheduler="sh", n_trials=6, families=("rf", "gbm"), max_budget=3.0)


def _wine(part):
  X, y = load_wine(return_X_y=True)
  return X[part::2], y[part::2]


def _unlike(n=240, seed=0):
  """Categorical columns, two classes, one rare: far from wine and iris."""
  rng = np.random.default_rng(seed)
  X = rng.choice(list("abcdef"), size=(n, 30)).astype(object)
  y = np.where(rng.random(n) < 0.12, "rare", "common")
  y[:6] = "rare"
  return X, y


def _files(d):
  """{name: sha256} of every file in directory d."""
  return {f: hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
          for f in sorted(os.listdir(d))}


def _first_rung(m):
  ex = m._ex
  return [dict(family=t.family, **t.hp) for i, t in sorted(ex.trials.items())
          if i < ex.warm.first_rung]


# ------------------------------------------------------------------ round trip
def test_warm_start_round_trip_reuses_the_similar_dataset(tmp_path, capsys):
  from metajax.experiments import automl as driver
  store = str(tmp_path / "exp.sqlite")
  a = AutoML(store_path=store, **FAST).fit(*_wine(0), name="wine-a")
  assert a.warm_start_["reused"] == [] and a.warm_start_["recorded"]
  key_a = a.warm_start_["dataset"]
  assert key_a.startswith("wine-a@")
  capsys.readouterr()
  c = config_lib.default_config()
  c.data.name, c.store_path, c.baselines.enabled = "wine", store, False
  for k, v in FAST.items():
    c.search[k] = v
  r = driver.run(c, str(tmp_path / "b"))
  out = [ln for ln in capsys.readouterr().out.splitlines() if "warm start" in ln]
  assert len(out) == 1 and key_a in out[0], out  # the console says it in one line
  w = r["warm_start"]
  assert w["neighbours"][0]["dataset"] == key_a and w["neighbours"][0]["distance"] < 1.0
  assert 1 <= w["warm_trials"] <= math.ceil(0.34 * 6)
  top = a._ex.trials[a.leaderboard[0]["id"]]  # the search's best (the model may be an ensemble)
  best_a = dict(family=top.family, **top.hp)
  assert best_a in [dict(family=x["family"], **x["hp"]) for x in w["reused"]]
  # the first rung holds A's best configuration, and the rest is the cold sampler's
  ex_trials = json.load(open(tmp_path / "b" / "result.json"))["warm_start"]["reused"]
  assert ex_trials == json.loads(json.dumps(w["reused"]))
  md = open(r["report"]).read()
  assert "## Warm start" in md and key_a in md and "distance" in md
  st = ExperienceStore(store)
  assert set(st.datasets()) == {key_a, "wine"}
  assert [x["dataset"] for x in st.runs()] == [key_a, "wine"]
  assert st.runs("wine")[0]["warm"]["reused"][0]["dataset"] == key_a
  # a third search finds both, and its first rung starts with the nearest one's best
  m = AutoML(store_path=store, **FAST).fit(*_wine(1), name="wine-b")
  near = m.warm_start_["neighbours"]
  assert {n["dataset"] for n in near} == {key_a, "wine"}
  assert _first_rung(m)[0] == dict(family=m.warm_start_["reused"][0]["family"],
                                   **m.warm_start_["reused"][0]["hp"])
  assert m.warm_start_["reused"][0]["dataset"] == near[0]["dataset"]


def test_warm_start_off_does_not_read_the_store(tmp_path, monkeypatch):
  store = str(tmp_path / "exp.sqlite")
  AutoML(store_path=store, **FAST).fit(*_wine(0), name="wine-a")
  assert config_lib.default_config().search.warm_start is True

  def refuse(*a, **k):
    raise AssertionError("the store was read")

  for name in ("datasets", "trials", "similar_datasets", "best_configs"):
    monkeypatch.setattr(ExperienceStore, name, refuse)
  m = AutoML(store_path=store, warm_start=False, **FAST).fit(*_wine(1), name="wine-b")
  assert m.warm_start_["reused"] == [] and not m.warm_start_["enabled"]
  assert "warm start off" in m.warm_start_["message"]
  cold = AutoML(**FAST).fit(*_wine(1), name="wine-b")  # no store at all: the same trials
  assert _first_rung(m) == _first_rung(cold)
  monkeypatch.undo()
  assert len(ExperienceStore(store).trials(dataset=m.warm_start_["dataset"])) == 6  # recorded


# ------------------------------------------------------------------ concurrency
def _search(store, part, go, out):
  X, y = _wine(part)
  go.wait(60)
  m = AutoML(store_path=store, **FAST).fit(X, y)  # both under the default name
  out.put((len(m.leaderboard), m.warm_start_["dataset"]))


def test_two_concurrent_searches_lose_no_rows(tmp_path):
  store = str(tmp_path / "exp.sqlite")
  ctx = mp.get_context("spawn")
  go, out = ctx.Event(), ctx.Queue()
  procs = [ctx.Process(target=_search, args=(store, k, go, out)) for k in range(2)]
  for p in procs:
    p.start()
  go.set()
  got = [out.get(timeout=240) for _ in procs]
  for p in procs:
    p.join(60)
  assert all(p.exitcode == 0 for p in procs)
  st = ExperienceStore(store)
  runs = {r["run_id"] for r in st.trials()}
  assert len(runs) == 2 and len(st.trials()) == sum(n for n, _ in got) == 12
  assert {k for _, k in got} == set(st.datasets())  # user-data@<fingerprint>, one per dataset
  assert all(k.startswith("user-data@") for _, k in got) and got[0][1] != got[1][1]


# ------------------------------------------------------------------ bad stores
_V1 = """CREATE TABLE datasets (name TEXT PRIMARY KEY, meta TEXT NOT NULL, updated REAL,
  n_rows REAL, n_classes REAL);
CREATE TABLE trials (run_id TEXT NOT NULL, trial INTEGER NOT NULL, dataset TEXT NOT NULL,
  scheduler TEXT, metric TEXT, family TEXT NOT NULL, hparams TEXT NOT NULL, curve TEXT NOT NULL,
  budget REAL, val_score REAL, test_score REAL, status TEXT, cost_s REAL, note TEXT,
  updated REAL, PRIMARY KEY (run_id, trial));
INSERT INTO datasets VALUES ('wine', '{"n_rows": 178}', 0, 178, 3);
INSERT INTO trials VALUES ('r', 0, 'wine', 'sh', 'accuracy', 'rf', '{}', '[]', 3, 1.0, NULL,
  'complete', 0.1, '', 0);"""


def _bad_stores(d):
  """An older-schema store, a garbage file and a truncated store in d: {kind: path}."""
  os.makedirs(d)
  old = os.path.join(d, "old.sqlite")
  c = sqlite3.connect(old)
  c.execute("PRAGMA journal_mode=WAL")  # as the first schema's stores were
  c.executescript(_V1)
  c.close()
  garbage = os.path.join(d, "garbage.sqlite")
  with open(garbage, "wb") as f:
    f.write(b"this is not a database\n" * 200)
  good = ExperienceStore(os.path.join(d, "tmp.sqlite"))
  good.add("r", "wine", {"n_rows": 178.0}, [dict(trial=i, family="rf", hparams={"i": i},
                                                 val_score=0.5, status="complete",
                                                 note="x" * 2000) for i in range(200)])
  data = open(good.path, "rb").read()
  os.unlink(good.path)
  truncated = os.path.join(d, "truncated.sqlite")
  with open(truncated, "wb") as f:
    f.write(data[: len(data) // 2])
  return {"older schema": old, "not an SQLite database": garbage, "corrupt": truncated}


def test_bad_stores_start_cold_with_a_message_and_stay_untouched(tmp_path, capsys):
  d = str(tmp_path / "stores")
  stores = _bad_stores(d)
  before = _files(d)
  X, y = _wine(0)
  for why, path in stores.items():
    with pytest.raises(StoreError, match=why):
      ExperienceStore(path)
    capsys.readouterr()
    m = AutoML(store_path=path, **FAST).fit(X, y)
    w = m.warm_start_
    assert w["reused"] == [] and not w["recorded"] and why in w["message"], (why, w)
    assert "cold start" in w["message"] and "left as it is" in w["message"]
    said = [ln for ln in capsys.readouterr().out.splitlines() if path in ln]
    assert len(said) == 1 and why in said[0]
    assert m.best_["test"]["accuracy"] > 0.7  # the search itself ran
  assert _files(d) == before  # no byte changed, nothing created beside them


def test_a_failing_write_stops_recording_not_the_search(tmp_path, monkeypatch, capsys):
  store = str(tmp_path / "exp.sqlite")
  ExperienceStore(store)

  def full(self, statements):
    raise sqlite3.OperationalError("database or disk is full")

  monkeypatch.setattr(ExperienceStore, "_write", full)
  m = AutoML(store_path=store, **FAST).fit(*_wine(0))
  assert m.best_ is not None and m._ex.store.failed and not m.warm_start_["recorded"]
  said = [ln for ln in capsys.readouterr().out.splitlines() if "disk is full" in ln]
  assert len(said) == 1  # said once, not once per rung


def test_a_dataset_unlike_any_stored_starts_cold(tmp_path):
  store = str(tmp_path / "exp.sqlite")
  AutoML(store_path=store, **FAST).fit(*_wine(0), name="wine-a")
  m = AutoML(store_path=store, **FAST).fit(*_unlike(), name="odd")
  w = m.warm_start_
  assert w["reused"] == [] and w["neighbours"] == [] and w["recorded"]
  assert "no past dataset within distance 1" in w["message"] and "wine-a@" in w["message"]
  assert "cold start" in w["message"]
  assert len(ExperienceStore(store).trials(dataset=w["dataset"])) == 6  # recorded all the same


# ------------------------------------------------------------------ priors and resume
def _iris_prep():
  c = config_lib.default_config("tiny")
  c.search.families = ("mlp", "rf")
  prep, fams = engine.load_data(c)
  return c, prep, fams


def test_prior_centres_first_rung_learning_rates(tmp_path):
  c, prep, fams = _iris_prep()
  c.space.mlp.learning_rate = ("log_uniform", 1e-4, 1.0)
  centre = {"Dense_0": math.log(0.01), "Dense_1": math.log(0.04)}  # per-layer: the mean counts
  prior = dict(log_learning_rate=centre, log_lr_std=0.25,
               configs=[dict(family="mlp", learning_rate=0.5, batch_size=32, layers=2,
                             units=128, optimizer="sgd", dropout=0.5)])
  p = warmstart.plan(prep, c, fams, None, prior=prior)
  taken = [cfg for _, cfg in p.sampler(engine.search.Sampler(c.space, fams, "sobol", 0, 3)
                                       ).take(12)]
  assert taken[0]["learning_rate"] == 0.5 and p.reused[0]["source"] == "prior"
  assert [r["source"] for r in p.reused] == ["prior", "sibling"]  # fills its population
  lrs = [x["learning_rate"] for x in taken[2:6] if x["family"] == "mlp"]
  lo, hi = math.exp(math.log(0.02) - 0.5), math.exp(math.log(0.02) + 0.5)
  assert lrs and all(lo <= v <= hi for v in lrs), lrs
  later = [x["learning_rate"] for x in taken[6:] if x["family"] == "mlp"]  # after the first rung
  assert any(not lo <= v <= hi for v in later)
  with pytest.raises(ConfigError, match="prior"):
    warmstart.load_prior({"nothing": 1})
  # the hpo meta-learner's learned_rates.json (a workdir): per-family centre and optimizer
  from metajax.hpo.learned import FamilyRates, save_learned_rates
  log_lr = np.log([[0.1, 0.05], [0.2, 0.1]])
  rates = FamilyRates("mlp", ("Dense_0", "Dense_1"), 2, 100, 32, "sgd", log_lr, None,
                      {"name": "mlp"})
  save_learned_rates(str(tmp_path), {"pes": {"mlp": rates}}, "pes")
  spec = warmstart.load_prior(str(tmp_path))
  assert spec["lr"]["log_lr"] == {"mlp": pytest.approx(log_lr.mean())}
  assert spec["lr"]["optimizer"] == {"mlp": "sgd"} and spec["configs"] == []
  p = warmstart.plan(prep, c, fams, None, prior=str(tmp_path / "learned_rates.json"))
  first = [x for _, x in p.sampler(engine.search.Sampler(c.space, fams, "sobol", 0, 3)).take(6)]
  assert all(x["optimizer"] == "sgd" for x in first if x["family"] == "mlp")
  assert any(x["family"] == "mlp" for x in first)
  with pytest.raises(ConfigError, match="no such file"):
    AutoML(prior="/nonexistent/rates.json")


def test_resumed_search_replays_its_warm_start(tmp_path):
  c, prep, fams = _iris_prep()
  c.search.families, c.search.scheduler = ("rf", "gbm"), "sh"
  store = str(tmp_path / "exp.sqlite")
  iris = load_iris()
  AutoML(store_path=store, **FAST).fit(iris.data[::2], iris.target[::2], name="iris-a")
  path = str(tmp_path / "state.pkl")

  class Kill(Exception):
    pass

  def kill(ex):
    raise Kill

  with pytest.raises(Kill):
    engine.run_search(prep, c, fams, path, store, "run-1", on_rung=kill)
  first = engine.search.Executor(prep, c, path).trials
  # a nearer dataset appears meanwhile; the resumed search still replays its own first rung
  AutoML(store_path=store, **FAST).fit(iris.data[1::2], iris.target[1::2], name="iris-b")
  ex = engine.run_search(prep, c, fams, path, store, "run-1")
  assert ex.skipped == len(first) and "resumed" in ex.warm.message
  assert [(t.family, t.hp) for t in first.values()] == [
      (ex.trials[i].family, ex.trials[i].hp) for i in first]


def test_meta_features_fingerprint_and_distance():
  from metajax.automl import metafeatures as mf
  X, y = _unlike()
  assert mf.fingerprint(X, y) == mf.fingerprint(X.copy(), list(y))  # content, not identity
  X2 = X.copy()
  X2[0, 0] = "z"
  assert mf.fingerprint(X2, y) != mf.fingerprint(X, y)
  assert mf.fingerprint(["a text", "b"], [0, 1]) != mf.fingerprint(["a text", "c"], [0, 1])
  c = config_lib.default_config()
  c.data.name = "wine"
  m = mf.describe(engine.load_data(c)[0])
  assert set(m) == set(mf.KEYS) and all(0 <= m[k] <= 1 for k in mf.LANDMARKS)
  assert mf.distance(m, m) == 0.0
  assert mf.distance(m, dict(m, is_table=0.0, is_image=1.0)) == math.inf  # another modality
  # fixed scales: one decade more rows moves the distance by the same amount whatever is stored
  far = dict(m, log_rows=m["log_rows"] + 1, n_rows=m["n_rows"] * 10)
  assert mf.distance(m, far) == pytest.approx(math.sqrt(1 / len(mf.SCALES)))
