"""The fast conv / pool paths of metajax.models.layers equal nn.Conv / nn.max_pool:
values, gradients, and second-order gradients through an inner SGD step (MAML)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import models
from metajax.data.episodes import Tasks
from metajax.meta.maml import MAML, MAMLConfig
from metajax.models import layers



def _close(a, b, tol=2e-4):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("ksize,cin,hw", [((3, 3), 3, (7, 7)), ((3, 3), 1, (6, 5)), ((2, 2), 2, (5, 4))])
def test_im2col_matches_lax_values_and_grads(ksize, cin, hw):
  impl = "im2col"
  kx, kk = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (2, *hw, cin))
  k = jax.random.normal(kk, (*ksize, cin, 5))
  f = lambda impl: jax.jit(jax.value_and_grad(
      lambda x, k: jnp.sum(jnp.sin(layers.conv2d(x, k, impl))), (0, 1)))
  _close(f(impl)(x, k), f("xla")(x, k))


def test_conv_module_same_params_as_nn_conv():
  x = jnp.ones((1, 5, 5, 3))
  ref = nn.Conv(4, (3, 3), padding="SAME").init(jax.random.key(1), x)
  new = layers.Conv(4, (3, 3)).init(jax.random.key(1), x)
  assert jax.tree.structure(ref) == jax.tree.structure(new)
  _close(ref, new, 0)


def test_max_pool_matches_reduce_window():
  x = jax.random.normal(jax.random.key(2), (2, 7, 6, 3))
  x = x.at[0, 0, 0].set(x[0, 0, 1]).at[1, 2:4, 2:4].set(0.0)  # ties: the first element wins
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  _close(layers.max_pool_2x2(x), ref(x), 0)
  g = lambda pool: jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(pool(x)))))(x)
  _close(g(layers.max_pool_2x2), g(ref), 1e-6)
  h = lambda pool: jax.jit(jax.hessian(lambda x: jnp.sum(jnp.sin(pool(x)) ** 2)))(x[:1, :4, :5, :2])
  _close(h(layers.max_pool_2x2), h(ref), 1e-6)


def _maml_loss(model, variables, sx, sy, qx, qy, lr=0.4):
  """Query loss after one inner SGD step; differentiate w.r.t. params (second order)."""
  def loss(p, x, y):
    out, _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=True,
                         mutable=["batch_stats"])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], 1))
  def outer(p):
    g = jax.grad(loss)(p, sx, sy)
    return loss(jax.tree.map(lambda w, d: w - lr * d, p, g), qx, qy)
  return outer


def test_conv4_maml_second_order_matches():
  """The default conv4 ('auto': im2col + reshape pool on CPU) against nn.Conv + nn.max_pool."""
  ks = jax.random.split(jax.random.key(3), 3)
  sx, qx = jax.random.uniform(ks[0], (5, 10, 10, 1)), jax.random.uniform(ks[1], (10, 10, 10, 1))
  sy, qy = jnp.arange(5), jnp.arange(10) % 5
  ref_m = models.make("conv4", num_outputs=5, filters=4, depth=2, conv_impl="xla", pool_impl="xla")
  new_m = models.make("conv4", num_outputs=5, filters=4, depth=2)
  v = ref_m.init(ks[2], sx, train=False)
  v_new = new_m.init(ks[2], sx, train=False)
  assert jax.tree.structure(v) == jax.tree.structure(v_new)
  _close(v, v_new, 0)  # same names, shapes and initial values
  _close(new_m.apply(v, qx, train=False), ref_m.apply(v, qx, train=False))
  ref = jax.jit(jax.value_and_grad(_maml_loss(ref_m, v, sx, sy, qx, qy)))(v["params"])
  new = jax.jit(jax.value_and_grad(_maml_loss(new_m, v, sx, sy, qx, qy)))(v["params"])
  _close(new, ref, 5e-4)


@pytest.mark.parametrize("batching", ["vmap", "scan"])
def test_vmapped_maml_gradient_matches_xla_ops(batching):
  """The jitted meta-gradient of the default conv4 over a meta-batch equals nn.Conv + nn.max_pool's.

  Regression test: with the pool written as reshape + max over the window axes, XLA CPU's
  algebraic simplifier miscompiled this gradient (Conv_0 kernel off by ~2% here, 5-25% on
  conv4-64), while every single-task check above passed.
  """
  x = jax.random.uniform(jax.random.key(0), (2, 12, 8, 8, 1))
  y = jnp.tile(jnp.arange(3), (2, 4))
  tasks = Tasks(x[:, :6], y[:, :6], x[:, 6:], y[:, 6:])
  learner = lambda **impl: MAML(
      models.make("conv4", num_outputs=3, filters=4, depth=1, **impl), optax.sgd(0.1),
      MAMLConfig(inner_steps=1, task_batching=batching), num_ways=3)
  lrn, ref = learner(), learner(conv_impl="xla", pool_impl="xla")
  state = lrn.init(jax.random.key(1), tasks)
  _close(jax.jit(lrn.meta_gradient)(state, tasks)[0], jax.jit(ref.meta_gradient)(state, tasks)[0],
         1e-5)


def test_unknown_impl_fails():
  with pytest.raises(ValueError, match="im2col"):
    model = models.make("conv4", num_outputs=5, conv_impl="fft")
    model.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))
