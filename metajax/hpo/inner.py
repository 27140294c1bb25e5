"""The inner training run and its per-layer, per-segment learning rates.

Hyperparameters are a plain dict pytree in log space (differentiable, vmappable):

  log_lr [L, K]   log learning rate of layer l in segment k of the run (segment of step t:
                  min(t * K // steps, K - 1))
  log_wd [L]      log decoupled weight decay of layer l (only when it is learned)

A layer is a top-level entry of the Linen parameter tree (`Dense_0`, `Conv_1`, a GRU's
`emb`, `wx`, `wh`, `b`). `scale_by_layer_rates` is the optax transform that scales each
leaf's update by exp(log_lr[layer, segment]); the inner optimizer is

  adam (eps_root > 0: finite second derivatives at zero gradients) or momentum sgd
  -> scale_by_layer_rates (hyperparameters passed as `hparams=` at each update).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax import optim
from metajax.hpo.spec import FamilySpec, InnerSpec
from metajax.hpo.tasks import Tasks


class LayerRatesState(NamedTuple):
  count: jax.Array  # inner steps taken since initialisation


def layer_names(params) -> tuple[str, ...]:
  """Top-level parameter groups, in the tree's order (the rows of log_lr)."""
  return tuple(params.keys())


def scale_by_layer_rates(layer_of, segments: int, total_steps: int
                         ) -> optax.GradientTransformationExtraArgs:
  """u_leaf -> -exp(log_lr[l, k]) * (u_leaf + exp(log_wd[l]) * param_leaf), l the leaf's
  layer (`layer_of`: a pytree of ints like the params), k the current segment.

  `update(updates, state, params, hparams=...)`; hparams as in the module docstring (no
  'log_wd': no decay).
  """
  def init(params):
    del params
    return LayerRatesState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, hparams, **unused):
    del unused
    seg = jnp.minimum(state.count * segments // total_steps, segments - 1)
    lr = jnp.exp(hparams["log_lr"][:, seg])
    wd = jnp.exp(hparams["log_wd"]) if "log_wd" in hparams else None

    def scale(u, p, l):
      d = u if wd is None else u + wd[l] * p
      return -lr[l] * d

    return jax.tree.map(scale, updates, params, layer_of), LayerRatesState(state.count + 1)

  return optax.GradientTransformationExtraArgs(init, update)


def direction(name: str) -> optax.GradientTransformation:
  if name == "adam":  # eps_root: d sqrt(nu) is finite where a gradient entry is exactly 0
    return optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, eps_root=1e-8)
  return optim.DIRECTIONS[name]()


def init_hparams(num_layers: int, inner: InnerSpec, log_lr: float | None = None) -> dict:
  """Every layer and segment at the default rate (or `log_lr`); decay at its initial value."""
  lr = math.log(inner.default_lr) if log_lr is None else log_lr
  hp = {"log_lr": jnp.full((num_layers, inner.segments), lr, jnp.float32)}
  if inner.learn_weight_decay:
    hp["log_wd"] = jnp.full((num_layers,), math.log(inner.init_weight_decay), jnp.float32)
  return hp


class State(NamedTuple):
  """One task's inner training state."""
  params: Any
  opt_state: Any


class Problem:
  """Pure functions of one family's inner run (the model is built with `num_outputs`
  logits; classes >= a task's n_classes are masked)."""

  def __init__(self, family: FamilySpec, inner: InnerSpec, num_outputs: int | None = None,
               input_shape: tuple | None = None):
    self.family, self.spec = family, inner
    self.model = family.make_model(num_outputs)
    self.input_shape = tuple(input_shape or family.input_shape)
    dtype = jnp.int32 if family.kind == "ids" else jnp.float32
    self.example = jax.ShapeDtypeStruct((1,) + self.input_shape, dtype)
    abstract = jax.eval_shape(self._init_params, jax.random.key(0))
    self.names = layer_names(abstract)
    ids = {n: i for i, n in enumerate(self.names)}
    self.layer_of = {n: jax.tree.map(lambda _: ids[n], abstract[n]) for n in self.names}
    self.tx = optax.chain(direction(inner.optimizer),
                          scale_by_layer_rates(self.layer_of, inner.segments, inner.steps))

  def _init_params(self, key):
    return self.model.init(key, jnp.zeros(self.example.shape, self.example.dtype),
                           train=False)["params"]

  def init(self, key) -> State:
    params = self._init_params(key)
    return State(params, self.tx.init(params))

  def logits(self, params, x, n_classes, key=None, train=False):
    rngs = {"dropout": key} if train and key is not None else None
    out = self.model.apply({"params": params}, x, train=train, rngs=rngs)
    return jnp.where(jnp.arange(out.shape[-1]) < n_classes, out, -1e9)

  def metrics(self, params, x, y, n, n_classes) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy, accuracy) over the first `n` rows of x [R, ...], y [R]."""
    logits = self.logits(params, x, n_classes)
    mask = (jnp.arange(y.shape[0]) < n).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    acc = (logits.argmax(-1) == y).astype(jnp.float32)
    denom = jnp.maximum(mask.sum(), 1.0)
    return (ce * mask).sum() / denom, (acc * mask).sum() / denom

  def train_step(self, hp, state: State, x, y, n, n_classes, key) -> State:
    """One inner step on a minibatch of the first `n` rows (the whole split if batch_size 0)."""
    k_rows, k_drop = jax.random.split(key)
    b = self.spec.batch_size
    if b:
      idx = jax.random.randint(k_rows, (b,), 0, jnp.maximum(n, 1))
      x, y, n = x[idx], y[idx], b

    def loss(params):
      logits = self.logits(params, x, n_classes, k_drop, train=True)
      mask = (jnp.arange(y.shape[0]) < n).astype(jnp.float32)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    grads = jax.grad(loss)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params, hparams=hp)
    return State(optax.apply_updates(state.params, updates), opt_state)

  def unroll(self, hp, state: State, task: Tasks, key, steps: int) -> State:
    """`steps` inner steps on the task's train split (lax.scan); key of step i: fold_in(key, i)."""
    def body(s, i):
      return self.train_step(hp, s, task.x_train, task.y_train, task.n_train, task.n_classes,
                             jax.random.fold_in(key, i)), None
    state, _ = jax.lax.scan(body, state, jnp.arange(steps))
    return state

  def val(self, state: State, task: Tasks) -> tuple[jax.Array, jax.Array]:
    return self.metrics(state.params, task.x_val, task.y_val, task.n_val, task.n_classes)

  def run(self, hp, task: Tasks, key, windows: int = 1
          ) -> tuple[State, jax.Array, jax.Array, jax.Array]:
    """A whole inner run from a fresh init, in `windows` equal windows: (state, final val
    loss, final val accuracy, mean val loss at the window ends = the meta-objective)."""
    k_init, k_data = jax.random.split(key)
    steps = self.spec.steps // windows

    def window(state, w):
      state = self.unroll(hp, state, task, jax.random.fold_in(k_data, w), steps)
      return state, self.val(state, task)[0]

    state, ends = jax.lax.scan(window, self.init(k_init), jnp.arange(windows))
    return (state, *self.val(state, task), ends.mean())


def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def as_numpy(hp) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in hp.items()}
