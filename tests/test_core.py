"""The shared layer: registry, errors, run log, optimizer factory, train state, read-only
checkpoint restore, model cards; and the report helpers."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from metajax import checkpoint, optim, runlog, saved
from metajax.errors import ConfigError
from metajax.registry import Registry
from metajax.report import mean_ci95, md_table
from metajax.state import TrainState


def test_registry_unknown_name_lists_valid_ones():
  r = Registry("model")
  r.register("b", 1)
  r.register("a", "json:dumps")  # lazy
  assert r.get("a") is json.dumps and r.names() == ["a", "b"]
  with pytest.raises(ConfigError, match=r"config.model='c' is invalid.*Valid: a, b"):
    r.get("c")
  with pytest.raises(KeyError):
    r.register("b", 2)


def test_mean_ci95_matches_formula():
  x = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
  m, h = mean_ci95(x)
  assert m == pytest.approx(0.6) and h == pytest.approx(1.96 * x.std(ddof=1) / np.sqrt(5))
  assert "| a | b |" in md_table(["a", "b"], [[1, 2.5]])


def test_metric_writer_truncates_on_resume(tmp_path):
  w = runlog.MetricWriter(str(tmp_path))
  for s in (10, 20, 30):
    w.write(s, {"train/loss": s / 10})
  w.close()
  with open(tmp_path / runlog.METRICS_FILE, "a") as f:
    f.write('{"step": 40, "train/lo')  # torn line of a killed run
  assert [r["step"] for r in runlog.read_metrics(str(tmp_path))] == [10, 20, 30]
  w = runlog.MetricWriter(str(tmp_path), resume_step=20)
  w.write(30, {"train/loss": 9.0})
  w.close()
  rows = runlog.read_metrics(str(tmp_path))
  assert [(r["step"], r["train/loss"]) for r in rows] == [(10, 1.0), (20, 2.0), (30, 9.0)]


def test_prepare_workdir_refuses_other_config(tmp_path):
  c = ml_collections.ConfigDict({"seed": 0, "model": {"filters": 8},
                                 "train": {"steps": 10}, "eval": {"episodes": 4}})
  wd = str(tmp_path / "run")
  assert runlog.prepare_workdir(wd, c) is False
  assert runlog.prepare_workdir(wd, c) is True
  recorded = lambda: json.load(open(os.path.join(wd, "config.json")))
  c.model.filters, c.seed = 16, 1  # every differing key is named, with both values
  with pytest.raises(ConfigError, match=r"model.filters: 8 -> 16, seed: 0 -> 1"):
    runlog.prepare_workdir(wd, c)
  assert recorded()["model"]["filters"] == 8  # a refused run leaves the workdir as it was
  c.model.filters, c.seed = 8, 0
  c.train.steps = 5  # fewer steps than the run on disk: refused
  with pytest.raises(ConfigError, match=r"train.steps: 10 -> 5"):
    runlog.prepare_workdir(wd, c)
  c.train.steps, c.eval.episodes = 20, 600  # more steps and any eval.* key: resumed
  assert runlog.prepare_workdir(wd, c) is True
  assert recorded()["train"]["steps"] == 20 and recorded()["eval"]["episodes"] == 600


def test_workdir_that_is_a_file_or_unwritable_is_a_config_error(tmp_path):
  c = ml_collections.ConfigDict({"seed": 0})
  f = tmp_path / "file"
  f.write_text("x")
  for wd in (f, f / "below"):
    with pytest.raises(ConfigError, match="is a file, not a directory") as e:
      runlog.prepare_workdir(str(wd), c)
    assert e.value.key == "workdir"
  assert f.read_text() == "x"
  with pytest.raises(ConfigError, match="workdir"):
    runlog.check_workdir("")
  if os.geteuid() != 0:  # root writes anywhere
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
      runlog.check_workdir(str(ro / "run"))


def test_check_finite_names_the_metric():
  runlog.check_finite(3, {"train/loss": 1.0, "train/accuracy": float("nan")})
  with pytest.raises(FloatingPointError, match="train/loss became nan at step 7"):
    runlog.check_finite(7, {"train/loss": float("nan")})


def test_atomic_write_leaves_no_temp_files(tmp_path):
  runlog.atomic_write(str(tmp_path / "x.txt"), "hello")
  assert os.listdir(tmp_path) == ["x.txt"] and (tmp_path / "x.txt").read_text() == "hello"


# ---------------------------------------------------------------- optimizer factory

def _params():
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"w": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (4,))}


def _run(tx, steps=6, state=None):
  """Params after `steps` updates on a fixed quadratic, and the final optimizer state."""
  params = _params()
  state = tx.init(params) if state is None else state
  grad = jax.grad(lambda p: sum(jnp.sum((x - 0.5) ** 2 * (i + 1))
                                for i, x in enumerate(jax.tree.leaves(p))))
  for _ in range(steps):
    updates, state = tx.update(grad(params), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize("cfg, reference", [
    (dict(name="adamw", learning_rate=1e-2, weight_decay=0.1, clip_norm=0.5, schedule="cosine",
          warmup_steps=2),
     lambda: optax.chain(optax.clip_by_global_norm(0.5),
                         optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 6),
                                     weight_decay=0.1))),
    (dict(name="adam", learning_rate=3e-3, schedule="step", decay_every=2, decay_rate=0.5),
     lambda: optax.adam(optax.exponential_decay(3e-3, 2, 0.5, staircase=True))),
    (dict(name="sgd", learning_rate=0.05),
     lambda: optax.sgd(0.05, momentum=0.9)),
])
def test_make_optimizer_equals_the_optax_chain(cfg, reference):
  tx = optim.make_optimizer(ml_collections.ConfigDict(cfg), steps=6)
  ours, state = _run(tx)
  ref, _ = _run(reference())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), ours, ref)
  assert float(optim.hyperparams(state)["log_learning_rate"]) == pytest.approx(
      np.log(cfg["learning_rate"]), rel=1e-6)


def test_switch_vmapped_over_members_equals_each_optimizer_alone():
  choices = ("adam", "sgd", "rmsprop")
  tx = optim.make_optimizer(dict(name="switch", learning_rate=1e-2, choices=choices))
  rates = jnp.array([1e-2, 3e-2, 1e-3])

  def member(i, lr):
    state = optim.with_hyperparams(tx.init(_params()), optimizer=i, log_learning_rate=jnp.log(lr))
    return _run(tx, state=state)

  population, states = jax.jit(jax.vmap(member))(jnp.arange(3), rates)
  for i, name in enumerate(choices):
    alone, _ = _run(optim.make_optimizer(dict(name=name, learning_rate=float(rates[i]))))
    jax.tree.map(lambda p, a: np.testing.assert_allclose(p[i], a, rtol=2e-5, atol=1e-6),
                 population, alone)
  np.testing.assert_allclose(optim.learning_rate(states), rates, rtol=1e-6)


def test_with_hyperparams_and_learning_rate():
  tx = optim.make_optimizer(dict(name="adam", learning_rate=1e-3, schedule="cosine",
                                 warmup_steps=0), steps=4)
  state = tx.init(_params())
  new = optim.with_hyperparams(state, log_learning_rate=np.log(0.1), weight_decay=0.5)
  hp = optim.hyperparams(new)
  assert hp["log_learning_rate"].dtype == optim.hyperparams(state)["log_learning_rate"].dtype
  assert float(hp["weight_decay"]) == 0.5
  _, after = _run(tx, steps=2, state=new)
  # the rate of the step just taken: 0.1 x the cosine multiplier at step 1 of 4
  assert float(optim.learning_rate(after)) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi / 4)),
                                                             rel=1e-5)
  with pytest.raises(KeyError, match="no hyperparameter 'lr'"):
    optim.with_hyperparams(state, lr=0.1)


@pytest.mark.parametrize("cfg, key", [
    (dict(name="lion"), "optimizer.name"), (dict(schedule="linear"), "optimizer.schedule"),
    (dict(learning_rate=0.0), "optimizer.learning_rate"), (dict(lr=1.0), "optimizer.lr"),
    (dict(schedule="step"), "optimizer.decay_every"),
    (dict(schedule="wsd", decay_fraction=1.0), "optimizer.decay_fraction"),
])
def test_optimizer_check_names_the_key(cfg, key):
  with pytest.raises(ConfigError) as e:
    optim.make_optimizer(cfg)
  assert e.value.key == key


# ---------------------------------------------------------------- train state

def test_train_state_apply_gradients_is_one_optax_step():
  tx = optim.make_optimizer(dict(name="adam", learning_rate=1e-2))
  params = _params()
  state = TrainState.create(params, tx, model_state={"batch_stats": {"m": jnp.zeros(2)}})
  grads = jax.tree.map(jnp.ones_like, params)
  new = state.apply_gradients(grads, tx, model_state={"batch_stats": {"m": jnp.ones(2)}})
  updates, _ = tx.update(grads, tx.init(params), params)
  jax.tree.map(np.testing.assert_allclose, new.params, optax.apply_updates(params, updates))
  assert int(new.step) == 1 and float(new.model_state["batch_stats"]["m"][0]) == 1.0
  assert TrainState.create(params, tx).model_state == {}


# ---------------------------------------------------------------- checkpoints and model cards

def _listing(path):
  return sorted((os.path.relpath(os.path.join(r, f), path), os.stat(os.path.join(r, f)).st_mtime_ns)
                for r, ds, fs in os.walk(path) for f in fs + ds)


def test_checkpoint_restore_is_read_only_and_strict(tmp_path):
  tx = optim.make_optimizer(dict(name="adam", learning_rate=1e-2))
  state = TrainState.create(_params(), tx)
  wd = str(tmp_path / "run")
  mngr = checkpoint.manager(wd)
  checkpoint.save(mngr, 3, state.replace(step=jnp.int32(3)), force=True)
  mngr.wait_until_finished()
  mngr.close()
  before = _listing(wd)
  restored, step = checkpoint.restore(wd, jax.eval_shape(lambda: state))
  assert step == 3 == int(restored.step) == checkpoint.latest_step(wd)
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  other = TrainState.create({"w": jnp.zeros((5, 4)), "b": jnp.zeros(4)}, tx)
  with pytest.raises(ConfigError, match="does not fit this model"):
    checkpoint.restore(wd, other)
  assert _listing(wd) == before  # reading wrote nothing
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    checkpoint.restore(str(empty), state)
  assert checkpoint.latest_step(str(empty)) is None and os.listdir(empty) == []


def test_model_card_round_trip_and_errors(tmp_path):
  saved.write_card(str(tmp_path), "fewshot", model={"name": "conv4", "filters": 8})
  card = saved.read_card(str(tmp_path))
  assert card == {"kind": "fewshot", "model": {"name": "conv4", "filters": 8}}
  with pytest.raises(KeyError, match="no loader"):
    saved.write_card(str(tmp_path), "nope")
  with pytest.raises(ConfigError, match="holds no model.json") as e:
    saved.load_trained(str(tmp_path / "mistyped"))
  assert e.value.key == "workdir" and not (tmp_path / "mistyped").exists()
