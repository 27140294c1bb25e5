"""The gradient-based hyperparameter meta-learner: one jitted meta-step over a task batch.

Every task slot carries its inner training state from meta-step to meta-step; a meta-step
advances it one window of `unroll` inner steps and scores the window by the validation loss
at its end (capped at `loss_cap`; non-finite counts as the cap). A slot whose window index is
0, or whose state went non-finite, restarts from a fresh initialisation. The meta-objective
of a whole run is the mean of its window-end validation losses; its gradient w.r.t. the log
hyperparameters is estimated by

  tbptt  backpropagation through the current window only (biased: no credit to earlier
         windows, the short-horizon bias),
  pes    persistent evolution strategies (Vicol et al. 2021): antithetic pairs
         theta +- eps, each with its own persistent inner state, accumulated perturbations
         xi += eps reset with the run; g = mean_pairs xi * (L+ - L-) / (2 sigma^2), unbiased
         for the whole run.

Tasks are vmapped; `meta_step(state, batch, key) -> (state, metrics)` is pure and is jitted
with the task axis (the batch and the per-slot states) sharded over the mesh.
"""

from __future__ import annotations

from typing import Any, Callable

import einops
import jax
import jax.numpy as jnp
import optax
from flax import struct

from metajax.hpo.inner import Problem, State, all_finite, init_hparams
from metajax.hpo.spec import FamilySpec, InnerSpec, MetaSpec
from metajax.hpo.tasks import Tasks


@struct.dataclass
class MetaState:
  """step; hparams (replicated); opt_state (meta-optimizer); inner: per-slot inner states
  [M] (tbptt) or [M, P, 2] (pes: P antithetic pairs); xi: PES accumulated perturbations
  [M, P, ...] ({} for tbptt)."""
  step: jax.Array
  hparams: dict
  opt_state: Any
  inner: State
  xi: dict


# ---------------------------------------------------------------- estimators (generic)

def tbptt_gradient(unroll: Callable, theta, inner, key):
  """(grad, new inner, loss) of `loss = unroll(theta, inner, key)[1]` through this window."""
  (loss, new), g = jax.value_and_grad(lambda t: unroll(t, inner, key)[::-1], has_aux=True)(theta)
  return g, new, loss


def pes_gradient(unroll: Callable, theta, inner, xi, key, sigma: float):
  """One PES estimate over P antithetic pairs (leading axis P of `xi`, [P, 2] of `inner`).

  unroll(theta, inner, key) -> (new inner, loss). Both particles of a pair see the same
  key (common random numbers). Returns (grad, new inner, new xi, mean loss).
  """
  pairs = jax.tree.leaves(xi)[0].shape[0]
  k_eps, k_run = jax.random.split(key)
  leaves, tdef = jax.tree.flatten(theta)
  ks = jax.random.split(k_eps, len(leaves))
  eps = tdef.unflatten([sigma * jax.random.normal(k, (pairs,) + x.shape, x.dtype)
                        for k, x in zip(ks, leaves)])
  xi = jax.tree.map(jnp.add, xi, eps)
  thetas = jax.tree.map(lambda t, e: jnp.stack([t + e, t - e], 1), theta, eps)  # [P, 2, ...]
  run = jax.vmap(jax.vmap(unroll, (0, 0, None)), (0, 0, None))
  new, loss = run(thetas, inner, k_run)                                          # loss [P, 2]
  diff = loss[:, 0] - loss[:, 1]
  g = jax.tree.map(lambda x: jnp.tensordot(diff, x, 1) / (pairs * 2 * sigma ** 2), xi)
  return g, new, xi, loss.mean()


def _finite_or_zero(tree):
  return jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), tree)


# ---------------------------------------------------------------- the learner

class MetaLearner:
  """Meta-learns `init_hparams` of one family's `Problem` with one estimator.

  meta_tx: the meta-optimizer (optax; e.g. `metajax.optim.make_optimizer(config.optimizer)`).
  """

  def __init__(self, family: FamilySpec, inner: InnerSpec, meta: MetaSpec,
               meta_tx: optax.GradientTransformation):
    self.problem = Problem(family, inner)
    self.family, self.inner, self.meta = family, inner, meta
    self.meta_tx = optax.chain(optax.zero_nans(), meta_tx)

  # ---- state
  def init(self, key) -> MetaState:
    hp = init_hparams(len(self.problem.names), self.inner)
    m = self.meta
    inner = jax.vmap(self.problem.init)(jax.random.split(key, m.tasks))
    if m.estimator == "pes":  # every particle of a task starts from the task's init
      inner = jax.tree.map(lambda x: einops.repeat(x, "m ... -> m p s ...", p=m.pes_pairs, s=2),
                           inner)
    xi = {} if m.estimator == "tbptt" else jax.tree.map(
        lambda x: jnp.zeros((m.tasks, m.pes_pairs) + x.shape, x.dtype), hp)
    return MetaState(jnp.zeros([], jnp.int32), hp, self.meta_tx.init(hp), inner, xi)

  # ---- one window of one task (particle)
  def _window(self, task: Tasks, reset, k_init):
    fresh = self.problem.init(k_init)

    def unroll(hp, state: State, key):
      state = jax.tree.map(lambda a, b: jnp.where(reset, a, b), fresh, state)
      state = self.problem.unroll(hp, state, task, key, self.meta.unroll)
      loss, _ = self.problem.val(state, task)
      cap = self.meta.loss_cap
      return state, jnp.where(jnp.isfinite(loss), jnp.minimum(loss, cap), cap)
    return unroll

  def _task_gradient(self, hp, inner, xi, task: Tasks, window, key):
    k_init, k_run = jax.random.split(key)
    reset = (window == 0) | ~all_finite(inner.params)
    unroll = self._window(task, reset, k_init)
    if self.meta.estimator == "tbptt":
      g, new, loss = tbptt_gradient(unroll, hp, inner, k_run)
      return _finite_or_zero(g), new, xi, loss, reset
    xi = jax.tree.map(lambda x: jnp.where(reset, 0.0, x), xi)
    g, new, xi, loss = pes_gradient(unroll, hp, inner, xi, k_run, self.meta.pes_sigma)
    return _finite_or_zero(g), new, xi, loss, reset

  # ---- the meta-step
  def meta_step(self, state: MetaState, batch: tuple[Tasks, jax.Array], key
                ) -> tuple[MetaState, dict[str, jax.Array]]:
    """batch: (tasks [M, ...], window [M]); key: this step's key (fold_in(key, step))."""
    tasks, window = batch
    keys = jax.random.split(key, window.shape[0])
    xi = state.xi if self.meta.estimator == "pes" else jnp.zeros(window.shape[0])
    g, inner, xi, loss, reset = jax.vmap(self._task_gradient, (None, 0, 0, 0, 0, 0))(
        state.hparams, state.inner, xi, tasks, window, keys)
    g = jax.tree.map(lambda x: x.mean(0), g)
    updates, opt_state = self.meta_tx.update(g, state.opt_state, state.hparams)
    hp = self.clamp(optax.apply_updates(state.hparams, updates))
    metrics = {"meta_loss": loss.mean(), "grad_norm": optax.tree.norm(g),
               "resets": reset.astype(jnp.float32).mean(),
               "mean_log_lr": hp["log_lr"].mean()}
    xi = xi if self.meta.estimator == "pes" else {}
    return MetaState(state.step + 1, hp, opt_state, inner, xi), metrics

  def clamp(self, hp):
    lo, hi = self.meta.log_lr_range
    out = dict(hp, log_lr=jnp.clip(hp["log_lr"], lo, hi))
    if "log_wd" in hp:
      out["log_wd"] = jnp.clip(hp["log_wd"], *self.meta.log_wd_range)
    return out

  # ---- meta-validation: whole inner runs from scratch with the current hyperparameters
  def evaluate(self, hp, tasks: Tasks, key) -> dict[str, jax.Array]:
    return evaluate(self.problem, self.inner.steps // self.meta.unroll, hp, tasks, key)


def evaluate(problem: Problem, windows: int, hp, tasks: Tasks, key) -> dict[str, jax.Array]:
  """Full inner runs from scratch on each task of `tasks` [M, ...]: the meta-objective
  (validation loss at the ends of `windows` windows, averaged, uncapped) and the final
  validation loss / accuracy, means over tasks."""
  keys = jax.random.split(key, tasks.n_train.shape[0])
  _, loss, acc, objective = jax.vmap(problem.run, (None, 0, 0, None))(hp, tasks, keys, windows)
  return {"objective": objective.mean(), "val_loss": loss.mean(), "val_accuracy": acc.mean()}


def shardings(state: MetaState, mesh) -> MetaState:
  """A sharding prefix of `state`: per-slot arrays split over `data`, the rest replicated."""
  from metajax import parallel
  repl, shard = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return MetaState(repl, jax.tree.map(lambda _: repl, state.hparams),
                   jax.tree.map(lambda _: repl, state.opt_state),
                   jax.tree.map(lambda _: shard, state.inner),
                   jax.tree.map(lambda _: shard, state.xi))
