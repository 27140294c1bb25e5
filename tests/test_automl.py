"""AutoML: spaces, data checks, population training, schedulers, resume, store, report, API,
saved runs."""

import json
import math
import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest

from metajax.automl import config as config_lib, data as data_lib, engine, population, search
from metajax.automl import space as space_lib
from metajax.automl.store import ExperienceStore
from metajax.errors import ConfigError
from metajax.experiments import automl as driver


def _cfg(**kw):
  """The default config with baselines off; keys as 'group.key' (or a top-level key)."""
  c = config_lib.default_config()
  c.baselines.enabled = False
  c.store_path = "{workdir}/exp.sqlite"
  for k, v in kw.items():
    group, _, key = k.rpartition(".")
    (c[group] if group else c)[key] = v
  return c


def _iris():
  return engine.load_data(_cfg(**{"data.name": "iris", "search.families": ("rf", "gbm")}))


def _programs():
  from metajax import parallel
  return population.Programs(parallel.make_mesh(1))


def _put(progs, *arrays):
  from metajax import parallel
  return [parallel.replicate(a, progs.mesh) for a in arrays]


# ------------------------------------------------------------------ spaces
def test_sampling_is_deterministic_bounded_and_grouped():
  s = config_lib.default_config().space
  fams = ["mlp", "rf", "gbm"]
  a = space_lib.sample(s, fams, 24, "sobol", seed=3, group_size=4)
  assert a == space_lib.sample(s, fams, 24, "sobol", seed=3, group_size=4)
  assert a != space_lib.sample(s, fams, 24, "sobol", seed=4, group_size=4)
  assert {c["family"] for c in a} == set(fams)
  for c in a:
    assert set(c) - {"family"} == set(dict(s[c["family"]]))  # conditional on family
    if c["family"] == "mlp":
      assert 1e-3 <= c["learning_rate"] <= 1e-1 and c["units"] in (64, 128, 256)
      assert c["optimizer"] in ("adam", "sgd", "rmsprop") and c["dropout"] in (0.2, 0.5)
    if c["family"] == "rf":
      assert 1 <= c["min_samples_leaf"] <= 8
  for g in range(0, 24, 4):  # a group shares family and structure, not the rest
    grp = a[g:g + 4]
    assert len({(c["family"], c.get("units"), c.get("layers"), c.get("batch_size")) for c in grp}) == 1
  mlp = [c for c in a if c["family"] == "mlp"]
  assert len({c["learning_rate"] for c in mlp}) == len(mlp)
  r = space_lib.sample(s, fams, 10, "random", seed=0)
  assert all(1e-2 <= c["learning_rate"] <= 0.3 for c in r if c["family"] == "gbm")
  # offsets continue the same sequence
  assert space_lib.sample(s, fams, 4, "sobol", 3, 4, offset=4) == a[4:8]


def test_bad_space_and_config_fail_before_the_workdir(tmp_path):
  s = config_lib.default_config().space
  s.mlp.learning_rate = ("log_uniform", 0.0, 1.0)
  with pytest.raises(ConfigError, match="lo > 0"):
    space_lib.check_space(s, ["mlp"])
  for key, value, match in [("search.scheduler", "bohb", "scheduler"),
                            ("search.metric", "auc", "metric"), ("search.eta", 1, "eta"),
                            ("search.max_budget", 0.5, "max_budget"),
                            ("data.name", "nope", "data.name"),
                            ("search.families", ("xgb",), "families")]:
    wd = tmp_path / key
    with pytest.raises(ConfigError, match=match):
      driver.run(_cfg(**{key: value}), str(wd))
    assert not wd.exists()
  c = _cfg(**{"data.name": "iris", "search.families": ("cnn",)})  # cnn needs images
  with pytest.raises(ConfigError, match="needs image"):
    driver.run(c, str(tmp_path / "cnn"))
  assert not (tmp_path / "cnn").exists()
  c = _cfg(**{"space.mlp": dict(config_lib.default_config().space.mlp,
                                optimizer=("choice", ("adam", "lion")))})
  with pytest.raises(ConfigError, match="space.mlp.optimizer"):
    driver.run(c, str(tmp_path / "lion"))
  (tmp_path / "file").write_text("")  # a workdir that is a file: refused before the data
  with pytest.raises(ConfigError, match="is a file"):
    driver.run(_cfg(), str(tmp_path / "file" / "run"))


# ------------------------------------------------------------------ data
def test_bad_data_is_refused_or_fixed_and_reported():
  rng = np.random.default_rng(0)
  n = 60
  X = np.empty((n, 4), object)
  X[:, 0] = rng.normal(size=n)
  X[:, 1] = [str(v) for v in rng.normal(size=n)]
  X[3, 1], X[7, 1] = "oops", None                # junk in a numeric column
  X[:, 2] = None                                  # all missing
  X[:, 3] = rng.choice(["red", "green", "blue"], n)  # categorical
  y = np.array(["a", "b"] * (n // 2))
  p = data_lib.prepare(data_lib.Dataset("junk", "table", X, y), seed=0)
  notes = " ".join(p.notes)
  assert "1 non-numeric" in notes and "all missing: dropped" in notes
  tr = p.views["flat"][0]
  assert tr.shape[1] == 2 + 3 and np.isfinite(tr).all()
  bad = [(X[:10], y[:10], "too few rows"), (X, y[:-1], "60 rows but y has 59"),
         (X, np.array(["a"] * n), "at least two classes"),
         (X, np.array(["a"] * (n - 2) + ["b", "b"]), "fewer than 3 rows")]
  for Xb, yb, match in bad:
    with pytest.raises(data_lib.DataError, match=match):
      data_lib.prepare(data_lib.Dataset("bad", "table", Xb, yb), seed=0)


def test_stratified_split_and_text_prep():
  p, fams = _iris()
  assert fams == ["rf", "gbm"]
  for part in p.y:
    assert np.bincount(part).min() >= np.bincount(part).max() - 1  # balanced classes stay so
  texts = [f"great tasty snack number {i}" if i % 2 else f"awful stale thing {i}" for i in range(40)]
  t = data_lib.prepare(data_lib.Dataset("t", "text", texts, np.arange(40) % 2), seed=0,
                       seq_len=8, vocab_size=60)
  ids = t.views["ids"][0]
  assert ids.shape[1] == 8 and ids.dtype == np.int32 and (ids > 0).any()
  assert t.views["flat"][0].shape[1] == t.prep.vocab_size


def test_one_dataset_registry():
  from metajax import data
  ds = data.load("wine")  # the AutoML sets are metajax.data names
  assert isinstance(ds, data_lib.Dataset) and ds.modality == "table" and len(ds) == 178
  small = data_lib.load("digits", max_rows=300, seed=0)
  assert small.modality == "image" and len(small) == 300
  assert np.bincount(small.y).min() >= 25  # stratified subsample
  with pytest.raises(data_lib.DataError, match="not a classification set"):
    data_lib.load("sinusoid")


# ------------------------------------------------------------------ population training
def test_switch_members_equal_plain_optax():
  """Each member of one switch-optimizer population follows the plain optax optimizer of its
  choice (full-batch steps, so the batch order cannot matter)."""
  import jax
  import optax
  rng = np.random.default_rng(0)
  X = rng.normal(size=(48, 5)).astype(np.float32)
  Y = (X[:, 0] + X[:, 1] > 0).astype(np.int32)
  progs = _programs()
  arch = population.Arch("mlp", 2, 8, 48, (5,), 2, 1)
  hps = [dict(learning_rate=0.05, optimizer="adam", dropout=0.0, weight_decay=1e-2),
         dict(learning_rate=0.1, optimizer="sgd", dropout=0.0, weight_decay=0.0),
         dict(learning_rate=0.01, optimizer="rmsprop", dropout=0.0, weight_decay=1e-3)]
  seeds = [3, 4, 5]
  init = population.unstack(jax.device_get(progs.init(
      arch, np.array(seeds + [3], np.uint32), population.hp_arrays(hps + hps[:1]))), 3)
  out, _, _, _ = population.train_population(progs, arch, 4, seeds, hps, [None] * 3, 3,
                                             *_put(progs, X, Y, X))
  plain = {"adam": optax.adam, "sgd": lambda lr: optax.sgd(lr, momentum=0.9),
           "rmsprop": optax.rmsprop}
  model = arch.module()
  grad = jax.jit(jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      model.apply({"params": p}, X), Y).mean()))
  for m0, m, hp in zip(init, out, hps):
    tx = optax.chain(optax.add_decayed_weights(hp["weight_decay"]),
                     plain[hp["optimizer"]](hp["learning_rate"]))
    p = m0.state.params
    s = tx.init(p)
    for _ in range(3):
      u, s = tx.update(grad(p), s, p)
      p = optax.apply_updates(p, u)
    for a, b in zip(jax.tree.leaves(m.state.params), jax.tree.leaves(p)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(m.state.step) == 3


def test_population_members_are_independent_and_resume_from_state():
  """A member's training does not depend on its partners, and 1 + 2 epochs == 3 epochs."""
  import jax
  rng = np.random.default_rng(0)
  X = rng.normal(size=(64, 5)).astype(np.float32)
  Y = (X[:, 0] > 0).astype(np.int32)
  progs = _programs()
  arch = population.Arch("mlp", 2, 8, 16, (5,), 2, 4)
  hp = [dict(learning_rate=0.05, optimizer="adam", dropout=0.2),
        dict(learning_rate=0.01, optimizer="sgd", dropout=0.5)]
  Xd, Yd = _put(progs, X, Y)
  run = lambda hps, seeds, states, e: population.train_population(
      progs, arch, 2, seeds, hps, states, e, Xd, Yd, Xd)
  both, curves, probs, _ = run(hp, [1, 2], [None, None], 3)
  alone, _, probs1, _ = run(hp[:1], [1], [None], 3)
  for a, b in zip(jax.tree.leaves(both[0]), jax.tree.leaves(alone[0])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(probs[0], probs1[0], rtol=1e-5, atol=1e-6)
  first, _, _, _ = run(hp, [1, 2], [None, None], 1)
  cont, _, probs2, _ = run(hp, [1, 2], first, 2)
  for a, b in zip(jax.tree.leaves(cont), jax.tree.leaves(both)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert curves.shape == (2, 3) and np.isfinite(curves).all()
  # one epoch program for the architecture, whatever the membership (and one init program)
  assert progs.compiles_by["epoch"] == 1 and progs.compiles_by["init"] == 1
  # the learning rate is stored in log space, per member, in the optimizer state
  lr = [float(np.exp(m.state.opt_state.hyperparams["log_learning_rate"])) for m in both]
  np.testing.assert_allclose(lr, [0.05, 0.01], rtol=1e-6)


def test_tiny_mlp_population_beats_chance_on_iris():
  prep, _ = _iris()
  progs = _programs()
  x = prep.views["flat"][0]
  arch = population.Arch("mlp", 2, 32, 16, x.shape[1:], 3, len(x) // 16)
  hps = [dict(learning_rate=lr, optimizer=o, dropout=0.2)
         for lr, o in ((1e-2, "adam"), (3e-2, "sgd"), (3e-3, "rmsprop"))]
  _, curves, probs, _ = population.train_population(
      progs, arch, 4, [0, 1, 2], hps, [None] * 3, 15,
      *_put(progs, x, prep.y[0], prep.views["flat"][1]))
  acc = (probs.argmax(-1) == prep.y[1]).mean(1)
  assert (acc > 0.8).all(), acc  # chance: 1/3
  assert (curves[:, -1] < curves[:, 0]).all()


def test_cnn_and_gru_populations_learn_a_separable_task():
  rng = np.random.default_rng(0)
  progs = _programs()
  y = (np.arange(64) % 2).astype(np.int32)
  img = rng.normal(size=(64, 8, 8, 1)).astype(np.float32) * 0.3 + y[:, None, None, None]
  ids = rng.integers(3, 20, size=(64, 6)).astype(np.int32)
  ids[:, 0] = 1 + y  # the first token gives the class away
  hp = [dict(learning_rate=0.01, optimizer="adam", dropout=0.2)]
  for fam, X, shape, vocab in [("cnn", img, (8, 8, 1), 0), ("gru", ids, (6,), 20)]:
    arch = population.Arch(fam, 1, 16, 16, shape, 2, 4, vocab)
    Xd, yd = _put(progs, X, y)
    _, curves, probs, _ = population.train_population(
        progs, arch, 1, [0], hp, [None], 6, Xd, yd, Xd)
    assert curves[0, -1] < curves[0, 0], fam
    assert (probs[0].argmax(1) == y).mean() > 0.8, fam


# ------------------------------------------------------------------ schedulers, failure, resume
def test_budgets_and_hyperband_brackets():
  assert search.budgets(1, 27, 3) == [1, 3, 9, 27]
  assert search.budgets(1, 10, 3) == [1, 3, 9, 10]
  prep, fams = _iris()
  c = _cfg(**{"data.name": "iris", "search.families": ("rf",), "search.scheduler": "hyperband",
              "search.max_budget": 9.0})
  ex = engine.run_search(prep, c, fams)
  by_bracket = {}
  for t in ex.trials.values():
    by_bracket.setdefault(t.bracket, []).append(t)
  # s_max = 2: brackets of 9 trials at 1, 5 at 3, 3 at 9 (n = ceil(3/(s+1) * 3^s))
  assert {s: len(v) for s, v in by_bracket.items()} == {2: 9, 1: 5, 0: 3}
  assert sorted({t.history[0]["budget"] for t in by_bracket[1]}) == [3.0]
  assert sum(t.status == "complete" for t in by_bracket[2]) == 1
  assert all(t.budget == 9.0 for t in ex.trials.values() if t.status == "complete")


def test_asha_is_deterministic_and_promotes_the_best():
  prep, fams = _iris()
  c = _cfg(**{"data.name": "iris", "search.families": ("rf", "gbm"), "search.scheduler": "asha",
              "search.max_budget": 9.0, "search.max_trials": 12, "search.asha_workers": 4})
  a = engine.run_search(prep, c, fams)
  b = engine.run_search(prep, c, fams)
  rows = lambda ex: [(t.id, t.status, [(h["budget"], h["score"]) for h in t.history])
                     for t in ex.trials.values()]
  assert rows(a) == rows(b) and len(a.trials) == 12
  at1 = sorted((t for t in a.trials.values()), key=lambda t: (-t.history[0]["score"], t.id))
  promoted = [t for t in a.trials.values() if t.budget > 1]
  assert promoted and at1[0] in promoted
  assert len(promoted) <= 12 // 3 + 1
  assert any(t.status == "complete" for t in a.trials.values())


def test_killed_search_resumes_without_redoing_work(tmp_path):
  prep, fams = _iris()
  c = _cfg(**{"data.name": "iris", "search.families": ("rf", "gbm"), "search.scheduler": "sh",
              "search.n_trials": 9, "search.max_budget": 9.0})
  full = engine.run_search(prep, c, fams)

  class Kill(Exception):
    pass

  def kill_after_second(ex):
    if ex.rungs == 2:
      raise Kill

  path = str(tmp_path / "state.pkl")
  with pytest.raises(Kill):
    engine.run_search(prep, c, fams, path, on_rung=kill_after_second)
  with open(path, "rb") as f:
    assert len(pickle.load(f)["done"]) == 9 + 3  # rungs 1 and 2 persisted
  resumed = engine.run_search(prep, c, fams, path)
  assert resumed.skipped == 9 + 3  # and not trained again
  key = lambda ex: [(t.id, t.status, [(h["budget"], h["score"]) for h in t.history])
                    for t in ex.trials.values()]
  assert key(resumed) == key(full)


def test_nan_trial_fails_and_the_search_goes_on():
  c = _cfg(**{"data.name": "wine", "search.families": ("mlp",), "search.scheduler": "sh",
              "search.n_trials": 4, "search.max_budget": 3.0, "search.group_size": 4})
  prep, _ = engine.load_data(c)
  c.space.mlp = dict(learning_rate=("choice", (1e-2, 1e12)), batch_size=("choice", (32,)),
                     layers=("choice", (2,)), units=("choice", (16,)),
                     optimizer=("choice", ("sgd",)), dropout=("choice", (0.2,)))
  ex = engine.run_search(prep, c, ["mlp"])
  failed = [t for t in ex.trials.values() if t.status == "failed"]
  ok = [t for t in ex.trials.values() if t.status != "failed"]
  assert failed and ok and all(t.hp["learning_rate"] > 1 for t in failed)
  assert all("non-finite" in t.note for t in failed)
  assert any(t.status == "complete" and math.isfinite(t.score) for t in ok)
  assert search.leaderboard(ex.trials.values())[-1].status == "failed"


# ------------------------------------------------------------------ experience store
def _writer(path, k):
  st = ExperienceStore(path)
  for i in range(20):
    st.add(f"run{k}", f"ds{k % 2}", {"n_rows": 100.0 * (k % 2 + 1), "n_classes": 2.0},
           [dict(trial=i, family="mlp", hparams={"lr": i}, val_score=i / 20, status="complete",
                 curve=[dict(budget=1, score=i / 20)])])


def test_store_concurrent_writers_lose_nothing_and_queries_work(tmp_path):
  path = str(tmp_path / "exp.sqlite")
  ExperienceStore(path)
  ctx = mp.get_context("spawn")
  procs = [ctx.Process(target=_writer, args=(path, k)) for k in range(4)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(60)
  assert all(p.exitcode == 0 for p in procs)
  st = ExperienceStore(path)
  assert len(st.trials()) == 80
  assert len(st.trials(dataset="ds1")) == 40
  assert st.trials(run_id="run3")[0]["hparams"] == {"lr": 19}  # best first
  near = st.similar_datasets({"n_rows": 190.0, "n_classes": 2.0}, k=2)
  assert [n for n, _ in near] == ["ds1", "ds0"]
  best = st.best_configs({"n_rows": 190.0, "n_classes": 2.0}, k=3, neighbours=1)
  assert [r["dataset"] for r in best] == ["ds1"] * 3 and best[0]["val_score"] == 19 / 20


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """The tiny config run once in a fresh workdir: (config, workdir, result)."""
  c = config_lib.default_config("tiny")
  wd = str(tmp_path_factory.mktemp("automl") / "run")
  return c, wd, driver.run(c, wd)


def test_experiment_writes_report_store_and_resumes(tiny_run, capsys):
  c, wd, r = tiny_run
  md = open(r["report"]).read()
  for s in ("Selected model", "test accuracy", "random search", "hand-set default",
            "Every trial", "pruned", "compiled population programs",
            "holdouts covering train+validation", "refit on train+validation (120 rows)"):
    assert s in md
  html = open(r["html"]).read()
  assert html.count("data:image/png;base64,") == 4 and "<table>" in html
  assert 0.0 <= r["test"]["accuracy"] <= 1.0 and r["best"] is not None
  # one epoch program for the search and the selection's holdouts (same shapes), one more
  # when a neural model is refit on train+validation (more rows)
  refit_nn = any(m["family"] == "mlp" for m in r["selection"]["members"])
  assert r["compiles"] == sum(r["compiles_by"].values())
  assert r["compiles_by"]["epoch"] == 1 + refit_nn
  st = ExperienceStore(os.path.join(wd, "experience.sqlite"))
  rows = st.trials(dataset="iris")
  assert len(rows) == r["trials"] and rows[0]["curve"]
  assert set(st.datasets()["iris"]) >= {"n_rows", "n_classes", "class_entropy"}
  capsys.readouterr()
  again = driver.run(c, wd)
  assert again["resumed"] and again["best"] == r["best"]
  assert "resumed the search" in capsys.readouterr().out
  # the report counts the run's programs, not only those the resumed process compiled
  assert again["compiles_by"] == r["compiles_by"] and again["compiles_this_process"] < r["compiles"]
  assert f"{r['compiles']} compiled population programs" in open(again["report"]).read()
  json.loads(open(os.path.join(wd, "result.json")).read(),
             parse_constant=lambda x: pytest.fail(f"{x} in result.json"))  # strict JSON
  c2 = config_lib.default_config("tiny")
  c2.seed = 1
  with pytest.raises(ConfigError, match="different config"):
    driver.run(c2, wd)


def _snapshot(root):
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, fs in os.walk(root) for f in fs}


def test_saved_run_loads_predicts_and_evaluates(tiny_run, tmp_path):
  import json
  import metajax
  c, wd, r = tiny_run
  card = json.load(open(os.path.join(wd, "model.json")))
  members = r["selection"]["members"]  # one, or an ensemble's
  family = r["best"]["family"] if len(members) == 1 else "ensemble"
  assert card["kind"] == "automl" and card["family"] == family
  assert card["model"]["name"] == family
  before = _snapshot(wd)
  m = metajax.load_trained(wd)
  ev = m.evaluate()  # the run's test split, reloaded: the run's test scores
  assert ev["accuracy"] == pytest.approx(r["test"]["accuracy"]) and ev["rows"] == 30
  from sklearn.datasets import load_iris
  X, y = load_iris(return_X_y=True)
  assert m.predict_proba(X[:5]).shape == (5, 3) and (m.predict(X) == y).mean() > 0.85
  assert _snapshot(wd) == before  # loading and predicting write nothing
  with pytest.raises(ConfigError, match="model.json"):
    metajax.load_trained(wd + "_typo")
  assert not os.path.exists(wd + "_typo")
  # a neural selection loads too: the model card is the registry's spec of its module
  fit = metajax.automl.AutoML(time_budget_s=0, scheduler="sh", n_trials=2, group_size=2,
                              families=("mlp",), max_budget=2.0, space=c.space,
                              ensemble=False).fit("iris")
  from metajax.experiments.automl import save_model
  save_model(str(tmp_path), fit.config, fit._ex, fit._final)
  card = json.load(open(tmp_path / "model.json"))
  assert card["model"]["name"] == "mlp" and card["model"]["hidden"] == [128, 128]
  loaded = metajax.load_trained(str(tmp_path))
  np.testing.assert_allclose(loaded.predict_proba(X[:7]), fit.predict_proba(X[:7]), atol=1e-6)


def test_api_fit_predict_save_load(tmp_path):
  from metajax.automl import AutoML
  rng = np.random.default_rng(0)
  n = 120
  X = np.empty((n, 3), object)
  X[:, 0] = rng.normal(size=n)
  X[:, 1] = rng.choice(["x", "y"], n)
  X[:, 2] = rng.normal(size=n)
  X[::9, 2] = np.nan
  y = np.where(X[:, 0].astype(float) + (X[:, 1] == "x") > 0.5, "yes", "no")
  with pytest.raises(ConfigError, match="metric"):
    AutoML(metric="auc")
  with pytest.raises(ConfigError, match="not an AutoML option"):
    AutoML(shceduler="sh")
  m = AutoML(time_budget_s=0, scheduler="sh", n_trials=3, families=("gbm", "rf"),
             max_budget=3.0, store_path=str(tmp_path / "s.sqlite")).fit(X, y)
  assert {b["family"] for b in m.best_["members"]} <= {"gbm", "rf"}
  assert m.best_["test"]["accuracy"] > 0.7
  assert len(m.leaderboard) == 3 and m.best_["id"] in [r["id"] for r in m.leaderboard]
  pred = m.predict(X[:10])
  assert set(pred) <= {"yes", "no"}
  m2 = AutoML.load(m.save(str(tmp_path / "m.pkl")))
  assert (m2.predict(X[:10]) == pred).all()
  assert m2.evaluate(X, y)["accuracy"] == pytest.approx((m.predict(X) == y).mean())
  with pytest.raises(ConfigError, match="evaluate"):
    m2.evaluate()  # fitted on arrays: no dataset to reload
  with pytest.raises(data_lib.DataError, match="labels"):
    AutoML(time_budget_s=0, scheduler="sh", n_trials=3).fit(X)
  yi = (y == "yes").astype(np.int64) * 7  # integer labels come back as integers
  mi = AutoML(time_budget_s=0, scheduler="sh", n_trials=1, families=("rf",), max_budget=1.0).fit(X, yi)
  pi = mi.predict(X)
  assert pi.dtype == yi.dtype and (pi == yi).mean() > 0.8


def test_tfds_loader_path_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data_lib.load("tfds:mnist", max_rows=30)
    txt = data_lib.load("tfds:imdb_reviews", max_rows=30)
    news = data_lib.load("tfds:ag_news_subset", max_rows=30)  # title + description
    cifar = data_lib.load("tfds:cifar10", max_rows=30)
  assert news.modality == "text" and cifar.X.shape[1:] == (32, 32, 3)
  assert ds.modality == "image" and ds.X.shape[1:3] == (28, 28) and len(ds.y) == 30
  assert ds.test is not None and len(ds.test[1]) == 7
  assert txt.modality == "text" and isinstance(txt.X[0], str) and len(txt.y) == 30


def test_time_budget_stops_the_search():
  from metajax.automl import AutoML
  from sklearn.datasets import load_breast_cancer
  X, y = load_breast_cancer(return_X_y=True)
  m = AutoML(time_budget_s=1.5, families=("rf", "gbm")).fit(X, y)
  ex = m._ex
  # endless brackets (hyperband_iterations=0) end only through the deadline
  # (ex.elapsed: the search's seconds; ex.now() also counts the final selection after it)
  share = ex.cfg.selection.time_share  # the rest of the budget is the final selection's
  assert ex.cfg.search.hyperband_iterations == 0 and 1.5 * (1 - share) <= ex.elapsed < 30
  assert m.best_["test"]["accuracy"] > 0.85


_SHARDED = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax
import numpy as np
from metajax import parallel
from metajax.automl import population
rng = np.random.default_rng(0)
X = rng.normal(size=(48, 5)).astype(np.float32); Y = (X[:, 0] > 0).astype(np.int32)
hp = [dict(learning_rate=0.05, optimizer=o, dropout=0.2)
      for o in ("adam", "sgd", "rmsprop", "adam", "sgd", "rmsprop", "adam", "sgd")]
out = []
for n in (1, 8):
  progs = population.Programs(parallel.make_mesh(n))
  arch = population.Arch("mlp", 2, 8, 16, (5,), 2, 3)
  Xd, Yd = parallel.replicate(X, progs.mesh), parallel.replicate(Y, progs.mesh)
  st, c, p, _ = population.train_population(progs, arch, 8, list(range(8)), hp, [None] * 8, 2,
                                            Xd, Yd, Xd)
  if n == 8:  # the population axis is split over the 8 devices
    m = progs.init(arch, np.arange(8, dtype=np.uint32), population.hp_arrays(hp))
    assert len(m.state.params["Dense_0"]["kernel"].sharding.device_set) == 8
  out.append((p, st))
np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1])):
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("OK", jax.device_count())
"""


def test_population_axis_sharded_over_eight_devices_matches_one():
  import subprocess
  import sys
  r = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True,
                     timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert r.returncode == 0 and "OK 8" in r.stdout, r.stderr[-2000:]
