"""Hyperparameter meta-learning (metajax.hpo): tasks split by dataset, determinism, the tbptt
hypergradient against finite differences, pes on a quadratic, meta-training progress,
resume, the learned-rates file and config errors."""

import dataclasses
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import experiments, optim
from metajax.errors import ConfigError
from metajax.hpo import learned, meta, spec, tasks as tasks_lib
from metajax.hpo.inner import Problem, init_hparams


def tiny_config():
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "hp_metalearn.py")
  s = importlib.util.spec_from_file_location("hp_metalearn_config", path)
  m = importlib.util.module_from_spec(s)
  s.loader.exec_module(m)
  return m.get_config("tiny")


@pytest.fixture(scope="module")
def setup():
  c = tiny_config()
  fam = spec.family_spec(c, "mlp")
  pools = [tasks_lib.load_pool(n, fam, max_rows=300) for n in fam.train_datasets]
  return c, fam, pools


@pytest.fixture(scope="module")
def tbptt(setup):
  """A tbptt learner of the tiny config with its jitted meta-step and evaluation (shared, so
  the tests compile them once)."""
  c, fam, _ = setup
  lrn = meta.MetaLearner(fam, spec.inner_spec(c), spec.meta_spec(c, "tbptt"),
                         optim.make_optimizer(dict(name="adam", learning_rate=0.1)))
  return lrn, jax.jit(lrn.meta_step), jax.jit(lrn.evaluate)


def distribution(setup, seed=0):
  _, fam, pools = setup
  return tasks_lib.TaskDistribution(fam, pools, tasks_lib.TaskShape(), seed)


# ---------------------------------------------------------------- tasks

def test_tasks_come_only_from_meta_train_datasets(setup):
  c, fam, _ = setup
  dist = distribution(setup)
  seen = set()
  for step in range(40):
    t, window, names = dist.batch(step, 4, 3)
    seen.update(names)
    assert t.x_train.shape == (4, fam.train_rows, fam.input_shape[0])
    assert t.x_val.shape == (4, fam.val_rows, fam.input_shape[0])
    assert ((0 <= window) & (window < 3)).all()
    for i in range(4):  # labels in range; padding rows are zeros
      n, k = int(t.n_train[i]), int(t.n_classes[i])
      assert 2 <= k <= fam.max_classes and 0 < n <= fam.train_rows
      assert t.y_train[i, :n].max() < k and not t.x_train[i, n:].any()
  assert seen == set(fam.train_datasets) and not seen & set(fam.test_datasets)


def test_absent_tfds_data_is_missing_not_downloaded(setup, tmp_path):
  _, fam, _ = setup
  with pytest.raises(tasks_lib.MissingData, match="no prepared tfds dataset"):
    tasks_lib.load_pool("tfds:imdb_reviews", fam, data_dir=str(tmp_path))
  assert not any(tmp_path.iterdir())


def test_split_by_dataset_is_enforced():
  c = tiny_config()
  c.families.mlp.test_datasets = ("iris", "wine")  # wine is meta-train
  with pytest.raises(ConfigError, match="wine"):
    spec.check(c)
  c = tiny_config()
  c.families.cnn.train_datasets, c.families.cnn.test_datasets = ("digits",), ("uci_digits",)
  c.run_families = ("cnn",)
  with pytest.raises(ConfigError, match="uci_digits"):  # the same data under another name
    spec.check(c)
  c.families.cnn.train_datasets, c.families.cnn.test_datasets = ("glyph_letters",), ("glyphs",)
  with pytest.raises(ConfigError, match="glyphs"):  # letters rendered from glyphs' classes
    spec.check(c)


def test_family_task_and_pool_sizes_override_the_shared_ones():
  c = tiny_config()
  assert spec.family_spec(c, "mlp").train_rows == c.tasks.train_rows
  c.families.mlp.train_rows = 48
  assert spec.family_spec(c, "mlp").train_rows == 48
  assert spec.family_spec(c, "cnn").train_rows == c.families.cnn.train_rows != 48
  c.families.mlp.max_rows = 0
  with pytest.raises(ConfigError, match="families.mlp.max_rows"):
    spec.check(c)


def test_same_seed_same_tasks_and_meta_step(setup, tbptt):
  a, b, other = distribution(setup, 3), distribution(setup, 3), distribution(setup, 4)
  ta, wa, na = a.batch(5, 4, 3)
  tb, wb, nb = b.batch(5, 4, 3)
  for x, y in zip(ta, tb):
    np.testing.assert_array_equal(x, y)
  assert na == nb and (wa == wb).all()
  assert any(not np.array_equal(x, y) for x, y in zip(ta, other.batch(5, 4, 3)[0]))

  lrn, step, _ = tbptt
  results = []
  for _ in range(2):  # fresh state, same seed and batch: bitwise the same step
    batch = (tasks_lib.Tasks(*(x[:2] for x in ta)), wa[:2])
    state, m = step(lrn.init(jax.random.key(0)), batch, jax.random.key(1))
    results.append((state.hparams, state.inner, m))
  jax.tree.map(np.testing.assert_array_equal, *results)


# ---------------------------------------------------------------- estimators

def test_tbptt_hypergradient_matches_finite_differences(setup):
  c, fam, _ = setup
  inner = spec.InnerSpec(steps=4, segments=2, batch_size=0, optimizer="sgd", default_lr=0.05,
                         init_weight_decay=1e-2, learn_weight_decay=True)
  m = dataclasses.replace(spec.meta_spec(c, "tbptt"), unroll=4)
  lrn = meta.MetaLearner(fam, inner, m, optim.make_optimizer(c.optimizer))
  task = jax.tree.map(lambda x: x[0], distribution(setup).batch(0, 1, 1)[0])
  unroll = lrn._window(task, jnp.array(True), jax.random.key(0))
  state0 = lrn.problem.init(jax.random.key(0))
  hp = init_hparams(len(lrn.problem.names), inner)
  loss = jax.jit(lambda h: unroll(h, state0, jax.random.key(1))[1])
  g, _, _ = meta.tbptt_gradient(unroll, hp, state0, jax.random.key(1))
  eps = 1e-2
  for name, arr in hp.items():
    for idx in np.ndindex(arr.shape):
      e = jnp.zeros_like(arr).at[idx].set(eps)
      fd = (loss(dict(hp, **{name: arr + e})) - loss(dict(hp, **{name: arr - e}))) / (2 * eps)
      np.testing.assert_allclose(g[name][idx], fd, rtol=0.05, atol=2e-4, err_msg=f"{name}{idx}")
  assert np.abs(np.asarray(g["log_lr"])).min() > 1e-3  # every layer and segment matters here


def test_pes_is_unbiased_on_a_quadratic():
  """Summed over the windows of a run, PES's mean over many pairs matches the true gradient
  of the whole run; truncated backprop (one window at a time) does not."""
  a, x0, steps, windows = jnp.diag(jnp.array([1.0, 0.3])), jnp.array([1.0, -2.0]), 2, 3

  def unroll(theta, x, key):
    del key
    for _ in range(steps):
      x = x - jnp.exp(theta["log_lr"]) * (a @ x)
    return x, 0.5 * x @ a @ x

  def total(theta):
    x, out = x0, 0.0
    for _ in range(windows):
      x, l = unroll(theta, x, None)
      out += l
    return out

  theta = {"log_lr": jnp.array(-1.0)}
  true = float(jax.grad(total)(theta)["log_lr"])
  pairs = 4000
  states, xi = jnp.broadcast_to(x0, (pairs, 2, 2)), {"log_lr": jnp.zeros((pairs,))}
  pes, tbptt, x = 0.0, 0.0, x0
  for w in range(windows):
    g, states, xi, _ = meta.pes_gradient(unroll, theta, states, xi, jax.random.key(w), 0.05)
    pes += float(g["log_lr"])
    gt, x, _ = meta.tbptt_gradient(unroll, theta, x, None)
    tbptt += float(gt["log_lr"])
  assert abs(pes - true) < 0.06 * abs(true), (pes, true)
  assert abs(tbptt - true) > 0.2 * abs(true), (tbptt, true)  # short-horizon bias


def test_meta_training_lowers_meta_validation_loss(setup, tbptt):
  lrn, step, evaluate = tbptt
  m, dist = lrn.meta, distribution(setup)
  val = dist.fixed(8)
  state = lrn.init(jax.random.key(0))  # from a rate too low for a 12-step run
  state = state.replace(hparams=init_hparams(len(lrn.problem.names), lrn.inner, np.log(3e-4)))
  before = float(evaluate(state.hparams, val, jax.random.key(9))["objective"])
  windows = lrn.inner.steps // m.unroll
  for s in range(30):
    state, metrics = step(state, dist.batch(s, m.tasks, windows)[:2], jax.random.key(s))
  after = float(evaluate(state.hparams, val, jax.random.key(9))["objective"])
  assert np.isfinite(float(metrics["meta_loss"]))
  assert after < before - 0.1, (before, after)
  assert float(state.hparams["log_lr"].mean()) > np.log(3e-4) + 0.5  # it raised the rates


# ---------------------------------------------------------------- driver, resume, files

def test_resume_restores_latest_checkpoint_and_rates_round_trip(tmp_path):
  c = tiny_config()
  c.meta.estimators = ("tbptt",)
  c.transfer.random_runs = 1
  wd = str(tmp_path / "run")
  first = experiments.run(c, wd)
  assert os.path.exists(first["report"])
  rates = learned.load_learned_rates(wd)
  assert rates.estimator == "tbptt" and set(rates.families) == {"mlp"}
  mlp = rates.families["mlp"]
  assert mlp.log_lr.shape == (len(mlp.layers), c.inner.segments)
  assert mlp.layers == ("Dense_0", "Dense_1") and mlp.inner_steps == c.inner.steps
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  # the kept rates are those of the lowest meta-validation objective (the first on ties)
  objective = {r["step"]: r["tbptt/mlp/objective"] for r in rows if "tbptt/mlp/objective" in r}
  assert sorted(objective) == [0, 2, 4]
  with open(os.path.join(wd, "results.json")) as f:
    selected = json.load(f)["selected_step"]["tbptt/mlp"]
  assert selected == min(objective, key=lambda s: (objective[s], s))
  if selected == 0:
    np.testing.assert_allclose(mlp.log_lr, np.log(c.inner.default_lr), rtol=1e-6)
  # drop the last checkpoint: a rerun resumes from the one before and ends the same
  ckpts = os.path.join(wd, "checkpoints")
  assert sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) == [2, 4]
  shutil.rmtree(os.path.join(ckpts, "4"))
  again = experiments.run(c, wd)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    rows2 = [json.loads(line) for line in f]
  assert [r["step"] for r in rows2] == [r["step"] for r in rows]
  key = "tbptt/mlp/meta_loss"
  np.testing.assert_allclose([r[key] for r in rows2 if key in r],
                             [r[key] for r in rows if key in r], rtol=1e-6)
  np.testing.assert_allclose(learned.load_learned_rates(wd).families["mlp"].log_lr, mlp.log_lr,
                             rtol=1e-6)
  assert again["results"].keys() == first["results"].keys() == {"mlp/iris"}
  c.eval.select = "last"
  experiments.run(c, str(tmp_path / "last"))
  with open(os.path.join(tmp_path, "last", "results.json")) as f:
    assert json.load(f)["selected_step"]["tbptt/mlp"] == c.train.steps


def test_learned_rates_file_round_trips(tmp_path):
  r = learned.FamilyRates("mlp", ("Dense_0", "Dense_1"), 2, 100, 32, "adam",
                          np.array([[-5.0, -6.0], [-4.0, -7.5]]), np.array([-9.0, -8.0]),
                          {"name": "mlp", "hidden": [16]}, ("wine",))
  path = learned.save_learned_rates(str(tmp_path), {"pes": {"mlp": r},
                                                    "tbptt": {"mlp": dataclasses.replace(
                                                        r, log_wd=None)}}, "pes")
  back = learned.load_learned_rates(str(tmp_path))
  assert back.estimator == "pes" and back.estimators == ("pes", "tbptt")
  got = back.families["mlp"]
  np.testing.assert_array_equal(got.log_lr, r.log_lr)
  np.testing.assert_array_equal(got.log_wd, r.log_wd)
  assert got.layers == r.layers and got.model == r.model and got.segment(99) == 1
  assert got.learning_rate("Dense_1", step=60) == pytest.approx(np.exp(-7.5))
  assert learned.load_learned_rates(path, "tbptt").families["mlp"].log_wd is None
  with pytest.raises(ConfigError, match="adam"):  # 'adam' is no estimator: lists the valid
    learned.load_learned_rates(str(tmp_path), "adam")
  with open(path, "w") as f:
    json.dump({"format": "other"}, f)
  with pytest.raises(ConfigError, match="version"):
    learned.load_learned_rates(str(tmp_path))
  with pytest.raises(ConfigError, match="no such file"):
    learned.load_learned_rates(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("key,value,valid", [
    ("run_families", ("mlp", "transformer"), "'mlp', 'cnn', 'gru'"),
    ("meta.estimators", ("tbptt", "reinforce"), "'tbptt', 'pes'"),
    ("inner.optimizer", "lion", "'adam', 'sgd'"),
    ("meta.unroll", 5, "a divisor of 12"),
    ("eval.select", "worst", "'best', 'last'"),
    ("families.mlp.train_datasets", ("wine", "winee"), "breast_cancer"),
])
def test_bad_config_is_a_config_error_before_anything_runs(tmp_path, key, value, valid):
  c = tiny_config()
  *path, field = key.split(".")
  node = c
  for part in path:
    node = node[part]
  node[field] = value
  wd = tmp_path / "run"
  with pytest.raises(ConfigError) as e:
    experiments.run(c, str(wd))
  msg = str(e.value)
  assert repr(value if not isinstance(value, tuple) else value[-1]) in msg or str(value) in msg
  assert valid in msg
  assert not wd.exists()


# ---------------------------------------------------------------- text family, sharding

def _texts(name, seed):
  from metajax.data.tabular import Dataset
  rng = np.random.default_rng(seed)
  words = [[f"w{c}x{j}" for j in range(6)] for c in range(3)]
  y = rng.integers(0, 3, 90)
  X = [" ".join(rng.choice(words[c], 6)) for c in y]
  return Dataset(name, "text", X, y)


def test_gru_family_on_text_tasks():
  from metajax import data
  for n, s in (("tiny_texts_a", 0), ("tiny_texts_b", 1)):
    if n not in data.DATASETS:
      data.DATASETS.register(n, lambda data_dir="", n=n, s=s: _texts(n, s))
  c = tiny_config()
  c.run_families = ("gru",)
  g = c.families.gru
  g.model.units, g.seq_len, g.vocab_size, g.max_classes = 8, 8, 60, 3
  g.train_datasets, g.test_datasets = ("tiny_texts_a",), ("tiny_texts_b",)
  spec.check(c)
  fam, inner = spec.family_spec(c, "gru"), spec.inner_spec(c)
  pool = tasks_lib.load_pool("tiny_texts_a", fam)
  assert pool.x.dtype == np.int32 and pool.x.shape == (90, 8) and pool.x.max() < 60
  dist = tasks_lib.TaskDistribution(fam, [pool], tasks_lib.TaskShape(), 0)
  lrn = meta.MetaLearner(fam, inner, spec.meta_spec(c, "tbptt"), optim.make_optimizer(c.optimizer))
  assert lrn.problem.names == ("Dense_0", "b", "emb", "wh", "wx")
  state, m = jax.jit(lrn.meta_step)(lrn.init(jax.random.key(0)), dist.batch(0, 2, 3)[:2],
                                    jax.random.key(1))
  assert np.isfinite(float(m["meta_loss"]))
  assert np.isfinite(np.asarray(state.hparams["log_lr"])).all()


SHARDED = """
import jax, numpy as np
from metajax import optim, parallel
from metajax.hpo import meta, spec, tasks as tasks_lib
import test_hpo as t
assert jax.device_count() == 2
c = t.tiny_config()
c.meta.tasks = 4
fam, inner = spec.family_spec(c, "mlp"), spec.inner_spec(c)
pools = [tasks_lib.load_pool(n, fam, max_rows=300) for n in fam.train_datasets]
dist = tasks_lib.TaskDistribution(fam, pools, tasks_lib.TaskShape(), 0)
lrn = meta.MetaLearner(fam, inner, spec.meta_spec(c, "pes"), optim.make_optimizer(c.optimizer))
batch = dist.batch(0, 4, 3)[:2]
single = jax.jit(lrn.meta_step)(lrn.init(jax.random.key(0)), batch, jax.random.key(1))
mesh = parallel.make_mesh()
init = lrn.init(jax.random.key(0))
sh, shard = meta.shardings(init, mesh), parallel.batch_sharding(mesh)
repl = parallel.replicated(mesh)
traces = []
def step_fn(s, b, k):
  traces.append(1)
  return lrn.meta_step(s, b, k)
step = jax.jit(step_fn, in_shardings=(sh, shard, repl), out_shardings=(sh, repl), donate_argnums=0)
state, m = step(jax.device_put(init, sh), parallel.shard_batch(batch, mesh), jax.random.key(1))
assert state.inner.params["Dense_0"]["kernel"].sharding.spec[0] == "data"
close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
jax.tree.map(close, single, (state, m))
for i in range(1, 3):
  state, m = step(state, parallel.shard_batch(dist.batch(i, 4, 3)[:2], mesh), jax.random.key(i))
assert len(traces) == 1, traces
print("OK")
"""


def test_meta_step_sharded_over_two_devices_matches_one_and_compiles_once():
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # tests/ on the path, not the package 'tests' (an installed package may own that name).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([root, os.path.join(root, "tests")]))
  r = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True,
                     timeout=300, cwd=root)
  assert r.returncode == 0 and "OK" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]


def test_cnn_im2col_matches_xla_values_and_gradients():
  """The cnn family's CPU path (conv_impl='im2col', reshape pooling) has the parameter tree
  and outputs of nn.Conv + nn.avg_pool."""
  from metajax.models.cnn import CNN
  x = jax.random.normal(jax.random.key(0), (3, 13, 13, 1))
  a, b = CNN(5, (4, 6), 8), CNN(5, (4, 6), 8, conv_impl="im2col")
  p, q = jax.jit(a.init)(jax.random.key(1), x), jax.jit(b.init)(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, p, q)
  ya, ga = jax.jit(jax.value_and_grad(lambda p: a.apply(p, x).sum()))(p)
  yb, gb = jax.jit(jax.value_and_grad(lambda p: b.apply(p, x).sum()))(p)
  np.testing.assert_allclose(ya, yb, rtol=1e-5)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5), ga, gb)
