"""MAML family: gradients against hand-written references, variants, batch norm, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.data.episodes import Tasks
from metajax.errors import ConfigError
from metajax.meta.maml import MAML, MAMLConfig
from metajax.models import MLP, Conv4

KEY = jax.random.key(0)


def regression_tasks(b=3, k=6, q=7):
  ka, kx = jax.random.split(KEY)
  amp = jax.random.uniform(ka, (b, 1, 1), minval=0.5, maxval=2.0)
  x = jax.random.uniform(kx, (b, k + q, 1), minval=-3, maxval=3)
  y = amp * jnp.sin(x)
  return Tasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:])


def image_tasks(b=2, n=3, k=2, q=2, size=8):
  x = jax.random.uniform(KEY, (b, n * (k + q), size, size, 1))
  y = jnp.tile(jnp.arange(n), (b, k + q))
  return Tasks(x[:, : n * k], y[:, : n * k], x[:, n * k:], y[:, n * k:])


def learner(task="regression", model=None, num_ways=None, **kw):
  model = model or MLP(1, hidden=(8, 8))
  return MAML(model, optax.sgd(0.1), MAMLConfig(task=task, **kw), num_ways=num_ways)


def mse(model, params, x, y):
  return jnp.mean((model.apply({"params": params}, x) - y) ** 2)


def reference_grad(model, params, tasks, alpha, steps, first_order=False, adapt=lambda path: True):
  """MAML meta-gradient written out by hand: unrolled Python loop, no scan."""
  def task_loss(p, sx, sy, qx, qy):
    fast = p
    for _ in range(steps):
      g = jax.grad(mse, 1)(model, fast, sx, sy)
      if first_order:
        g = jax.lax.stop_gradient(g)
      fast = jax.tree_util.tree_map_with_path(
          lambda path, w, gw: w - alpha * gw if adapt(path) else w, fast, g)
    return mse(model, fast, qx, qy)
  return jax.jit(jax.grad(lambda p: jnp.mean(jax.vmap(task_loss, (None, 0, 0, 0, 0))(p, *tasks))))(params)


def assert_trees_close(a, b, tol=1e-5):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_unrolled_reference(first_order):
  tasks = regression_tasks()
  lrn = learner(inner_steps=2, inner_lr=0.05, first_order=first_order)
  state = lrn.init(KEY, tasks)
  grads, metrics, _ = jax.jit(lrn.meta_gradient)(state, tasks)
  ref = reference_grad(lrn.model, state.params["model"], tasks, 0.05, 2, first_order)
  assert_trees_close(grads["model"], ref)
  # second order differs from first order (the test would pass vacuously otherwise)
  other = reference_grad(lrn.model, state.params["model"], tasks, 0.05, 2, not first_order)
  assert not np.allclose(ref["Dense_0"]["kernel"], other["Dense_0"]["kernel"], atol=1e-5)


def test_anil_adapts_head_only_and_trains_body():
  tasks = regression_tasks()
  lrn = learner(inner_steps=2, inner_lr=0.05, head_only=True)
  state = lrn.init(KEY, tasks)
  grads, _, _ = jax.jit(lrn.meta_gradient)(state, tasks)
  ref = reference_grad(lrn.model, state.params["model"], tasks, 0.05, 2,
                       adapt=lambda path: path[0].key == "Dense_2")
  assert_trees_close(grads["model"], ref)
  assert np.abs(grads["model"]["Dense_0"]["kernel"]).sum() > 0


def test_remat_map_scan_and_vmap_agree():
  tasks = regression_tasks()
  base = learner(inner_steps=2)
  state = base.init(KEY, tasks)
  g0 = jax.jit(base.meta_gradient)(state, tasks)[0]
  for kw in ({"remat": True}, {"task_batching": "map"}, {"unroll": False},
             {"task_batching": "scan"}, {"task_batching": "scan", "task_chunk": 3}):
    assert_trees_close(jax.jit(learner(inner_steps=2, **kw).meta_gradient)(state, tasks)[0], g0)


@pytest.mark.parametrize("learn_lr,shape", [("per_layer_step", (3,)), ("per_param", (8, 8))])
def test_learned_rates_are_meta_learned(learn_lr, shape):
  tasks = regression_tasks()
  lrn = learner(inner_steps=3, inner_lr=0.02, learn_lr=learn_lr)
  state = lrn.init(KEY, tasks)
  log_lr = state.params["log_lr"]
  assert log_lr["Dense_1"]["kernel"].shape == shape
  np.testing.assert_allclose(np.exp(log_lr["Dense_1"]["kernel"]), 0.02, rtol=1e-6)
  grads, _, _ = jax.jit(lrn.meta_gradient)(state, tasks)
  # rates at their init value: the weight gradient is MAML's
  maml = learner(inner_steps=3, inner_lr=0.02)
  assert_trees_close(grads["model"], jax.jit(maml.meta_gradient)(
      state.replace(params={"model": state.params["model"]}), tasks)[0]["model"])
  assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads["log_lr"]))
  rates = lrn.learning_rates(state)
  assert set(rates) == {f"Dense_{i}/{p}" for i in range(3) for p in ("kernel", "bias")}


def test_eval_curve_shapes_and_adaptation_lowers_support_loss():
  tasks = regression_tasks()
  lrn = learner(inner_lr=1e-3, curve_steps=4, eval_inner_steps=2)
  state = lrn.init(KEY, tasks)
  out = jax.jit(lrn.eval_step)(state, tasks._replace(query_x=tasks.support_x,
                                                      query_y=tasks.support_y), KEY)
  assert out["mse_by_step"].shape == (3, 5) and out["mse"].shape == (3,)
  np.testing.assert_array_equal(out["mse"], out["mse_by_step"][:, 2])
  assert np.all(np.diff(out["mse_by_step"], axis=1) < 0)  # small SGD steps descend


def test_classification_inner_adam_and_msl_run_finite():
  tasks = image_tasks()
  lrn = learner("classification", MLP(3, hidden=(8,)), 3, inner_steps=2,
                inner_optimizer="adam", multi_step_loss=True, msl_anneal_steps=10, curve_steps=3)
  state = lrn.init(KEY, tasks)
  state, m = jax.jit(lrn.train_step)(state, tasks, KEY)
  assert set(m) == {"loss", "accuracy"} and np.isfinite(m["loss"])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(state.params))
  out = jax.jit(lrn.eval_step)(state, tasks, KEY)
  assert out["accuracy_by_step"].shape == (2, 4) and out["accuracy"].shape == (2,)


def test_batch_norm_transductive_vs_per_step():
  tasks = image_tasks(b=2)
  model = Conv4(3, filters=4, depth=1)
  trans = learner("classification", model, 3)
  st = trans.init(KEY, tasks)
  fast = {}
  x = tasks.query_x[0]
  full = trans._forward(st.params, st.model_state, fast, x, 0, train=False)[0]
  half = trans._forward(st.params, st.model_state, fast, x[:3], 0, train=False)[0]
  assert not np.allclose(full[:3], half)  # batch statistics of the set: depends on the set

  per = learner("classification", model, 3, inner_steps=2, batch_norm="per_step")
  sp = per.init(KEY, tasks)
  assert sp.params["bn"]["BatchNorm_0"]["scale"].shape == (3, 4)
  assert "BatchNorm_0" not in sp.params["model"]
  assert sp.model_state["batch_stats"]["BatchNorm_0"]["mean"].shape == (3, 4)
  sp2, _ = jax.jit(per.train_step)(sp, tasks, KEY)
  scan = learner("classification", model, 3, inner_steps=2, batch_norm="per_step",
                 task_batching="scan")
  g_scan, _, stats_scan = jax.jit(scan.meta_gradient)(sp, tasks)  # per-task chunks
  g_vmap, _, stats_vmap = jax.jit(per.meta_gradient)(sp, tasks)
  assert_trees_close(g_scan, g_vmap)
  assert_trees_close(stats_scan, stats_vmap, tol=1e-4)  # activations O(1), summed in another order
  moved = np.abs(sp2.model_state["batch_stats"]["BatchNorm_0"]["mean"]).sum(-1)
  assert np.all(moved > 0)  # every step's running mean was updated
  full = per._forward(sp2.params, sp2.model_state, fast, x, 1, train=False)[0]
  half = per._forward(sp2.params, sp2.model_state, fast, x[:3], 1, train=False)[0]
  np.testing.assert_allclose(full[:3], half, rtol=1e-5, atol=1e-5)  # running stats: not transductive


@pytest.mark.parametrize("kw,key", [
    ({"inner_steps": 0}, "learner.inner_steps"),
    ({"inner_lr": -0.1}, "learner.inner_lr"),
    ({"inner_lr": 0.0}, "learner.inner_lr"),
    ({"eval_inner_steps": 0}, "learner.eval_inner_steps"),
    ({"learn_lr": "per_tensor"}, "learner.learn_lr"),
    ({"batch_norm": "none"}, "learner.batch_norm"),
    ({"task_batching": "pmap"}, "learner.task_batching"),
    ({"task_chunk": 0}, "learner.task_chunk"),
])
def test_bad_config_raises(kw, key):
  with pytest.raises(ConfigError) as e:
    learner(**kw)
  assert e.value.key == key


def test_scan_chunk_must_divide_the_meta_batch():
  tasks = regression_tasks(b=3)
  lrn = learner(task_batching="scan", task_chunk=2)
  with pytest.raises(ConfigError, match="does not divide the meta-batch of 3") as e:
    lrn.meta_gradient(lrn.init(KEY, tasks), tasks)
  assert e.value.key == "learner.task_chunk"


def test_bad_model_raises_before_compiling():
  tasks = image_tasks()
  with pytest.raises(ConfigError, match="ways"):  # 5 logits for 3-way tasks
    learner("classification", Conv4(5, filters=4, depth=1), 3).init(KEY, tasks)

  class Needs2D(nn.Module):
    @nn.compact
    def __call__(self, x, train=True):
      return nn.Dense(1)(nn.Conv(2, (3, 3))(x)).mean((1, 2))

  with pytest.raises(ConfigError, match="cannot take inputs"):
    learner(model=Needs2D()).init(KEY, regression_tasks())
  with pytest.raises(ConfigError, match="num_ways"):
    learner("classification", Conv4(5, filters=4, depth=1), None)
  with pytest.raises(ConfigError, match="learner.head"):
    learner(head_only=True, head="Dense_9").init(KEY, regression_tasks())


def build(c, task):
  """The learner of a config as the fewshot driver builds it."""
  from metajax import models, optim
  from metajax.meta import ALGORITHMS
  return ALGORITHMS.get(c.learner.name)(
      c.learner, lambda n: models.from_config(c.model, num_outputs=n),
      optim.make_optimizer(c.optimizer, c.train.steps), c.episodes.ways, task)


def test_build_variants_and_unknown_option():
  from conftest import fewshot_config
  sinusoid = lambda mode: fewshot_config("configs/maml_sinusoid.py", mode)
  lrn = build(sinusoid("metasgd,tiny"), "regression")
  assert lrn.config.learn_lr == "per_param" and lrn.num_ways is None
  assert lrn.model.num_outputs == 1 and lrn.config.task == "regression"
  c = fewshot_config("configs/maml_glyphs.py", "fomaml")
  lrn = build(c, "classification")
  assert lrn.config.first_order and lrn.num_ways == 5 and lrn.config.test_steps == 3
  assert lrn.model.num_outputs == 5 and lrn.model.filters == 64
  # The flags a name sets (VARIANTS) are that name: a contradicting flag is refused, naming it;
  # flags the name leaves free combine with it (first-order LSLR).
  c.learner.first_order = False
  with pytest.raises(ConfigError, match="learner.first_order=False.*'fomaml'"):
    build(c, "classification")
  c = fewshot_config("configs/maml_glyphs.py", "lslr,tiny")
  c.learner.first_order = True
  lrn = build(c, "classification")
  assert lrn.config.first_order and lrn.config.learn_lr == "per_layer_step"
  c = sinusoid("tiny")
  with c.unlocked():
    c.learner.inner_stepz = 2
  with pytest.raises(ConfigError, match="learner.inner_stepz"):
    build(c, "regression")
  c = sinusoid("tiny")
  c.learner.inner_steps = -1
  with pytest.raises(ConfigError, match="learner.inner_steps"):
    build(c, "regression")
  with pytest.raises(ConfigError, match="names 2 algorithms.*at most one of"):
    fewshot_config("configs/maml_glyphs.py", "lslr,metasgd")


def test_predict_is_the_eval_step_adaptation():
  """predict's argmax on one task scores what eval_step reports for it."""
  tasks = image_tasks(b=2)
  lrn = learner("classification", MLP(3, hidden=(8,)), 3, inner_steps=2, eval_inner_steps=3)
  state = lrn.init(KEY, tasks)
  out = jax.jit(lrn.eval_step)(state, tasks, KEY)
  for b in range(2):
    logits = jax.jit(lrn.predict)(state, tasks.support_x[b], tasks.support_y[b], tasks.query_x[b])
    assert logits.shape == (6, 3)
    acc = np.mean(np.argmax(logits, -1) == tasks.query_y[b])
    np.testing.assert_allclose(acc, out["accuracy"][b], atol=1e-6)


def test_remat_keeps_second_order_memory_flat_in_inner_steps():
  x = jax.random.normal(KEY, (1, 400, 4))
  tasks = Tasks(x[:, :200], x[:, :200, :1] ** 2, x[:, 200:], x[:, 200:, :1] ** 2)

  def temp_bytes(steps, remat):
    lrn = MAML(MLP(1, hidden=(64, 64)), optax.sgd(0.1),
               MAMLConfig(inner_steps=steps, remat=remat, task="regression"))
    state = jax.eval_shape(lrn.init, KEY, tasks)
    compiled = jax.jit(lambda s, t: lrn.meta_gradient(s, t)[0]).lower(state, tasks).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  # remat keeps only the fast weights per step (~18 KB here), not the activations
  assert temp_bytes(8, True) < 1.5 * temp_bytes(2, True)
  assert temp_bytes(8, False) > 2.5 * temp_bytes(2, False)
